"""Read replicas of a MySQL/MariaDB primary: which one may serve a read now, and which may not.

A replica serves a read the caller marked ``replica_ok`` only while its lag (``Seconds_Behind_
Master``) is at most the bound. The lag is read on a probe connection whose every timeout is the
connect timeout, so a replica that accepts TCP and then says nothing costs one connect timeout,
and the reading is kept for a second, so reads do not each pay a status query. A replica that
cannot be reached (or whose status cannot be read) is marked down for ``retry_after`` seconds;
a probe holds the replica's lock, so threads arriving meanwhile wait for its answer instead of
paying a timeout each.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from .._config import DbUrl
from .._connection import DbConnectionSettings, TlsSettings
from .._errors import AuthenticationError, AutoOpsError, ConfigError, ConnectError, QueryError
from .._retry import RetryPolicy
from ._client import DbClient, Row

__all__ = [
    "REPLICA_OPTIONS",
    "ReplicaSet",
    "read_replica_status",
    "replica_lag",
    "tls_from_options",
]

log: Final = logging.getLogger("autoops.db")

# The keyword options (and [db] keys) of a client's replicas: not URL query options.
REPLICA_OPTIONS: Final = ("replicas", "max_replica_lag", "replica_retry_after")
# How long a lag reading is trusted: reads within it do not ask the replica again.
LAG_READING_TTL: Final = 1.0
# How soon a reading too old for a read that needs recent writes is taken again.
_REPROBE_AFTER: Final = 0.2


def tls_from_options(options: dict[str, Any]) -> TlsSettings | None:
    """The TLS settings the ``ssl_*`` URL options describe (removed from ``options``), or None
    when they name no file. pymysql's rule: a CA file means the server's certificate is
    verified."""
    ca, cert, key = (options.pop(name, None) for name in ("ssl_ca", "ssl_cert", "ssl_key"))
    verify_identity = bool(options.pop("ssl_verify_identity", False))
    if not (ca or cert or key):
        return None
    return TlsSettings(
        ca_file=ca,
        cert_file=cert,
        key_file=key,
        verify="required" if ca else "none",
        check_hostname=verify_identity,
    )


def replica_settings(primary: DbConnectionSettings, spec: object) -> DbConnectionSettings:
    """The connection settings of one replica. A URL names the server; what it leaves out (user
    and password, database, timeouts, TLS) is the primary's. Settings or a client are used as
    they are."""
    if isinstance(spec, DbClient):
        spec = spec.connection_settings
    if isinstance(spec, DbConnectionSettings):
        if spec.dialect != "mysql":
            raise ConfigError(f"replica {spec.redacted()} is not a MySQL/MariaDB server")
        return spec
    if isinstance(spec, str):
        spec = DbUrl.parse(spec)
    if not isinstance(spec, DbUrl):
        raise ConfigError(
            "each replica is a mysql:// URL, a DbConnectionSettings or a DbClient, "
            f"not {type(spec).__name__}"
        )
    if spec.dialect != "mysql":
        raise ConfigError(f"replica {spec.redacted()} is not a mysql:// URL")
    options = dict(spec.options)
    tls = tls_from_options(options)
    changes: dict[str, Any] = {
        "host": spec.host,
        "port": spec.port,
        "unix_socket": options.pop("unix_socket", None),
        "database": spec.database or primary.database,
        "tls": tls if tls is not None else primary.tls,
        **options,
    }
    if spec.user:
        changes.update(user=spec.user, password=spec.password)
    return dataclasses.replace(primary, **changes)


def read_replica_status(client: DbClient) -> list[Row]:
    """``SHOW REPLICA STATUS`` (MySQL >= 8.0.22, MariaDB >= 10.5), else ``SHOW SLAVE STATUS``:
    one row per replication channel, none on a server that is not a replica."""
    try:
        return client.query("SHOW REPLICA STATUS")
    except QueryError:
        return client.query("SHOW SLAVE STATUS")


def replica_lag(rows: Sequence[Row]) -> float | None:
    """The largest ``Seconds_Behind_Master`` of the channels; None when any channel is not
    replicating (NULL) or the server is no replica."""
    if not rows:
        return None
    lags: list[float] = []
    for row in rows:
        lag = row.get("Seconds_Behind_Source", row.get("Seconds_Behind_Master"))
        if lag is None:
            return None
        lags.append(float(lag))
    return max(lags)


class _Replica:
    """One replica: its client for reads, its probe client, and what was last learned."""

    def __init__(self, settings: DbConnectionSettings, make: Callable[..., DbClient]) -> None:
        self.settings = settings
        self.label = settings.redacted()
        self.client = make(settings, retry=RetryPolicy.none())
        timeout = settings.connect_timeout
        self.probe = make(
            dataclasses.replace(settings, read_timeout=timeout, write_timeout=timeout),
            retry=RetryPolicy.none(),
        )
        self.lock = threading.Lock()
        self.checked_at = -math.inf
        self.down_until = -math.inf
        self.lag: float | None = None
        self.state = "unchecked"

    def close(self) -> None:
        self.client.close()
        self.probe.close()


def _has_applied(replica: _Replica, since: float | None) -> bool:
    """Whether the last reading shows the replica has applied all the primary committed before
    ``since``: it reflected the primary as of the reading's time less its lag, and less one
    more second, as Seconds_Behind_Master counts whole seconds."""
    if since is None:
        return True
    return replica.lag is not None and replica.checked_at - replica.lag - 1.0 >= since


class ReplicaSet:
    """The replicas of one primary and the rule for picking one: lag at most ``max_lag``
    seconds, not marked down; in turn when several qualify."""

    def __init__(
        self,
        primary: DbConnectionSettings,
        specs: Sequence[object],
        *,
        max_lag: float,
        retry_after: float,
        make: Callable[..., DbClient],
    ) -> None:
        if isinstance(specs, str | bytes) or not isinstance(specs, Sequence):
            raise ConfigError(
                "replicas takes a list of mysql:// URLs (or DbConnectionSettings), "
                f"not {type(specs).__name__}"
            )
        for name, value in (("max_replica_lag", max_lag), ("replica_retry_after", retry_after)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        self.max_lag = float(max_lag)
        self.retry_after = float(retry_after)
        self._replicas = [_Replica(replica_settings(primary, spec), make) for spec in specs]
        self._turn = itertools.count()

    @property
    def settings(self) -> tuple[DbConnectionSettings, ...]:
        """Each replica's connection settings, in the order given."""
        return tuple(replica.settings for replica in self._replicas)

    @property
    def labels(self) -> list[str]:
        """Each replica as a URL without its password."""
        return [replica.label for replica in self._replicas]

    def __bool__(self) -> bool:
        return bool(self._replicas)

    def pick(self, applied_since: float | None = None) -> DbClient | None:
        """A replica's client that may serve a read now, or None (read from the primary).
        With ``applied_since`` (a ``time.monotonic()`` moment), only a replica whose lag
        reading shows it has applied everything the primary committed before that moment."""
        count = len(self._replicas)
        start = next(self._turn)
        for offset in range(count):
            replica = self._replicas[(start + offset) % count]
            if self._usable(replica, applied_since):
                return replica.client
        log.debug("no replica within %g s of lag: reading from the primary", self.max_lag)
        return None

    def wait_applied(self, since: float, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a replica to have applied everything the primary
        committed before the ``time.monotonic()`` moment ``since``; False when none did."""
        deadline = time.monotonic() + timeout
        while True:
            if any(self._usable(replica, since) for replica in self._replicas):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_REPROBE_AFTER)

    def read_failed(self, client: DbClient, exc: AutoOpsError) -> None:
        """A read on a replica failed and goes to the primary instead. A replica that could not
        be reached or refused the account is marked down until it is probed again."""
        for replica in self._replicas:
            if replica.client is not client:
                continue
            if isinstance(exc, ConnectError | AuthenticationError):
                with replica.lock:
                    self._mark_down(replica, f"a read failed: {exc}")
            else:
                log.info(
                    "a read on replica %s failed (%s); running it on the primary",
                    replica.label,
                    exc,
                )

    def status(self) -> list[tuple[str, str, float | None]]:
        """Each replica's URL (no password), state and last lag reading, as last seen."""
        return [(replica.label, replica.state, replica.lag) for replica in self._replicas]

    def close(self) -> None:
        for replica in self._replicas:
            replica.close()

    def _usable(self, replica: _Replica, applied_since: float | None = None) -> bool:
        with replica.lock:
            now = time.monotonic()
            if now < replica.down_until:
                return False
            age = now - replica.checked_at
            if age >= LAG_READING_TTL or (
                age >= _REPROBE_AFTER and not _has_applied(replica, applied_since)
            ):
                self._probe(replica)
            return replica.state == "ok" and _has_applied(replica, applied_since)

    def _probe(self, replica: _Replica) -> None:
        # The reading describes the replica no earlier than when it was asked for.
        asked = time.monotonic()
        try:
            rows = read_replica_status(replica.probe)
        except AutoOpsError as exc:
            self._mark_down(replica, f"its replication status cannot be read: {exc}")
            return
        replica.checked_at = asked
        replica.lag = lag = replica_lag(rows)
        if not rows:
            self._enter(replica, "not a replica", "it is not replicating from any primary")
        elif lag is None:
            self._enter(replica, "stopped", "replication is stopped (Seconds_Behind_Master NULL)")
        elif lag > self.max_lag:
            self._enter(replica, "lagging", f"it is {lag:g} s behind (bound: {self.max_lag:g} s)")
        else:
            self._enter(replica, "ok", f"{lag:g} s behind")

    def _mark_down(self, replica: _Replica, reason: str) -> None:
        replica.down_until = time.monotonic() + self.retry_after
        replica.checked_at = -math.inf
        replica.lag = None
        replica.client._drop_connections()
        replica.probe._drop_connections()
        self._enter(replica, "down", f"{reason}; tried again in {self.retry_after:g} s")

    def _enter(self, replica: _Replica, state: str, reason: str) -> None:
        if state == replica.state:
            return
        if state == "ok":
            log.info("replica %s serves reads again: %s", replica.label, reason)
        else:
            log.warning("replica %s skipped, reads go to the primary: %s", replica.label, reason)
        replica.state = state
