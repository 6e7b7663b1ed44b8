"""MySQL/MariaDB health: latency, connections, slow queries and aborted connects, replication."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from .._config import DbUrl
from .._connection import DbConnectionSettings
from .._errors import AuthenticationError, ConfigError
from .._retry import RetryPolicy
from ..db import DbClient, Row
from ..db._replicas import read_replica_status
from ._check import Check, CheckFindings, DefaultThresholds, ThresholdSpec
from ._status import CheckStatus

__all__ = ["MySQLCheck"]

_STATUS_VARIABLES: Final = ("Threads_connected", "Slow_queries", "Aborted_connects", "Uptime")


class MySQLCheck(Check):
    """Connect and round-trip latency, ``Threads_connected`` as a percentage of
    ``max_connections``, ``Slow_queries`` and ``Aborted_connects`` per second since the previous
    run, and on a replica the IO/SQL threads and ``Seconds_Behind_Master``.

    ``url`` is a ``mysql://`` URL (TLS options in its query) or a client's
    :attr:`~autoops.DbClient.connection_settings`. The account needs no privilege beyond logging
    in for the basics; the replica part needs
    ``REPLICATION CLIENT`` (MySQL) or ``SLAVE MONITOR`` (MariaDB >= 10.5).
    """

    kind = "mysql"
    THRESHOLDS: ClassVar[DefaultThresholds] = {
        "connect_time": ("1", "5"),
        "latency": ("0.5", "2"),
        "connections": ("80", "90"),
        "slow_queries_rate": (None, None),
        "aborted_connects_rate": (None, None),
        "replica_lag": ("60", "300"),
    }

    def __init__(
        self,
        name: str,
        url: str | DbUrl | DbConnectionSettings,
        *,
        timeout: float = 10.0,
        thresholds: ThresholdSpec | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout, thresholds=thresholds)
        if isinstance(url, DbConnectionSettings):
            settings = url
        else:
            # Building a client opens no connection; it turns the URL's TLS options into settings.
            settings = DbClient.from_url(url).connection_settings
        if settings.dialect != "mysql":
            raise ConfigError(f"check {name}: a mysql check needs a mysql:// URL, got {settings}")
        self.settings = settings

    @property
    def target(self) -> str:
        return self.settings.location

    def _client(self) -> DbClient:
        settings = dataclasses.replace(
            self.settings,
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            write_timeout=self.timeout,
        )
        return DbClient.from_connection_settings(settings, retry=RetryPolicy.none())

    def measure(self, findings: CheckFindings) -> None:
        client = self._client()
        try:
            started = time.perf_counter()
            client.ping()
            connect_time = time.perf_counter() - started
            latency = client.ping()
            findings.metric(
                "connect_time",
                connect_time,
                "s",
                text=f"connected in {connect_time * 1000:.1f} ms",
                minimum=0,
            )
            findings.metric(
                "latency", latency, "s", text=f"round trip {latency * 1000:.2f} ms", minimum=0
            )
            self._connections_and_counters(client, findings)
            self._replication(client, findings)
        finally:
            client.close()

    def _connections_and_counters(self, client: DbClient, findings: CheckFindings) -> None:
        placeholders = ", ".join(["%s"] * len(_STATUS_VARIABLES))
        rows = client.query(
            f"SHOW GLOBAL STATUS WHERE Variable_name IN ({placeholders})",
            list(_STATUS_VARIABLES),
        )
        status = {str(row["Variable_name"]): float(row["Value"]) for row in rows}
        max_row = client.query_one("SELECT @@GLOBAL.max_connections AS max_connections")
        max_connections = float(max_row["max_connections"]) if max_row else 0.0
        threads = status.get("Threads_connected", 0.0)
        if max_connections > 0:
            percent = 100.0 * threads / max_connections
            findings.metric(
                "connections",
                percent,
                "%",
                text=f"{threads:.0f} of {max_connections:.0f} connections ({percent:.0f}%)",
                minimum=0,
                maximum=100,
                series="connections_used",
            )
        rates_pending = False
        for variable, label in (
            ("Slow_queries", "slow_queries"),
            ("Aborted_connects", "aborted_connects"),
        ):
            value = status.get(variable, 0.0)
            findings.metric(label, value, "c", text=None)
            rate = findings.counter_rate(label, value)
            if rate is None:
                rates_pending = True
            else:
                findings.metric(
                    f"{label}_rate",
                    rate,
                    text=f"{rate:.2f} {label.replace('_', ' ')}/s",
                    minimum=0,
                    series=f"{label}_per_second",
                )
        if rates_pending:
            findings.note("rates from the next run on")

    def _replication(self, client: DbClient, findings: CheckFindings) -> None:
        try:
            row = _replica_status(client)
        except AuthenticationError:
            findings.problem(
                CheckStatus.UNKNOWN,
                "replication not checked: the account needs REPLICATION CLIENT (MySQL) or "
                "SLAVE MONITOR (MariaDB >= 10.5)",
            )
            return
        if row is None:
            findings.note("not a replica")
            return
        io_running = str(row.get("Replica_IO_Running", row.get("Slave_IO_Running", "")))
        sql_running = str(row.get("Replica_SQL_Running", row.get("Slave_SQL_Running", "")))
        evaluate_replica(findings, io_running, sql_running, _lag(row), row)


def _replica_status(client: DbClient) -> Row | None:
    """The first replication channel's status, or None on a server that is no replica."""
    rows = read_replica_status(client)
    return rows[0] if rows else None


def _lag(row: Mapping[str, Any]) -> float | None:
    value = row.get("Seconds_Behind_Source", row.get("Seconds_Behind_Master"))
    return float(value) if value is not None else None


def evaluate_replica(
    findings: CheckFindings,
    io_running: str,
    sql_running: str,
    lag: float | None,
    row: Mapping[str, Any],
) -> None:
    """Judge a replica's threads and lag (a NULL lag means replication is not running)."""
    if io_running != "Yes":
        error = row.get("Last_IO_Error") or ""
        detail = f": {error}" if error else ""
        findings.problem(
            CheckStatus.CRITICAL, f"replica IO thread is {io_running or 'off'}{detail}"
        )
    if sql_running != "Yes":
        error = row.get("Last_SQL_Error") or ""
        detail = f": {error}" if error else ""
        findings.problem(
            CheckStatus.CRITICAL, f"replica SQL thread is {sql_running or 'off'}{detail}"
        )
    if lag is None:
        if io_running == "Yes" and sql_running == "Yes":
            findings.problem(
                CheckStatus.CRITICAL, "replica lag is unknown (Seconds_Behind_Master NULL)"
            )
        return
    findings.metric(
        "replica_lag",
        lag,
        "s",
        text=f"replica {lag:.0f} s behind",
        minimum=0,
        series="replica_lag",
    )
