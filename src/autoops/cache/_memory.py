"""The in-process backend: the embedded default, with Redis's behaviour for TTLs and namespaces."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Final

from .._config import CacheUrl
from .._errors import ConfigError
from .._resp import unpack_arguments
from .._retry import RetryPolicy
from ._backend import FencedBatch
from ._client import COMMON_OPTIONS, CacheClient
from ._codec import Codec

__all__ = ["MemoryCache"]

_SWEEP_EVERY: Final = 1024


class _Store:
    """Encoded values with absolute expiry times (monotonic), guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, tuple[bytes, float | None]] = {}
        self.writes = 0

    def live(self, key: str, now: float) -> bytes | None:
        entry = self.data.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and expires <= now:
            del self.data[key]
            return None
        return value

    def put(self, key: str, value: bytes, ttl_ms: int | None, now: float) -> None:
        self.data[key] = (value, None if ttl_ms is None else now + ttl_ms / 1000)
        self.writes += 1
        if self.writes % _SWEEP_EVERY == 0:
            expired = [k for k, (_, e) in self.data.items() if e is not None and e <= now]
            for k in expired:
                del self.data[k]


_named_stores: weakref.WeakValueDictionary[str, _Store] = weakref.WeakValueDictionary()
_named_lock = threading.Lock()


class MemoryCache(CacheClient):
    """A :class:`CacheClient` held in this process: ``memory://`` is private to the client,
    ``memory://name`` is shared by every client in the process that uses the same name."""

    scheme = "memory"

    def __init__(
        self,
        *,
        name: str | None = None,
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
        self.name = name
        if name:
            with _named_lock:
                store = _named_stores.get(name)
                if store is None:
                    store = _Store()
                    _named_stores[name] = store
        else:
            store = _Store()
        self._store = store

    @classmethod
    def from_parsed(
        cls,
        url: CacheUrl,
        *,
        namespace: str | None = None,
        codec: Codec | None = None,
        retry: RetryPolicy | None = None,
        **options: Any,
    ) -> MemoryCache:
        """Build from a parsed ``memory://[name]`` URL; it takes only ``ttl_jitter`` and
        ``chunk_size``."""
        unknown = sorted(set(options) - set(COMMON_OPTIONS))
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)} for memory://; it takes "
                f"{', '.join(sorted(COMMON_OPTIONS))}"
            )
        return cls(name=url.path or None, namespace=namespace, codec=codec, retry=retry, **options)

    @property
    def location(self) -> str:
        return f"memory:{self.name or ''}"

    def get_raw(self, key: str) -> bytes | None:
        with self._store.lock:
            return self._store.live(key, time.monotonic())

    def get_many_raw(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        with self._store.lock:
            return [self._store.live(key, now) for key in keys]

    def _set(self, key: str, value: bytes, ttl_ms: int | None) -> None:
        with self._store.lock:
            self._store.put(key, value, ttl_ms, time.monotonic())

    def _set_many(self, items: list[tuple[str, bytes]], ttl_ms: list[int] | None) -> None:
        now = time.monotonic()
        with self._store.lock:
            for index, (key, value) in enumerate(items):
                self._store.put(key, value, None if ttl_ms is None else ttl_ms[index], now)

    def _delete(self, keys: list[str]) -> int:
        now = time.monotonic()
        deleted = 0
        with self._store.lock:
            for key in keys:
                if self._store.live(key, now) is not None:
                    del self._store.data[key]
                    deleted += 1
        return deleted

    def _delete_matching(self, prefix: str) -> int:
        now = time.monotonic()
        with self._store.lock:
            doomed = [key for key in self._store.data if key.startswith(prefix)]
            live = sum(1 for key in doomed if self._store.live(key, now) is not None)
            for key in doomed:
                self._store.data.pop(key, None)
        return live

    def scan_prefix(self, prefix: str, count: int) -> Iterator[list[bytes]]:
        now = time.monotonic()
        with self._store.lock:
            keys = [
                key.encode()
                for key in self._store.data
                if key.startswith(prefix) and self._store.live(key, now) is not None
            ]
        for start in range(0, len(keys), count):
            yield keys[start : start + count]

    def set_if_absent(self, key: str, value: bytes, ttl_ms: int) -> bool:
        now = time.monotonic()
        with self._store.lock:
            if self._store.live(key, now) is not None:
                return False
            self._store.put(key, value, ttl_ms, now)
            return True

    def delete_if_equal(self, key: str, value: bytes) -> bool:
        with self._store.lock:
            if self._store.live(key, time.monotonic()) == value:
                del self._store.data[key]
                return True
            return False

    def expire_if_equal(self, key: str, value: bytes, ttl_ms: int) -> bool:
        now = time.monotonic()
        with self._store.lock:
            if self._store.live(key, now) != value:
                return False
            self._store.data[key] = (value, now + ttl_ms / 1000)
            return True

    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl_ms: int | None = None
    ) -> bool:
        now = time.monotonic()
        with self._store.lock:
            if self._store.live(key, now) != expected:
                return False
            self._store.put(key, value, ttl_ms, now)
            return True

    def write_fenced(self, batch: FencedBatch) -> bool:
        # Unpacked before taking the lock: malformed rows write nothing.
        flat = unpack_arguments(batch.packed_items, 2 * batch.item_count)
        now = time.monotonic()
        with self._store.lock:
            if self._store.live(batch.fence[0], now) != batch.fence[1]:
                return False
            for index in range(0, len(flat), 2):
                self._store.put(
                    flat[index].decode("utf-8"), flat[index + 1], self._jittered(batch.ttl_ms), now
                )
            for key in batch.deletes:
                self._store.data.pop(key, None)
            for key, value in batch.meta:
                self._store.put(key, value, None, now)
            return True

    def _ping(self) -> None:
        return None

    def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires, None if it has no expiry or does not exist."""
        now = time.monotonic()
        with self._store.lock:
            if self._store.live(self.key(key), now) is None:
                return None
            expires = self._store.data[self.key(key)][1]
        return None if expires is None else expires - now

    def close(self) -> None:
        return None
