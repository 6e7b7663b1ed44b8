"""The cache backend interface: what a capability built on a cache (``CacheSync``) may ask of it.

:class:`CacheClient`'s ``get``/``set`` take names inside the namespace and values through the
codec. A bulk writer needs lower-level steps: bytes as stored, under full keys (namespace
included: ``cache.key(name)``), a lock with a token, and one atomic "write this batch and its
checkpoint, but only while I still hold my lock". :class:`CacheBackend` names those steps, and
nothing else, so a capability never reaches into a backend's private methods and a new backend
(Redis Cluster, Sentinel) is a class that implements them. ``RedisCache`` and ``MemoryCache``
implement it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .._resp import pack_arguments
from ._codec import Codec

__all__ = ["CacheBackend", "FencedBatch"]


@dataclass(frozen=True, slots=True)
class FencedBatch:
    """One atomic write, applied only while ``fence`` (a full key and the value it must hold,
    e.g. a lock and its token) still holds.

    ``packed_items`` are the rows as RESP bulk strings (``$<length>\\r\\n<bytes>\\r\\n``), key
    then value, with full keys, so a writer can hand over bytes built elsewhere, even by the
    database, without a Python object per row; ``item_count`` is the number of pairs.
    :meth:`from_items` packs them from pairs. Each row expires after ``ttl_ms`` (never when
    None), shortened by the backend's own ``ttl_jitter`` drawn afresh for each key. ``deletes``
    are full keys to remove; ``meta`` are bookkeeping pairs (a checkpoint) written without expiry
    in the same step. ``token`` is the lock's fencing token (:meth:`CacheBackend.claim_fences`;
    0 when the backend gave none): a backend that cannot check the fence atomically with the
    rows (Redis Cluster) refuses a batch whose token is older than the newest claimed.
    """

    fence: tuple[str, bytes]
    packed_items: bytes = b""
    item_count: int = 0
    ttl_ms: int | None = None
    deletes: Sequence[str] = field(default=())
    meta: Sequence[tuple[str, bytes]] = field(default=())
    token: int = 0
    #: What :meth:`CacheBackend.prepare_rows` returned for these rows (None: nothing).
    prepared: object = None

    @classmethod
    def from_items(
        cls,
        fence: tuple[str, bytes],
        items: Sequence[tuple[str, bytes]] = (),
        ttl_ms: int | None = None,
        deletes: Sequence[str] = (),
        meta: Sequence[tuple[str, bytes]] = (),
        token: int = 0,
    ) -> FencedBatch:
        """A batch of ``(full key, value)`` rows, packed."""
        packed = pack_arguments([part for key, value in items for part in (key.encode(), value)])
        return cls(fence, packed, len(items), ttl_ms, deletes, meta, token)


class CacheBackend(Protocol):
    """The steps a bulk writer needs from a cache; every key is a full key, every value the
    bytes as stored. Each step is idempotent or conditional, so retrying one after a lost
    connection never applies it twice."""

    @property
    def location(self) -> str:
        """Where the cache is, for messages: ``127.0.0.1:6379/0`` or ``memory:name``."""
        ...

    @property
    def codec(self) -> Codec:
        """How values become bytes."""
        ...

    def key(self, name: str) -> str:
        """The full key for ``name``, namespace included."""
        ...

    def get_raw(self, key: str) -> bytes | None:
        """The stored bytes of ``key``, None when it is missing or expired."""
        ...

    def get_many_raw(self, keys: Sequence[str]) -> list[bytes | None]:
        """The stored bytes of each key, in order, None for the missing ones."""
        ...

    def scan_prefix(self, prefix: str, count: int) -> Iterator[list[bytes]]:
        """Batches of about ``count`` full keys (UTF-8 bytes) starting with ``prefix``, walked
        incrementally (SCAN, never KEYS); a key may come twice while keys are being written."""
        ...

    def set_if_absent(self, key: str, value: bytes, ttl_ms: int) -> bool:
        """Set ``key`` to ``value`` expiring after ``ttl_ms`` only if it does not exist (taking
        a lock); True when it was set."""
        ...

    def expire_if_equal(self, key: str, value: bytes, ttl_ms: int) -> bool:
        """Reset the expiry of ``key`` only while it holds ``value`` (renewing a lock)."""
        ...

    def delete_if_equal(self, key: str, value: bytes) -> bool:
        """Delete ``key`` only while it holds ``value`` (releasing one's own lock)."""
        ...

    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl_ms: int | None = None
    ) -> bool:
        """Set ``key`` to ``value`` (expiring after ``ttl_ms``, never when None) only while it
        holds ``expected`` (is missing, when None); True when it was set."""
        ...

    def prepare_rows(self, packed: bytes, count: int) -> object:
        """Work on ``count`` packed rows done ahead of their write (a reader thread calls it
        while the previous batch is written), handed back as ``FencedBatch.prepared``; the
        backend must still write correctly if the result no longer fits. None: nothing."""
        ...

    def claim_fences(self, key: str) -> int:
        """Right after taking the lock ``key``: a fencing token newer than any before, made
        the one every fenced write must carry from now on (older ones are refused). 0 when
        the backend's fenced write checks the lock itself in one atomic step."""
        ...

    def write_fenced(self, batch: FencedBatch) -> bool:
        """Apply ``batch`` atomically; False, writing nothing, when its fence no longer holds."""
        ...
