"""The Redis Sentinel backend: redis-py's ``Sentinel.master_for`` behind :class:`RedisCache`.

Every operation goes to the master the sentinels name at connect time. After a failover the
old master's connections fail (or answer READONLY, which redis-py's Sentinel connection turns
into a ConnectionError); the retry policy retries, and the new connection asks the sentinels
again, so a failover costs a retry, not an error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from .._config import REDIS_OPTIONS, CacheUrl, Secret, convert_options
from .._connection import CacheConnectionSettings, TlsSettings
from .._errors import ConfigError, ConnectError
from .._resp import pack_command
from .._retry import Failure, RetryPolicy
from ._client import CacheClient
from ._codec import Codec
from ._redis import (
    _DELETE_IF_EQUAL,
    RedisCache,
    _verify_mode,
    classify_redis_error,
)

__all__ = ["ReplicaCounts", "SentinelCache", "ack_timeout_ms"]

# Options a Sentinel URL takes beyond a plain Redis URL's.
SENTINEL_OPTIONS: Final = {"replica_ack_timeout": float}


class _NotReplicated(redis.exceptions.RedisError):
    """No replica acknowledged a write that carries a checkpoint in time."""


# How long a master's count of connected replicas is trusted before it is asked again.
_REPLICA_COUNT_TTL: Final = 5.0


def ack_timeout_ms(seconds: float, socket_timeout: float | None) -> int:
    """``WAIT``'s timeout: ``seconds``, kept under half the socket timeout so a WAIT that runs
    its course is an answer (0 replicas), never a socket timeout."""
    if socket_timeout is not None:
        seconds = min(seconds, socket_timeout / 2)
    return max(1, int(seconds * 1000))


class ReplicaCounts:
    """How many replicas each master has connected (``INFO replication``), remembered for a
    few seconds: a ``WAIT`` on a master without replicas would only wait out its timeout."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def count(self, name: str, client: redis.Redis) -> int:
        """The replicas connected to the master ``client`` talks to, known as ``name``."""
        now = time.monotonic()
        with self._lock:
            known = self._counts.get(name)
        if known is not None and known[1] > now:
            return known[0]
        info = client.info("replication")
        count = int(info.get("connected_slaves", 0)) if info.get("role") == "master" else 0
        with self._lock:
            self._counts[name] = (count, now + _REPLICA_COUNT_TTL)
        return count

    def forget(self, name: str) -> None:
        """Ask again next time (a WAIT went unanswered: the count may be stale)."""
        with self._lock:
            self._counts.pop(name, None)


class SentinelCache(RedisCache):
    """A :class:`CacheClient` on the master of a Redis Sentinel group
    (``redis+sentinel://[user:pass@]s1:26379,s2:26379/mymaster/0``; ``rediss+sentinel://``
    for TLS to the sentinels and the servers).

    The URL's credentials are the Redis servers'; the sentinels are asked without them. A
    batch that carries a checkpoint (``CacheSync``) is followed by ``WAIT 1`` on the same
    connection while the master has a replica, and retried until one acknowledged it (up to
    ``replica_ack_timeout`` seconds, default 2, per try), so a failover cannot leave a
    checkpoint ahead of its rows.
    """

    scheme = "redis+sentinel"

    def __init__(
        self,
        *,
        sentinels: Sequence[tuple[str, int]],
        service: str,
        db: int = 0,
        username: str | None = None,
        password: str | Secret | None = None,
        tls: bool | TlsSettings = False,
        socket_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        max_connections: int = 50,
        client_name: str | None = None,
        ssl_ca_certs: str | None = None,
        ssl_cert_reqs: str = "required",
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_check_hostname: bool = True,
        replica_ack_timeout: float = 2.0,
        namespace: str | None = None,
        codec: Codec | None = None,
        retry: RetryPolicy | None = None,
        ttl_jitter: float = 0.0,
        chunk_size: int = 10_000,
    ) -> None:
        CacheClient.__init__(
            self,
            namespace=namespace,
            codec=codec,
            retry=retry,
            ttl_jitter=ttl_jitter,
            chunk_size=chunk_size,
        )
        if not sentinels:
            raise ConfigError("SentinelCache needs at least one sentinel host:port")
        if not service:
            raise ConfigError("SentinelCache needs the master's name (service=)")
        if not replica_ack_timeout > 0:
            raise ConfigError(
                f"replica_ack_timeout must be a number of seconds above 0, got "
                f"{replica_ack_timeout!r}"
            )
        secret = password if isinstance(password, Secret) or password is None else Secret(password)
        self._password = secret
        tls_settings = _tls(tls, ssl_ca_certs, ssl_cert_reqs, ssl_certfile, ssl_keyfile,
                            ssl_check_hostname)  # fmt: skip
        self._settings = CacheConnectionSettings(
            scheme="rediss+sentinel" if tls_settings else "redis+sentinel",
            host=sentinels[0][0],
            port=sentinels[0][1],
            db=db,
            username=username or None,
            password=secret,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            client_name=client_name,
            tls=tls_settings,
            hosts=tuple((str(host), int(port)) for host, port in sentinels),
            service=service,
        )
        self._location = self._settings.location
        self._ack_timeout_ms = ack_timeout_ms(replica_ack_timeout, socket_timeout)
        self._replicas = ReplicaCounts()
        kwargs = self._settings.redis_arguments()
        del kwargs["host"], kwargs["port"]
        sentinel_kwargs = {**self._settings.sentinel_arguments(), "retry": Retry(NoBackoff(), 0)}
        self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(self._settings.hosts), sentinel_kwargs=sentinel_kwargs, **kwargs
        )
        self._redis = self._sentinel.master_for(  # type: ignore[no-untyped-call]
            service,
            redis_class=redis.Redis,
            max_connections=max_connections,
            retry=Retry(NoBackoff(), 0),
        )
        self._delete_script = self._redis.register_script(_DELETE_IF_EQUAL)

    @classmethod
    def from_parsed(
        cls,
        url: CacheUrl,
        *,
        namespace: str | None = None,
        codec: Codec | None = None,
        retry: RetryPolicy | None = None,
        **options: Any,
    ) -> SentinelCache:
        """Build from a parsed ``redis+sentinel://`` URL; ``options`` override its query."""
        common = {
            name: options.pop(name) for name in ("ttl_jitter", "chunk_size") if name in options
        }
        allowed = {**REDIS_OPTIONS, **SENTINEL_OPTIONS}
        merged = {**url.options, **convert_options(options, allowed, url.redacted())}
        db = int(merged.pop("db", url.db))
        return cls(
            sentinels=url.hosts,
            service=url.service,
            db=db,
            username=url.user or None,
            password=url.password,
            tls=url.scheme.startswith("rediss"),
            namespace=namespace,
            codec=codec,
            retry=retry,
            **common,
            **merged,
        )

    @classmethod
    def _from_connection_settings(
        cls,
        settings: CacheConnectionSettings,
        *,
        namespace: str | None,
        codec: Codec | None,
        retry: RetryPolicy | None,
        **options: Any,
    ) -> SentinelCache:
        return cls(
            sentinels=settings.hosts,
            service=settings.service or "",
            db=settings.db,
            username=settings.username,
            password=settings.password,
            tls=settings.tls or False,
            socket_timeout=settings.socket_timeout,
            connect_timeout=settings.connect_timeout,
            client_name=settings.client_name,
            namespace=namespace,
            codec=codec,
            retry=retry,
            **options,
        )

    @property
    def sentinel(self) -> Sentinel:
        """The underlying redis-py ``Sentinel`` (for ``slave_for`` and SENTINEL commands)."""
        return self._sentinel

    def master_address(self) -> tuple[str, int]:
        """The master's ``(host, port)`` as the sentinels name it now."""
        host, port = self._call(
            "sentinel get-master-addr-by-name",
            lambda: self._sentinel.discover_master(self._settings.service),  # type: ignore[no-untyped-call]
        )
        return str(host), int(port)

    def _classify(self, exc: BaseException, operation: str) -> Failure:
        if isinstance(exc, _NotReplicated):
            return Failure(
                True,
                ConnectError,
                f"{operation}: no replica of the master at {self._location} acknowledged the "
                f"batch within {self._ack_timeout_ms} ms ({exc}); check the replicas' links",
            )
        return classify_redis_error(exc, operation, self._location, self._password)

    def _send_durable(self, commands: list[bytes], *, operation: str) -> list[Any]:
        wait = pack_command(b"WAIT", b"1", b"%d" % self._ack_timeout_ms)
        payload = b"".join([*commands, wait])

        def attempt() -> list[Any]:
            if self._replicas.count("master", self._redis) == 0:
                return self._send_packed_once(b"".join(commands), len(commands))
            replies = self._send_packed_once(payload, len(commands) + 1)
            if int(replies[-1]) < 1:
                self._replicas.forget("master")
                raise _NotReplicated(f"WAIT 1 answered {replies[-1]}")
            return replies[:-1]

        return self._call(operation, attempt)  # type: ignore[no-any-return]


def _tls(
    tls: bool | TlsSettings,
    ca: str | None,
    cert_reqs: str,
    certfile: str | None,
    keyfile: str | None,
    check_hostname: bool,
) -> TlsSettings | None:
    if isinstance(tls, TlsSettings):
        return tls
    if not tls:
        return None
    return TlsSettings(
        ca_file=ca,
        cert_file=certfile,
        key_file=keyfile,
        verify=_verify_mode(cert_reqs),
        check_hostname=check_hostname,
    )
