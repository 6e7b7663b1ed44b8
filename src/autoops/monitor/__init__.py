"""Monitor: health checks for MySQL, Redis, hosts, HTTP, backups and syncs, speaking Nagios and
Prometheus. See docs/monitor.md."""

from ._check import Check, CheckFindings
from ._freshness import (
    BackupCatalogue,
    BackupFreshnessCheck,
    BackupRecord,
    SyncLagCheck,
    SyncProgress,
)
from ._host import HostCheck
from ._http import HttpCheck, TcpCheck
from ._monitor import Monitor, Remediation
from ._mysql import MySQLCheck
from ._notify import (
    AlertPolicy,
    EmailNotifier,
    NotificationError,
    Notifier,
    StatusChange,
    WebhookNotifier,
)
from ._output import (
    CheckCollector,
    prometheus_registry,
    results_as_json,
    results_as_nagios,
    write_prometheus,
)
from ._range import ThresholdRange, Thresholds
from ._redis import RedisCheck
from ._result import CheckMetric, CheckResult
from ._runner import run_checks
from ._settings import monitor_from_settings
from ._state import StateFile
from ._status import CheckStatus

__all__ = [
    "AlertPolicy",
    "BackupCatalogue",
    "BackupFreshnessCheck",
    "BackupRecord",
    "Check",
    "CheckCollector",
    "CheckFindings",
    "CheckMetric",
    "CheckResult",
    "CheckStatus",
    "EmailNotifier",
    "HostCheck",
    "HttpCheck",
    "Monitor",
    "MySQLCheck",
    "NotificationError",
    "Notifier",
    "RedisCheck",
    "Remediation",
    "StateFile",
    "StatusChange",
    "SyncLagCheck",
    "SyncProgress",
    "TcpCheck",
    "ThresholdRange",
    "Thresholds",
    "WebhookNotifier",
    "monitor_from_settings",
    "prometheus_registry",
    "results_as_json",
    "results_as_nagios",
    "run_checks",
    "write_prometheus",
]
