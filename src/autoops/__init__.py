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
from ._ssh import HostKeyError, RemoteCommandError, RemoteFileError, SshHost, SshOptions
from .cache import CacheClient, Codec, JsonCodec, MemoryCache, RawCodec, RedisCache
from .db import DbClient, MySQLClient, Row, SQLiteClient, Transaction, quote_identifier
from .deploy import (
    ConfigPushError,
    ConfigPushResult,
    Deployer,
    DeployError,
    DeployOutcome,
    DeployPlan,
    DeployResult,
    HealthCheck,
    Hook,
    HostConfigResult,
    HostDeployPlan,
    HostDeployResult,
    new_release_id,
)

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "AutoOpsError",
    "CacheClient",
    "CacheUrl",
    "Codec",
    "CodecError",
    "ConfigError",
    "ConfigPushError",
    "ConfigPushResult",
    "ConnectError",
    "DbClient",
    "DbUrl",
    "DeployError",
    "DeployOutcome",
    "DeployPlan",
    "DeployResult",
    "Deployer",
    "HealthCheck",
    "Hook",
    "HostConfigResult",
    "HostDeployPlan",
    "HostDeployResult",
    "HostKeyError",
    "IntegrityError",
    "JsonCodec",
    "LockHeldError",
    "MemoryCache",
    "MySQLClient",
    "OutcomeUnknownError",
    "Progress",
    "QueryError",
    "RawCodec",
    "RedisCache",
    "RemoteCommandError",
    "RemoteFileError",
    "RetryEvent",
    "RetryPolicy",
    "Row",
    "SQLiteClient",
    "Secret",
    "Settings",
    "SshHost",
    "SshOptions",
    "Transaction",
    "TransactionConflictError",
    "add_retry_hook",
    "load_settings",
    "new_release_id",
    "quote_identifier",
    "remove_retry_hook",
    "retry_totals",
    "set_testing",
]
