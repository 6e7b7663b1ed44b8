"""Redis health: PING latency, memory against maxmemory, evictions, persistence, clients,
replication link and keyspace hit ratio; a Cluster's slots and nodes, a Sentinel group's quorum."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, ClassVar

from .._config import CacheUrl
from .._connection import CacheConnectionSettings
from .._errors import ConfigError
from .._retry import RetryPolicy
from ..cache import CacheClient, RedisCache
from ..cache._redis import classify_redis_error
from ._check import Check, CheckFindings, DefaultThresholds, ThresholdSpec
from ._redis_topology import CLUSTER_SLOTS, evaluate_sentinels, measure_cluster
from ._status import CheckStatus

__all__ = ["RedisCheck"]


class RedisCheck(Check):
    """Connect time and PING latency; ``used_memory`` as a percentage of ``maxmemory`` (0 means
    no limit, which it reports); evicted keys (total and per second since the previous run);
    ``rdb_last_bgsave_status``; connected clients against ``maxclients``; the role, and
    ``master_link_status`` on a replica; the keyspace hit ratio since the previous run.

    ``url`` is a ``redis://``, ``rediss://`` or ``unix://`` URL or a client's
    :attr:`~autoops.CacheClient.connection_settings`.

    A ``redis+cluster://`` URL checks the cluster instead: PING latency, ``cluster_state``,
    slots served (``slots_ok``: "16384 of 16384 slots", critical below 16384 by default), slots
    in PFAIL/FAIL (``slots_failing``), failing or disconnected nodes (``failing_nodes``) and the
    fewest replicas any master has (``replicas_per_master``, warning below 1). A
    ``redis+sentinel://`` URL asks every sentinel: how many answer (``sentinels``), whether the
    quorum is reachable (``SENTINEL CKQUORUM``), whether they agree on the master's address,
    whether a failover is in progress, the master's healthy replicas (``replicas``, warning
    below 1); then judges the master as a single server.
    """

    kind = "redis"
    THRESHOLDS: ClassVar[DefaultThresholds] = {
        "connect_time": ("1", "5"),
        "latency": ("0.1", "1"),
        "memory": ("85", "95"),
        "evicted_keys_rate": (None, None),
        "clients": ("80", "90"),
        "hit_ratio": (None, None),
        "slots_ok": (None, f"{CLUSTER_SLOTS}:"),
        "slots_failing": ("0", None),
        "failing_nodes": ("0", None),
        "replicas_per_master": ("1:", None),
        "sentinels": (None, None),
        "replicas": ("1:", None),
    }

    def __init__(
        self,
        name: str,
        url: str | CacheUrl | CacheConnectionSettings,
        *,
        timeout: float = 10.0,
        thresholds: ThresholdSpec | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout, thresholds=thresholds)
        if isinstance(url, CacheConnectionSettings):
            self.settings = url
        else:
            parsed = url if isinstance(url, CacheUrl) else CacheUrl.parse(url)
            if parsed.scheme == "memory":
                raise ConfigError(f"check {name}: a redis check needs a redis:// URL, got {parsed}")
            # Building a client opens no connection; it turns the URL's TLS options into settings.
            parser = CacheClient.from_url(parsed)
            self.settings = parser.connection_settings
            parser.close()

    @property
    def target(self) -> str:
        return self.settings.location

    @property
    def measures_async(self) -> bool:
        # A cluster or a sentinel group is asked through redis-py's synchronous clients.
        return self.settings.topology == "single"

    def _timed_settings(self) -> CacheConnectionSettings:
        return dataclasses.replace(
            self.settings, socket_timeout=self.timeout, connect_timeout=self.timeout
        )

    def measure(self, findings: CheckFindings) -> None:
        settings = self._timed_settings()
        if settings.topology == "cluster":
            measure_cluster(findings, settings)
            return
        if settings.topology == "sentinel":
            master = evaluate_sentinels(findings, settings)
            if any(status is CheckStatus.CRITICAL for status, _ in findings.problems):
                return
            if master is not None:
                # The master most sentinels name, not the first sentinel's (redis-py's choice).
                settings = settings.server(*master)
        client = CacheClient.from_connection_settings(settings, retry=RetryPolicy.none())
        assert isinstance(client, RedisCache)
        try:
            # The first PING opens the connection; the second is the round trip alone.
            connect_time = client.ping()
            latency = client.ping()
            findings.metric("connect_time", connect_time, "s", text=None, minimum=0)
            findings.metric(
                "latency", latency, "s", text=f"PING {latency * 1000:.2f} ms", minimum=0
            )
            # The default sections hold every field judged; "all" adds commandstats and
            # latencystats, which on a busy server triple what is parsed.
            info: dict[str, Any] = client.redis.info()
            maxclients = _config_number(client, "maxclients")
        finally:
            client.close()
        evaluate_info(findings, info, maxclients)

    async def measure_async(self, findings: CheckFindings) -> None:
        # Loaded here: only a run of many checks needs redis-py's asyncio client.
        import redis  # noqa: PLC0415
        import redis.asyncio  # noqa: PLC0415
        from redis.backoff import NoBackoff  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415

        settings = self._timed_settings()
        arguments = settings.redis_arguments()
        arguments.update(retry=Retry(NoBackoff(), 0), single_connection_client=True)
        client = redis.asyncio.Redis(**arguments)
        operation = "redis PING"
        try:
            # As measure(): the first PING opens the connection, the second is the round trip.
            started = time.perf_counter()
            await client.ping()
            connect_time = time.perf_counter() - started
            started = time.perf_counter()
            await client.ping()
            latency = time.perf_counter() - started
            operation = "redis INFO"
            info: dict[str, Any] = await client.info()
            maxclients: float | None
            try:
                reply = await client.config_get("maxclients")
            except redis.RedisError:  # as _config_number: CONFIG renamed or not permitted
                maxclients = None
            else:
                value = reply.get("maxclients")
                maxclients = float(value) if value not in (None, "") else None
        except (redis.RedisError, OSError) as exc:
            failure = classify_redis_error(exc, operation, settings.location, settings.password)
            raise failure.build() from exc
        finally:
            await client.aclose()
        findings.metric("connect_time", connect_time, "s", text=None, minimum=0)
        findings.metric("latency", latency, "s", text=f"PING {latency * 1000:.2f} ms", minimum=0)
        evaluate_info(findings, info, maxclients)


def _config_number(client: RedisCache, name: str) -> float | None:
    """A CONFIG GET value, or None where CONFIG is renamed or not permitted (managed Redis)."""
    try:
        reply = client.redis.config_get(name)
    except Exception:
        return None
    value = reply.get(name)
    return float(value) if value not in (None, "") else None


def evaluate_info(findings: CheckFindings, info: dict[str, Any], maxclients: float | None) -> None:
    """Judge an INFO reply (as redis-py parses it)."""
    used = float(info.get("used_memory", 0))
    maxmemory = float(info.get("maxmemory", 0))
    findings.metric(
        "used_memory",
        used,
        "B",
        text=f"{used / 1048576:.1f} MiB used",
        minimum=0,
        maximum=maxmemory or None,
    )
    if maxmemory > 0:
        percent = 100.0 * used / maxmemory
        findings.metric(
            "memory",
            percent,
            "%",
            text=f"memory {percent:.0f}% of maxmemory",
            minimum=0,
            maximum=100,
            series="memory_used",
        )
    else:
        findings.note("no maxmemory limit")

    evicted = float(info.get("evicted_keys", 0))
    findings.metric("evicted_keys", evicted, "c", text=None)
    rate = findings.counter_rate("evicted_keys", evicted)
    if rate is not None:
        findings.metric(
            "evicted_keys_rate",
            rate,
            text=f"{rate:.2f} evictions/s",
            minimum=0,
            series="evicted_keys_per_second",
        )

    bgsave = str(info.get("rdb_last_bgsave_status", "ok"))
    if bgsave != "ok":
        findings.problem(CheckStatus.CRITICAL, f"last background save failed ({bgsave})")

    clients = float(info.get("connected_clients", 0))
    if maxclients:
        percent = 100.0 * clients / maxclients
        findings.metric(
            "clients",
            percent,
            "%",
            text=f"{clients:.0f} of {maxclients:.0f} clients",
            minimum=0,
            maximum=100,
            series="clients_used",
        )
    else:
        findings.note(f"{clients:.0f} clients")
    rejected = float(info.get("rejected_connections", 0))
    findings.metric("rejected_connections", rejected, "c", text=None)

    hits = float(info.get("keyspace_hits", 0))
    misses = float(info.get("keyspace_misses", 0))
    previous = findings.state.get("keyspace")
    findings.state["keyspace"] = [hits, misses]
    if (
        isinstance(previous, list)
        and len(previous) == 2
        and hits >= previous[0]
        and (misses >= previous[1])
    ):
        hits, misses = hits - previous[0], misses - previous[1]
    if hits + misses > 0:
        ratio = 100.0 * hits / (hits + misses)
        findings.metric(
            "hit_ratio", ratio, "%", text=f"hit ratio {ratio:.1f}%", minimum=0, maximum=100
        )
    else:
        findings.note("no key lookups to rate")

    role = str(info.get("role", "master"))
    if role == "slave":
        link = str(info.get("master_link_status", "down"))
        source = f"{info.get('master_host', '?')}:{info.get('master_port', '?')}"
        if link != "up":
            down = float(info.get("master_link_down_since_seconds", -1))
            findings.problem(
                CheckStatus.CRITICAL,
                f"replica link to {source} is {link}" + (f" for {down:.0f} s" if down >= 0 else ""),
            )
        else:
            findings.note(f"replica of {source}, link up")
    else:
        findings.note(f"role {role}")
