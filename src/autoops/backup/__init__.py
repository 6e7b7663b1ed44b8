"""Backups of MySQL/MariaDB, Redis and SQLite: streamed, checksummed, verified, pruned."""

from ._backuper import Backuper
from ._errors import BackupError, BackupVerifyError, RestoreRefusedError
from ._model import Backup, TableStats
from ._retention import RetentionDecision, RetentionPlan, RetentionPolicy
from ._storage import LocalStorage, SftpStorage, Storage, Upload

__all__ = [
    "Backup",
    "BackupError",
    "BackupVerifyError",
    "Backuper",
    "LocalStorage",
    "RestoreRefusedError",
    "RetentionDecision",
    "RetentionPlan",
    "RetentionPolicy",
    "SftpStorage",
    "Storage",
    "TableStats",
    "Upload",
]
