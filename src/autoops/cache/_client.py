"""CacheClient: Redis and an in-process store behind one small, typed interface.

Keys are strings, optionally under a namespace (``"app:users:7"``); values go through a codec
(JSON by default). Every operation the client offers is idempotent, so retrying one after a lost
connection can never apply it twice.
"""

from __future__ import annotations

import abc
import datetime as dt
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeVar

from .._config import CacheUrl, Settings, convert_options, load_settings
from .._connection import CacheConnectionSettings
from .._display import html_table
from .._errors import ConfigError
from .._retry import RetryPolicy
from .._schemes import SchemeTable
from ._backend import FencedBatch
from ._codec import Codec, JsonCodec

__all__ = ["TTL", "CacheClient"]

TTL = float | int | dt.timedelta
T = TypeVar("T")
_LOCK_SUFFIX: Final = ":__lock__"
_GLOB_SPECIAL: Final = str.maketrans({char: f"\\{char}" for char in "*?[]\\"})

# Options every backend takes; backends add their own.
COMMON_OPTIONS: Final = {"ttl_jitter": float, "chunk_size": int}


def escape_glob(text: str) -> str:
    """Escape Redis MATCH pattern characters so ``text`` matches itself."""
    return text.translate(_GLOB_SPECIAL)


class CacheClient(abc.ABC):
    """A cache: Redis (``redis://``, ``rediss://``, ``unix://``), Redis Sentinel
    (``redis+sentinel://``), Redis Cluster (``redis+cluster://``) or in-process (``memory://``).

    ``namespace`` prefixes every key with ``"<namespace>:"``. ``ttl_jitter`` (0 to 1) shortens
    each TTL by a random fraction up to that much, so keys written together do not all expire
    together. ``codec`` turns values into bytes (:class:`JsonCodec` by default).
    """

    scheme: str

    def __init__(
        self,
        *,
        namespace: str | None = None,
        codec: Codec | None = None,
        retry: RetryPolicy | None = None,
        ttl_jitter: float = 0.0,
        chunk_size: int = 10_000,
    ) -> None:
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise ConfigError("namespace must be a non-empty string or None")
        if not 0 <= ttl_jitter < 1:
            raise ConfigError(
                f"ttl_jitter must be from 0 up to (not including) 1, got {ttl_jitter!r}"
            )
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"chunk_size must be a whole number >= 1, got {chunk_size!r}")
        if codec is not None and not isinstance(codec, Codec):
            raise ConfigError(f"codec must have encode() and decode() methods, got {codec!r}")
        self.namespace = namespace
        self.codec: Codec = codec if codec is not None else JsonCodec()
        self.retry = retry if retry is not None else RetryPolicy()
        self.ttl_jitter = ttl_jitter
        self.chunk_size = chunk_size
        self._prefix = f"{namespace}:" if namespace else ""

    # construction -------------------------------------------------------------------------

    @classmethod
    def from_url(
        cls,
        url: str | CacheUrl,
        namespace: str | None = None,
        *,
        codec: Codec | None = None,
        retry: RetryPolicy | None = None,
        **options: Any,
    ) -> Self:
        """A client for ``redis://[user:pass@]host:6379/0``, ``rediss://...``,
        ``unix:///path.sock?db=0``, ``memory://[name]``,
        ``redis+sentinel://[user:pass@]s1:26379,s2:26379/mymaster/0`` or
        ``redis+cluster://[user:pass@]n1:7000,n2:7001`` (TLS: ``rediss+...``); ``options``
        override the URL's query options (``socket_timeout``, ``connect_timeout``,
        ``max_connections``, ``ttl_jitter``, ``chunk_size``, ...). ``CacheClient.from_url`` picks
        the client by scheme; a backend's class (``RedisCache.from_url``) refuses another's
        URL."""
        parsed = url if isinstance(url, CacheUrl) else CacheUrl.parse(url)
        client = CLIENTS.client_class(parsed.scheme, cls, parsed.redacted())
        common = convert_options(
            {name: options.pop(name) for name in list(options) if name in COMMON_OPTIONS},
            COMMON_OPTIONS,
            parsed.redacted(),
        )
        return client.from_parsed(
            parsed, namespace=namespace, codec=codec, retry=retry, **common, **options
        )

    @classmethod
    @abc.abstractmethod
    def from_parsed(
        cls,
        url: CacheUrl,
        *,
        namespace: str | None = None,
        codec: Codec | None = None,
        retry: RetryPolicy | None = None,
        **options: Any,
    ) -> Self:
        """Build from a parsed URL of this backend; keyword ``options`` override its query
        options."""

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        namespace: str | None = None,
        settings: Settings | None = None,
        **options: Any,
    ) -> Self:
        """A client from keyword arguments > ``AUTOOPS_CACHE_URL`` > the ``[cache]`` table of the
        settings file; a URL set nowhere is a :class:`ConfigError` that says how to set it."""
        resolved = settings if settings is not None else load_settings(path, cache_url=url)
        table = dict(resolved.section("cache"))
        table.pop("url", None)
        file_namespace = table.pop("namespace", None)
        retry = options.pop("retry", None)
        if retry is None and resolved.section("retry"):
            retry = RetryPolicy.from_mapping(dict(resolved.section("retry")))
        return cls.from_url(
            resolved.require_cache_url(),
            namespace if namespace is not None else file_namespace,
            retry=retry,
            **{**table, **options},
        )

    @classmethod
    def from_connection_settings(
        cls,
        settings: CacheConnectionSettings,
        namespace: str | None = None,
        *,
        codec: Codec | None = None,
        retry: RetryPolicy | None = None,
        **options: Any,
    ) -> Self:
        """A new client that connects exactly as ``settings`` say (TLS, timeouts, credentials);
        ``options`` are the client's own (``max_connections``, ``ttl_jitter``, ``chunk_size``)."""
        client = CLIENTS.client_class(settings.scheme, cls, str(settings))
        return client._from_connection_settings(
            settings, namespace=namespace, codec=codec, retry=retry, **options
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
    ) -> Self:
        raise ConfigError(f"{cls.__name__} has no server connection to build from {settings}")

    @property
    def connection_settings(self) -> CacheConnectionSettings:
        """Everything a second connection to this cache's server needs (host, port or socket,
        database, TLS, timeouts, credentials), as a value whose repr and str hide the password.
        An in-process cache has no server: it raises :class:`ConfigError`."""
        raise ConfigError(
            f"the cache at {self.location} is in-process and has no server connection to share; "
            "use a redis://, rediss:// or unix:// cache"
        )

    # the backend's part: the CacheBackend steps (full keys, stored bytes) and the primitives
    # behind the public API ---------------------------------------------------------------------

    @abc.abstractmethod
    def get_raw(self, key: str) -> bytes | None:
        """The stored bytes of the full key ``key``, None when it is missing or expired."""

    @abc.abstractmethod
    def get_many_raw(self, keys: Sequence[str]) -> list[bytes | None]:
        """The stored bytes of each full key, in order, None for the missing ones."""

    @abc.abstractmethod
    def scan_prefix(self, prefix: str, count: int) -> Iterator[list[bytes]]:
        """Batches of about ``count`` full keys (UTF-8 bytes, as stored) starting with
        ``prefix`` (SCAN for Redis, never KEYS); a key may be yielded twice while keys are being
        written, as SCAN allows."""

    @abc.abstractmethod
    def set_if_absent(self, key: str, value: bytes, ttl_ms: int) -> bool:
        """Set the full key ``key`` expiring after ``ttl_ms`` only if it does not exist; True
        when it was set (taking a lock)."""

    @abc.abstractmethod
    def expire_if_equal(self, key: str, value: bytes, ttl_ms: int) -> bool:
        """Reset the expiry of ``key`` only while it still holds ``value`` (lock renewal)."""

    @abc.abstractmethod
    def delete_if_equal(self, key: str, value: bytes) -> bool:
        """Delete ``key`` only while it still holds ``value`` (releasing one's own lock)."""

    @abc.abstractmethod
    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl_ms: int | None = None
    ) -> bool:
        """Set ``key`` to ``value`` (expiring after ``ttl_ms``, never when None) only while it
        holds ``expected`` (is missing, when None); True when it was set."""

    def prepare_rows(self, packed: bytes, count: int) -> object:
        """Work a backend can do on a batch's packed rows ahead of :meth:`write_fenced` (in a
        reader thread), passed back as ``FencedBatch.prepared``; None here: nothing to do."""
        return None

    def claim_fences(self, key: str) -> int:
        """Take a fencing token for the lock ``key`` (just taken) and make every write
        carrying an older one refused from now on; returns the token. 0 here: a backend whose
        fenced write checks the lock in the same atomic step needs none (Redis Cluster cannot
        check it so, and overrides this)."""
        return 0

    @abc.abstractmethod
    def write_fenced(self, batch: FencedBatch) -> bool:
        """Atomically, and only while ``batch.fence`` holds: set the packed rows (each TTL
        jittered per key as :meth:`set` does), delete ``batch.deletes`` and set ``batch.meta``
        (never expiring). Returns False, writing nothing, when the fence no longer holds.
        Idempotent, so it may be retried whole."""

    @abc.abstractmethod
    def _set(self, key: str, value: bytes, ttl_ms: int | None) -> None: ...

    @abc.abstractmethod
    def _set_many(self, items: list[tuple[str, bytes]], ttl_ms: list[int] | None) -> None:
        """Write one chunk; must be idempotent (it is retried whole)."""

    @abc.abstractmethod
    def _delete(self, keys: list[str]) -> int: ...

    @abc.abstractmethod
    def _delete_matching(self, prefix: str) -> int:
        """Delete every key starting with ``prefix`` (SCAN + UNLINK for Redis)."""

    @abc.abstractmethod
    def _ping(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections (Redis) or drop the private store reference (memory)."""

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the cache is, for messages: ``127.0.0.1:6379/0`` or ``memory:name``."""

    # public API -----------------------------------------------------------------------------

    def key(self, name: str) -> str:
        """The full key for ``name``, namespace included."""
        if not isinstance(name, str):
            raise ConfigError(f"cache keys must be str, got {type(name).__name__}")
        return self._prefix + name

    def _ttl_ms(self, ttl: TTL | None) -> int | None:
        if ttl is None:
            return None
        return self._jittered(self._base_ttl_ms(ttl))

    @staticmethod
    def _base_ttl_ms(ttl: TTL) -> float:
        """``ttl`` in milliseconds before jitter; a clear error for anything but a positive
        number of seconds or a timedelta."""
        seconds = ttl.total_seconds() if isinstance(ttl, dt.timedelta) else ttl
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            raise ConfigError(
                f"ttl must be a number of seconds above 0 or a timedelta, got {ttl!r}"
            )
        return seconds * 1000

    def _jittered(self, milliseconds: float | None) -> int | None:
        """``milliseconds`` shortened by a fresh draw of ``ttl_jitter`` (None stays None)."""
        if milliseconds is None:
            return None
        if self.ttl_jitter:
            milliseconds *= 1 - random.random() * self.ttl_jitter
        return max(1, int(milliseconds))

    def get(self, key: str, default: Any = None) -> Any:
        """The decoded value of ``key``, or ``default`` when it is missing or expired."""
        data = self.get_raw(self.key(key))
        return default if data is None else self.codec.decode(data)

    def set(self, key: str, value: Any, ttl: TTL | None = None) -> None:
        """Store ``value`` under ``key``, expiring after ``ttl`` seconds (never when None)."""
        self._set(self.key(key), self.codec.encode(value), self._ttl_ms(ttl))

    def delete(self, *keys: str) -> int:
        """Delete keys; returns how many existed."""
        if not keys:
            return 0
        return self._delete([self.key(key) for key in keys])

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of the keys that exist, as ``{key: value}`` (missing keys are left out)."""
        names = list(keys)
        result: dict[str, Any] = {}
        decode = self.codec.decode
        for start in range(0, len(names), self.chunk_size):
            chunk = names[start : start + self.chunk_size]
            values = self.get_many_raw([self.key(name) for name in chunk])
            for name, data in zip(chunk, values, strict=True):
                if data is not None:
                    result[name] = decode(data)
        return result

    def set_many(self, mapping: Mapping[str, Any], ttl: TTL | None = None) -> int:
        """Store every item, pipelined in chunks of ``chunk_size``; returns how many were written.

        Each chunk is retried whole on a lost connection (writes are idempotent). Values are all
        encoded before anything is sent, so a value the codec refuses writes nothing.
        """
        encode = self.codec.encode
        prefix = self._prefix
        items: list[tuple[str, bytes]] = []
        for name, value in mapping.items():
            if not isinstance(name, str):
                raise ConfigError(f"cache keys must be str, got {type(name).__name__}")
            items.append((prefix + name, encode(value)))
        for start in range(0, len(items), self.chunk_size):
            chunk = items[start : start + self.chunk_size]
            ttls = None if ttl is None else [self._ttl_ms(ttl) or 1 for _ in chunk]
            self._set_many(chunk, ttls)
        return len(items)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key in the namespace that starts with ``prefix`` (SCAN + UNLINK in
        batches, never KEYS); returns how many were deleted."""
        if not isinstance(prefix, str):
            raise ConfigError(f"prefix must be str, got {type(prefix).__name__}")
        if not prefix and not self._prefix:
            raise ConfigError(
                "delete_prefix('') on a client without a namespace would delete every key in "
                "the database; pass a prefix or use a namespace"
            )
        return self._delete_matching(self._prefix + prefix)

    def get_or_set(
        self,
        key: str,
        factory: Callable[[], T],
        ttl: TTL | None = None,
        *,
        lock_ttl: float = 30.0,
        wait: float = 10.0,
    ) -> Any:
        """The cached value of ``key``; on a miss, exactly one caller runs ``factory`` and stores
        its result while the others wait for it (stampede protection).

        A waiting caller polls for up to ``wait`` seconds; if the computing caller has not stored
        a value by then (it died, or is slow), the waiter computes the value itself. ``lock_ttl``
        bounds how long a crashed caller's lock can hold others back. The value returned is what
        :meth:`get` would return, whichever caller computed it.
        """
        full = self.key(key)
        data = self.get_raw(full)
        if data is not None:
            return self.codec.decode(data)
        lock_key = full + _LOCK_SUFFIX
        token = uuid.uuid4().hex.encode("ascii")
        deadline = time.monotonic() + wait
        pause = 0.02
        while True:
            if self.set_if_absent(lock_key, token, max(1, int(lock_ttl * 1000))):
                try:
                    data = self.get_raw(full)
                    if data is not None:
                        return self.codec.decode(data)
                    return self._compute_and_store(full, factory, ttl)
                finally:
                    self.delete_if_equal(lock_key, token)
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
            data = self.get_raw(full)
            if data is not None:
                return self.codec.decode(data)
            if time.monotonic() >= deadline:
                return self._compute_and_store(full, factory, ttl)

    def _compute_and_store(self, full: str, factory: Callable[[], T], ttl: TTL | None) -> Any:
        encoded = self.codec.encode(factory())
        self._set(full, encoded, self._ttl_ms(ttl))
        return self.codec.decode(encoded)

    def ping(self) -> float:
        """Check the cache answers; returns the round trip in seconds."""
        started = time.perf_counter()
        self._ping()
        return time.perf_counter() - started

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.location!r}, namespace={self.namespace!r}, "
            f"codec={self.codec!r})"
        )

    def _repr_html_(self) -> str:
        return html_table(
            type(self).__name__,
            [
                ("location", self.location),
                ("namespace", self.namespace),
                ("codec", self.codec),
                ("ttl_jitter", self.ttl_jitter),
            ],
        )


# The scheme -> client table; a new backend is one entry (and its scheme in CacheUrl.parse).
CLIENTS: Final = SchemeTable(
    CacheClient,
    {
        "redis": "autoops.cache._redis:RedisCache",
        "rediss": "autoops.cache._redis:RedisCache",
        "unix": "autoops.cache._redis:RedisCache",
        "memory": "autoops.cache._memory:MemoryCache",
        "redis+sentinel": "autoops.cache._sentinel:SentinelCache",
        "rediss+sentinel": "autoops.cache._sentinel:SentinelCache",
        "redis+cluster": "autoops.cache._cluster:ClusterCache",
        "rediss+cluster": "autoops.cache._cluster:ClusterCache",
    },
)
