"""autoops: a typed library for automated operations.

Small composable clients for the database, the cache, deploys and backups, with retry policies
that retry only what is safe to retry. See README.md and docs/ for a tour.
"""

from ._config import CacheUrl, DbUrl, Secret, Settings, load_settings
from ._errors import (
    AuthenticationError,
    AutoOpsError,
    CodecError,
    ConfigError,
    ConnectError,
    IntegrityError,
    LockHeldError,
    OutcomeUnknownError,
    QueryError,
    TransactionConflictError,
)
from ._progress import Progress
from ._retry import (
    RetryEvent,
    RetryPolicy,
    add_retry_hook,
    remove_retry_hook,
    retry_totals,
    set_testing,
)
from ._ssh import HostKeyError, RemoteCommandError, SshHost, SshOptions
from .backup import (
    Backup,
    Backuper,
    BackupError,
    BackupVerifyError,
    LocalStorage,
    RestoreRefusedError,
    RetentionDecision,
    RetentionPlan,
    RetentionPolicy,
    SftpStorage,
    Storage,
    TableStats,
    Upload,
)
from .cache import CacheClient, Codec, JsonCodec, MemoryCache, RawCodec, RedisCache
from .db import DbClient, MySQLClient, Row, SQLiteClient, Transaction, quote_identifier

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "AutoOpsError",
    "Backup",
    "BackupError",
    "BackupVerifyError",
    "Backuper",
    "CacheClient",
    "CacheUrl",
    "Codec",
    "CodecError",
    "ConfigError",
    "ConnectError",
    "DbClient",
    "DbUrl",
    "HostKeyError",
    "IntegrityError",
    "JsonCodec",
    "LocalStorage",
    "LockHeldError",
    "MemoryCache",
    "MySQLClient",
    "OutcomeUnknownError",
    "Progress",
    "QueryError",
    "RawCodec",
    "RedisCache",
    "RemoteCommandError",
    "RestoreRefusedError",
    "RetentionDecision",
    "RetentionPlan",
    "RetentionPolicy",
    "RetryEvent",
    "RetryPolicy",
    "Row",
    "SQLiteClient",
    "Secret",
    "Settings",
    "SftpStorage",
    "SshHost",
    "SshOptions",
    "Storage",
    "TableStats",
    "Transaction",
    "TransactionConflictError",
    "Upload",
    "add_retry_hook",
    "load_settings",
    "quote_identifier",
    "remove_retry_hook",
    "retry_totals",
    "set_testing",
]
