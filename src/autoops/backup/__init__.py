"""Backups of MySQL/MariaDB, Redis and SQLite: streamed, checksummed, verified, pruned."""

from ._backuper import Backuper
from ._errors import BackupError, BackupVerifyError, RestoreRefusedError
from ._model import Backup, TableStats
from ._storage import LocalStorage, SftpStorage, Storage, Upload

__all__ = [
    "Backup",
    "BackupError",
    "BackupVerifyError",
    "Backuper",
    "LocalStorage",
    "RestoreRefusedError",
    "SftpStorage",
    "Storage",
    "TableStats",
    "Upload",
]
