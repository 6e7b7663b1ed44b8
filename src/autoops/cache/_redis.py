"""The Redis backend (redis-py; hiredis parses replies when it is installed)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .._config import REDIS_OPTIONS, CacheUrl, Secret, convert_options
from .._connection import CacheConnectionSettings, TlsSettings, VerifyMode
from .._errors import AuthenticationError, CodecError, ConfigError, ConnectError, QueryError
from .._resp import pack_arguments, pack_command, pack_header
from .._retry import Failure, RetryPolicy
from ._backend import FencedBatch
from ._client import CacheClient, escape_glob
from ._codec import Codec

__all__ = ["RedisCache", "classify_redis_error", "exchange"]

# Compare-and-delete, so a caller only ever releases the lock it took.
_DELETE_IF_EQUAL: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# The fenced batch: rows, deletes and the caller's bookkeeping keys in one atomic step, applied
# only while the caller still holds its lock, so a runner that lost its lock writes nothing.
# ARGV: fence value, ttl ms (0: none), row count, delete count, meta count, ttl jitter (parts per
# million), a random seed, then row pairs, delete keys and meta pairs. Each row's TTL is jittered
# on its own (a Park-Miller generator seeded by the client: deterministic for the script, random
# across calls), so the keys of one batch do not all expire at once. unpack() runs in slices to
# stay under Lua's C stack limit.
_WRITE_FENCED: Final = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[2])
local rows = tonumber(ARGV[3])
local deletes = tonumber(ARGV[4])
local metas = tonumber(ARGV[5])
local jitter = tonumber(ARGV[6]) / 1000000
local state = tonumber(ARGV[7])
local first = 8
local last = first + 2 * rows - 1
if ttl > 0 and jitter > 0 then
  for i = first, last, 2 do
    state = (state * 16807) % 2147483647
    local px = math.max(1, math.floor(ttl * (1 - jitter * state / 2147483647)))
    redis.call('set', ARGV[i], ARGV[i + 1], 'px', px)
  end
elseif ttl > 0 then
  for i = first, last, 2 do redis.call('set', ARGV[i], ARGV[i + 1], 'px', ttl) end
else
  for i = first, last, 1000 do redis.call('mset', unpack(ARGV, i, math.min(i + 999, last))) end
end
first = last + 1
last = first + deletes - 1
for i = first, last, 1000 do redis.call('unlink', unpack(ARGV, i, math.min(i + 999, last))) end
first = last + 1
last = first + 2 * metas - 1
for i = first, last, 1000 do redis.call('mset', unpack(ARGV, i, math.min(i + 999, last))) end
return 1
"""
_EXPIRE_IF_EQUAL: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
# ARGV: 1 when an expected value follows (0: the key must be missing), expected, new value,
# ttl ms (0: none).
_COMPARE_AND_SET: Final = """
local current = redis.call('get', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if tonumber(ARGV[4]) > 0 then
  redis.call('set', KEYS[1], ARGV[3], 'px', ARGV[4])
else
  redis.call('set', KEYS[1], ARGV[3])
end
return 1
"""
_MSET_CHUNK: Final = 1000
# Replies that mean "not now" (loading, failover, cluster resharding), not "never": a cluster's
# MOVED and ASK surface here only once redis-py has given up following them.
_TRANSIENT_ERRORS: Final = (
    redis.exceptions.ReadOnlyError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.SlotNotCoveredError,
)
_TRANSIENT_REPLIES: Final = (
    "LOADING",
    "TRYAGAIN",
    "READONLY",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "MOVED ",
    "ASK ",
    "BUSY ",
)


def classify_redis_error(
    exc: BaseException, operation: str, where: str, password: Secret | None
) -> Failure:
    """How a redis-py failure at ``where`` is judged (retried or not, which autoops error), the
    password kept out of the message. Shared by every Redis topology's client."""
    text = f"{type(exc).__name__}: {exc}"
    if password is not None and password.reveal():
        text = text.replace(password.reveal(), "***")
    if isinstance(exc, CodecError | ConfigError):
        return Failure(False, type(exc), str(exc), passthrough=True)
    if isinstance(
        exc, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError
    ) or (
        isinstance(exc, redis.ResponseError)
        and str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM"))
    ):
        return Failure(
            False,
            AuthenticationError,
            f"Redis at {where} refused the credentials or permission ({text}); check the "
            "user name and password in the URL, AUTOOPS_CACHE_URL or autoops.toml",
        )
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return Failure(
            True,
            ConnectError,
            f"{operation}: cannot reach Redis at {where} ({text}); check that the server is "
            "up and that the URL's host and port are right",
        )
    if isinstance(exc, _TRANSIENT_ERRORS) or (
        isinstance(exc, redis.ResponseError) and str(exc).startswith(_TRANSIENT_REPLIES)
    ):
        return Failure(True, ConnectError, f"{operation}: Redis at {where} is not ready ({text})")
    if isinstance(exc, redis.exceptions.RedisClusterException):
        # redis-py raises it when the slot table cannot be (re)built: slots not covered while a
        # failover is under way, or no seed node answering.
        return Failure(
            True, ConnectError, f"{operation}: the Redis Cluster at {where} is not ready ({text})"
        )
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return Failure(
            False,
            QueryError,
            f"{operation}: Redis at {where} is out of memory (maxmemory reached): {text}",
        )
    return Failure(False, QueryError, f"{operation} on Redis at {where} failed: {text}")


def exchange(pool: redis.ConnectionPool, payload: bytes, count: int) -> list[Any]:
    """Send ``payload`` (``count`` packed commands) in one write on one pooled connection and
    read every reply; an error reply is returned in its place, so the connection stays in step.
    A connection that failed mid-way is dropped, not returned to the pool."""
    connection = pool.get_connection()
    replies: list[Any] = []
    try:
        connection.send_packed_command([payload])  # type: ignore[no-untyped-call]
        for _ in range(count):
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
    except BaseException:
        connection.disconnect()  # type: ignore[no-untyped-call]
        raise
    finally:
        pool.release(connection)
    return replies


_VERIFY_MODES: Final[dict[str, VerifyMode]] = {
    "none": "none",
    "optional": "optional",
    "required": "required",
}


def _verify_mode(text: str) -> VerifyMode:
    mode = _VERIFY_MODES.get(text.strip().lower())
    if mode is None:
        raise ConfigError(f"ssl_cert_reqs must be none, optional or required, got {text!r}")
    return mode


class RedisCache(CacheClient):
    """A :class:`CacheClient` on Redis.

    redis-py's own retry is switched off: this client's :class:`RetryPolicy` decides, by
    classifying each failure (connection and timeout errors, LOADING, TRYAGAIN and READONLY after
    a failover are retried; WRONGTYPE, OOM and authentication errors are not). Timeouts default
    to 5 s; the pool holds at most ``max_connections`` (50) connections.

    TLS (``tls=True``, as ``rediss://`` sets): ``ssl_ca_certs`` (verify the server against this
    CA; the system's CAs otherwise), ``ssl_cert_reqs`` (``required``, ``optional`` or ``none``),
    ``ssl_check_hostname`` (match the host name, on by default), ``ssl_certfile``/``ssl_keyfile``
    (a client certificate); or a :class:`~autoops.TlsSettings` as ``tls``.
    """

    scheme = "redis"

    def __init__(
        self,
        *,
        host: str = "",
        port: int = 6379,
        db: int = 0,
        username: str | None = None,
        password: str | Secret | None = None,
        unix_socket_path: str | None = None,
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
        namespace: str | None = None,
        codec: Codec | None = None,
        retry: RetryPolicy | None = None,
        ttl_jitter: float = 0.0,
        chunk_size: int = 10_000,
    ) -> None:
        super().__init__(
            namespace=namespace,
            codec=codec,
            retry=retry,
            ttl_jitter=ttl_jitter,
            chunk_size=chunk_size,
        )
        if not host and not unix_socket_path:
            raise ConfigError("RedisCache needs host= or unix_socket_path=")
        secret = password if isinstance(password, Secret) or password is None else Secret(password)
        self._password = secret
        tls_settings: TlsSettings | None = None
        if isinstance(tls, TlsSettings):
            tls_settings = tls
        elif tls:
            tls_settings = TlsSettings(
                ca_file=ssl_ca_certs,
                cert_file=ssl_certfile,
                key_file=ssl_keyfile,
                verify=_verify_mode(ssl_cert_reqs),
                check_hostname=ssl_check_hostname,
            )
        if tls_settings is not None and unix_socket_path:
            raise ConfigError("TLS is for TCP connections; a unix socket connection takes none")
        self._settings = CacheConnectionSettings(
            scheme="unix" if unix_socket_path else "rediss" if tls_settings else "redis",
            host=host,
            port=port,
            unix_socket=unix_socket_path,
            db=db,
            username=username or None,
            password=secret,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            client_name=client_name,
            tls=tls_settings,
        )
        self._location = self._settings.location
        kwargs = self._settings.redis_arguments()
        kwargs.update(max_connections=max_connections, retry=Retry(NoBackoff(), 0))
        self._redis = redis.Redis(**kwargs)
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
    ) -> RedisCache:
        """Build from a parsed URL; keyword ``options`` override the URL's query options."""
        common = {
            name: options.pop(name) for name in ("ttl_jitter", "chunk_size") if name in options
        }
        merged = {**url.options, **convert_options(options, REDIS_OPTIONS, url.redacted())}
        merged.pop("db", None)
        db = int(options.get("db", url.db))
        return cls(
            host=url.host,
            port=url.port or 6379,
            db=db,
            username=url.user or None,
            password=url.password,
            unix_socket_path=url.path if url.scheme == "unix" else None,
            tls=url.scheme == "rediss",
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
    ) -> RedisCache:
        return cls(
            host=settings.host,
            port=settings.port,
            db=settings.db,
            username=settings.username,
            password=settings.password,
            unix_socket_path=settings.unix_socket,
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
    def connection_settings(self) -> CacheConnectionSettings:
        return self._settings

    @property
    def redis(self) -> redis.Redis:
        """The underlying redis-py client, for commands this class does not wrap. It does not
        retry: wrap non-idempotent commands yourself with care."""
        return self._redis

    @property
    def location(self) -> str:
        return self._location

    # retry ----------------------------------------------------------------------------------

    def _classify(self, exc: BaseException, operation: str) -> Failure:
        return classify_redis_error(exc, operation, self._location, self._password)

    def _call(self, operation: str, fn: Any) -> Any:
        return self.retry.call(
            fn,
            classify=lambda exc: self._classify(exc, operation),
            operation=operation,
            where=self._location,
        )

    # primitives -----------------------------------------------------------------------------

    def get_raw(self, key: str) -> bytes | None:
        return self._call("redis GET", lambda: self._redis.get(key))  # type: ignore[no-any-return]

    def get_many_raw(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return self._call("redis MGET", lambda: self._redis.mget(list(keys)))  # type: ignore[no-any-return]

    def _set(self, key: str, value: bytes, ttl_ms: int | None) -> None:
        self._call("redis SET", lambda: self._redis.set(key, value, px=ttl_ms))

    def _set_many(self, items: list[tuple[str, bytes]], ttl_ms: list[int] | None) -> None:
        commands: list[bytes] = []
        if ttl_ms is None:
            for start in range(0, len(items), _MSET_CHUNK):
                args = [b"MSET"]
                for key, value in items[start : start + _MSET_CHUNK]:
                    args.append(key.encode("utf-8"))
                    args.append(value)
                commands.append(pack_command(*args))
        else:
            for (key, value), milliseconds in zip(items, ttl_ms, strict=True):
                commands.append(
                    pack_command(b"SET", key.encode("utf-8"), value, b"PX", b"%d" % milliseconds)
                )
        self.send_packed(commands, operation="redis set_many")

    def send_packed(
        self, commands: list[bytes], *, operation: str = "redis bulk write"
    ) -> list[Any]:
        """Send already-packed RESP commands in one write and read every reply; the batch is
        retried whole on a lost connection, so only send idempotent commands. An error reply is
        raised after every reply has been read, keeping the connection in step."""
        payload = b"".join(commands)
        count = len(commands)
        return self._call(  # type: ignore[no-any-return]
            operation, lambda: self._send_packed_once(payload, count)
        )

    def _send_packed_once(self, payload: bytes, count: int) -> list[Any]:
        """One unretried attempt of :meth:`send_packed`."""
        replies = exchange(self._redis.connection_pool, payload, count)
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        return replies

    def _delete(self, keys: list[str]) -> int:
        return self._call("redis UNLINK", lambda: self._redis.unlink(*keys))  # type: ignore[no-any-return]

    def _delete_matching(self, prefix: str) -> int:
        pattern = escape_glob(prefix) + "*"
        deleted = 0
        cursor = 0
        while True:
            cursor, keys = self._call(
                "redis SCAN",
                lambda cursor=cursor: self._redis.scan(cursor=cursor, match=pattern, count=1000),
            )
            if keys:
                deleted += self._call("redis UNLINK", lambda keys=keys: self._redis.unlink(*keys))
            if cursor == 0:
                return deleted

    def scan_prefix(self, prefix: str, count: int) -> Iterator[list[bytes]]:
        pattern = escape_glob(prefix) + "*"
        cursor = 0
        while True:
            cursor, keys = self._call(
                "redis SCAN",
                lambda cursor=cursor: self._redis.scan(cursor=cursor, match=pattern, count=count),
            )
            if keys:
                yield keys
            if cursor == 0:
                return

    def set_if_absent(self, key: str, value: bytes, ttl_ms: int) -> bool:
        return bool(
            self._call("redis SET NX", lambda: self._redis.set(key, value, nx=True, px=ttl_ms))
        )

    def delete_if_equal(self, key: str, value: bytes) -> bool:
        return bool(
            self._call("redis EVALSHA", lambda: self._delete_script(keys=[key], args=[value]))
        )

    def expire_if_equal(self, key: str, value: bytes, ttl_ms: int) -> bool:
        return bool(
            self._call(
                "redis EVAL (renew)",
                lambda: self._redis.eval(_EXPIRE_IF_EQUAL, 1, key, value, ttl_ms),
            )
        )

    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl_ms: int | None = None
    ) -> bool:
        return bool(
            self._call(
                "redis EVAL (compare and set)",
                lambda: self._redis.eval(
                    _COMPARE_AND_SET,
                    1,
                    key,
                    b"0" if expected is None else b"1",
                    expected or b"",
                    value,
                    ttl_ms or 0,
                ),
            )
        )

    def write_fenced(self, batch: FencedBatch) -> bool:
        # Rows arrive packed (key, value, ...): spliced into the EVAL as they are, so a bulk
        # writer's bytes, even built by the database, reach the wire without a copy per row.
        # Each row's TTL is ``ttl_ms`` shortened by its own draw of ``ttl_jitter``.
        fence_key, fence_value = batch.fence
        head = [
            b"EVAL",
            _WRITE_FENCED.encode(),
            b"1",
            fence_key.encode(),
            fence_value,
            b"%d" % (batch.ttl_ms or 0),
            b"%d" % batch.item_count,
            b"%d" % len(batch.deletes),
            b"%d" % len(batch.meta),
            b"%d" % round(self.ttl_jitter * 1_000_000),
            b"%d" % random.randrange(1, 2_147_483_647),
        ]
        count = len(head) + 2 * batch.item_count + len(batch.deletes) + 2 * len(batch.meta)
        command = b"".join(
            [
                pack_header(count),
                pack_arguments(head),
                batch.packed_items,
                pack_arguments([key.encode() for key in batch.deletes]),
                pack_arguments(
                    [part for pair in batch.meta for part in (pair[0].encode(), pair[1])]
                ),
            ]
        )
        (reply,) = self._send_durable([command], operation="redis fenced batch write")
        return bool(reply)

    def _send_durable(self, commands: list[bytes], *, operation: str) -> list[Any]:
        """:meth:`send_packed` for writes that carry a checkpoint; a master whose writes must
        reach a replica before they count (Sentinel) adds a ``WAIT`` on the same connection."""
        return self.send_packed(commands, operation=operation)

    def _ping(self) -> None:
        self._call("redis PING", self._redis.ping)

    def close(self) -> None:
        self._redis.close()
        self._redis.connection_pool.disconnect()
