"""Backups of MySQL/MariaDB, Redis and SQLite: streamed, checksummed, verified, pruned; binary
logs archived for point-in-time recovery."""

from ._backuper import Backuper
from ._binlogs import ArchivedBinlog
from ._encryption import Encryption
from ._errors import BackupError, BackupVerifyError, EncryptionKeyError, RestoreRefusedError
from ._model import Backup, DataFile, TableStats
from ._pitr import BinlogGapError, BinlogPosition
from ._retention import RetentionDecision, RetentionPlan, RetentionPolicy
from ._s3 import S3Storage
from ._storage import LocalStorage, SftpStorage, Storage, Upload

__all__ = [
    "ArchivedBinlog",
    "Backup",
    "BackupError",
    "BackupVerifyError",
    "Backuper",
    "BinlogGapError",
    "BinlogPosition",
    "DataFile",
    "Encryption",
    "EncryptionKeyError",
    "LocalStorage",
    "RestoreRefusedError",
    "RetentionDecision",
    "RetentionPlan",
    "RetentionPolicy",
    "S3Storage",
    "SftpStorage",
    "Storage",
    "TableStats",
    "Upload",
]
