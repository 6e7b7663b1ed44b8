"""Building a :class:`Monitor` from the ``[monitor]`` table of the settings file."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from .._config import Settings, renamed_setting
from .._errors import ConfigError
from .._retry import RetryPolicy
from .._ssh import SshOptions
from ..cache import CacheClient
from ._check import Check
from ._freshness import BackupCatalogue, BackupFreshnessCheck, BackupRecord, SyncLagCheck
from ._host import HostCheck
from ._http import HttpCheck, TcpCheck
from ._monitor import Monitor, Remediation
from ._mysql import MySQLCheck
from ._notify import AlertPolicy, EmailNotifier, Notifier, WebhookNotifier
from ._redis import RedisCheck
from ._state import StateFile

__all__ = ["monitor_from_settings"]

_COMMON: Final = {"type", "timeout", "warning", "critical", "remediate"}
_TOP: Final = {
    "deadline",
    "max_parallel",
    "state_file",
    "textfile",
    "key_filename",
    "ssh_key",
    "known_hosts",
    "checks",
    "notify",
    "flap_window",
}


def _take(table: Mapping[str, Any], where: str, allowed: set[str]) -> dict[str, Any]:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
        )
    return dict(table)


def _thresholds(table: Mapping[str, Any], where: str) -> dict[str, tuple[Any, Any]]:
    warning = table.get("warning", {})
    critical = table.get("critical", {})
    for label, value in (("warning", warning), ("critical", critical)):
        if not isinstance(value, Mapping):
            raise ConfigError(f'{where}: {label} must be a table such as {{ latency = "0.5" }}')
    return {
        metric: (warning.get(metric), critical.get(metric))
        for metric in sorted(set(warning) | set(critical))
    }


def _ssh(table: Mapping[str, Any], top: Mapping[str, Any], where: str) -> SshOptions:
    key = renamed_setting(table, "ssh_key", "key_filename", where)
    return SshOptions(
        key_filename=key or renamed_setting(top, "ssh_key", "key_filename", "[monitor]"),
        known_hosts=table.get("known_hosts", top.get("known_hosts")),
    )


def _build_check(name: str, table: Mapping[str, Any], top: Mapping[str, Any]) -> Check:
    where = f"[monitor.checks.{name}]"
    kind = table.get("type")
    common: dict[str, Any] = {"thresholds": _thresholds(table, where)}
    if "timeout" in table:
        common["timeout"] = _positive(table, "timeout", where, 10.0)
    builders: dict[str, tuple[set[str], Callable[[], Check]]] = {
        "mysql": ({"url"}, lambda: MySQLCheck(name, _required(table, "url", where), **common)),
        "redis": ({"url"}, lambda: RedisCheck(name, _required(table, "url", where), **common)),
        "http": (
            {"url", "expect_status", "contains", "verify", "ca_file"},
            lambda: HttpCheck(
                name,
                _required(table, "url", where),
                expect_status=_list_of(table, "expect_status", where, int),
                contains=table.get("contains"),
                verify=table.get("verify", True),
                ca_file=table.get("ca_file"),
                **common,
            ),
        ),
        "tcp": (
            {"host", "port"},
            lambda: TcpCheck(
                name, _required(table, "host", where), _required(table, "port", where), **common
            ),
        ),
        "host": (
            {"host", "mounts", "services", "systemctl", "key_filename", "ssh_key", "known_hosts"},
            lambda: HostCheck(
                name,
                _required(table, "host", where),
                ssh=_ssh(table, top, where),
                mounts=_list_of(table, "mounts", where),
                services=_list_of(table, "services", where),
                systemctl=table.get("systemctl", "systemctl"),
                **common,
            ),
        ),
        "backup": (
            # S3Storage's settings keys, spelled here so the backup package loads only when used
            {"storage", "sources", "require_verified", "endpoint_url", "region", "profile"}
            | {"access_key_id", "secret_access_key"},
            lambda: _backup_check(name, table, common),
        ),
        "sync": ({"url", "sync", "namespace"}, lambda: _sync_check(name, table, common)),
    }
    if kind not in builders:
        raise ConfigError(
            f"{where}: type must be one of {', '.join(sorted(builders))}, got {kind!r}"
        )
    allowed, build = builders[kind]
    _take(table, where, allowed | _COMMON)
    try:
        return build()
    except TypeError as exc:
        raise ConfigError(f"{where}: a value has the wrong type ({exc})") from None


def _list_of(
    table: Mapping[str, Any], key: str, where: str, kind: type[str] | type[int] = str
) -> list[Any]:
    """``table[key]`` as a list whose items are all ``kind`` (a bare string is a mistake that
    would otherwise be read one character at a time)."""
    value = table.get(key, [])
    if not isinstance(value, list) or not all(
        isinstance(item, kind) and not isinstance(item, bool) for item in value
    ):
        example = '["a", "b"]' if kind is str else "[200, 301]"
        raise ConfigError(f"{where}: {key} must be a list such as {example}")
    return value


def _positive(
    table: Mapping[str, Any], key: str, where: str, default: float, *, whole: bool = False
) -> Any:
    """``table[key]`` as a finite number above zero (a whole one if ``whole``), else ``default``:
    ``nan``, ``inf``, a string or a bool would otherwise surface deep inside a run."""
    value = table.get(key, default)
    wanted = "a whole number" if whole else "a number of seconds"
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        raise ConfigError(f"{where}: {key} must be {wanted} above 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}: {key} must be {wanted} above 0, got {value!r}")
    return value


def _required(table: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: {key} is required")
    return table[key]


class _ExistingCatalogue:
    """The backups in a local storage directory that must already exist: a check only reads,
    and a mistyped path created empty would read as "no backups at all"."""

    def __init__(self, path: str, where: str) -> None:
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{where}: storage must be the backup directory's path")
        self.location = os.path.abspath(os.path.expanduser(path))
        self._where = where

    def list(self, source: str | None = None) -> Sequence[BackupRecord]:
        # The monitor watches backups through BackupCatalogue; the engine loads only when a
        # backup check runs.
        from ..backup import Backuper, LocalStorage  # noqa: PLC0415

        if not os.path.isdir(self.location):
            raise ConfigError(
                f"the backup catalogue {self.location} does not exist (storage of {self._where}); "
                "check the path, or whether its disk is mounted"
            )
        return Backuper(LocalStorage(self.location)).list(source)


def _backup_check(name: str, table: Mapping[str, Any], common: dict[str, Any]) -> Check:
    # The backup engine loads only when a backup check is configured.
    from ..backup import Backuper, S3Storage  # noqa: PLC0415

    where = f"[monitor.checks.{name}]"
    location = _required(table, "storage", where)
    catalogue: BackupCatalogue = (
        Backuper(S3Storage.from_settings(location, table))
        if isinstance(location, str) and location.startswith("s3://")
        else _ExistingCatalogue(location, where)
    )
    return BackupFreshnessCheck(
        name,
        catalogue,
        sources=_list_of(table, "sources", where),
        require_verified=table.get("require_verified", True),
        **common,
    )


def _sync_check(name: str, table: Mapping[str, Any], common: dict[str, Any]) -> Check:
    # The sync package loads only when a sync check is configured.
    from ..sync import SyncStatus, read_sync_status  # noqa: PLC0415

    where = f"[monitor.checks.{name}]"
    url = _required(table, "url", where)
    sync_name = _required(table, "sync", where)
    namespace = table.get("namespace")
    timeout = float(common.get("timeout", 10.0))
    CacheClient.from_url(url, namespace).close()  # validates the URL now, not at the first run

    def read_status() -> SyncStatus:
        cache = CacheClient.from_url(
            url,
            namespace,
            retry=RetryPolicy.none(),
            socket_timeout=timeout,
            connect_timeout=timeout,
        )
        try:
            return read_sync_status(cache, sync_name)
        finally:
            cache.close()

    return SyncLagCheck(name, read_status, **common)


def _notifier(index: int, table: Mapping[str, Any]) -> Notifier:
    where = f"[[monitor.notify]] number {index + 1}"
    kind = table.get("type")
    if kind == "webhook":
        _take(table, where, {"type", "url", "headers", "timeout"})
        return WebhookNotifier(
            _required(table, "url", where),
            headers=table.get("headers"),
            timeout=table.get("timeout", 10.0),
        )
    if kind == "email":
        _take(
            table,
            where,
            {"type", "host", "port", "sender", "to", "starttls", "username", "password", "timeout"},
        )
        return EmailNotifier(
            _required(table, "host", where),
            sender=_required(table, "sender", where),
            recipients=_list_of(table, "to", where),
            port=table.get("port", 25),
            starttls=table.get("starttls", False),
            username=table.get("username"),
            password=table.get("password"),
            timeout=table.get("timeout", 10.0),
        )
    raise ConfigError(f"{where}: type must be webhook or email, got {kind!r}")


def monitor_from_settings(settings: Settings) -> Monitor:
    """The :class:`Monitor` described by ``[monitor]``: checks under ``[monitor.checks.NAME]``,
    notifiers in ``[[monitor.notify]]``, a check's remediation in
    ``[monitor.checks.NAME.remediate]``."""
    top = _take(settings.section("monitor"), "[monitor]", _TOP)
    checks_table = top.get("checks", {})
    if not isinstance(checks_table, Mapping) or not checks_table:
        raise ConfigError(
            "no checks configured: add [monitor.checks.NAME] tables with a type "
            "(mysql, redis, host, http, tcp, backup, sync) to the settings file"
        )
    checks: list[Check] = []
    remediations: dict[str, Remediation] = {}
    for name, table in checks_table.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"[monitor.checks.{name}] must be a table")
        checks.append(_build_check(name, table, top))
        if "remediate" in table:
            where = f"[monitor.checks.{name}.remediate]"
            fix = _take(
                table["remediate"],
                where,
                {
                    "host",
                    "command",
                    "min_interval",
                    "timeout",
                    "key_filename",
                    "ssh_key",
                    "known_hosts",
                },
            )
            remediations[name] = Remediation(
                host=_required(fix, "host", where),
                command=_required(fix, "command", where),
                ssh=_ssh(fix, top, where),
                min_interval=_positive(fix, "min_interval", where, 900.0),
                timeout=_positive(fix, "timeout", where, 60.0),
            )
    notify = top.get("notify", [])
    if not isinstance(notify, list):
        raise ConfigError("[[monitor.notify]] must be an array of tables")
    state_file = top.get("state_file")
    return Monitor(
        checks,
        state_file=StateFile(state_file) if state_file else None,
        notifiers=[_notifier(index, table) for index, table in enumerate(notify)],
        remediations=remediations,
        policy=AlertPolicy(window=_positive(top, "flap_window", "[monitor]", 10, whole=True)),
        deadline=_positive(top, "deadline", "[monitor]", 60.0),
        max_parallel=(
            _positive(top, "max_parallel", "[monitor]", 1, whole=True)
            if "max_parallel" in top
            else None
        ),
    )
