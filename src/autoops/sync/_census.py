"""What reconciliation compares: the keys a full pass copied, and the keys the cache holds."""

from __future__ import annotations

import threading
from array import array
from typing import Any, Final

from ..cache import CacheBackend

__all__ = ["KeyCensus", "SeenKeys", "all_within"]

_SCAN_COUNT: Final = 10_000
_SEEN_MAX_BITS: Final = 1 << 28  # 32 MiB: past that, reconciliation asks the database instead


class SeenKeys:
    """The integer primary keys a full pass copied, as a bitmap over the range it read, so its
    reconciliation need not ask the database about each cached key (a million keys cost a
    thousand IN queries otherwise). Keys outside the range read are still checked in SQL."""

    def __init__(self, after: Any) -> None:
        self.after = after
        self.upto: Any = None
        self.base: int | None = None
        self.bits = bytearray()
        self.usable = True
        # While every page read was dense and followed the previous one, the keys copied are
        # exactly this interval, and a batch of cached keys can be checked in a few C calls.
        self.interval: tuple[int, int] | None = None
        self._contiguous = True

    def _room(self, pk: int) -> int | None:
        if self.base is None:
            self.base = pk
        offset = pk - self.base
        if offset >= _SEEN_MAX_BITS or offset < 0:
            self.usable = False
            self.bits = bytearray()
            return None
        if offset >= len(self.bits) * 8:
            grow = max(len(self.bits), (offset >> 3) + 1 - len(self.bits), 4096)
            self.bits.extend(bytes(grow))
        return offset

    def add(self, pks: list[Any], last_pk: Any) -> None:
        """Mark ``pks`` (ascending) as copied, and everything up to ``last_pk`` as read."""
        self._contiguous = False
        self.interval = None
        if self.usable and pks and None not in (self._room(pks[0]), self._room(pks[-1])):
            bits = self.bits
            base = self.base or 0
            for pk in pks:
                offset = pk - base
                if offset < 0:
                    self.usable = False
                    return
                bits[offset >> 3] |= 1 << (offset & 7)
        self.upto = last_pk

    def add_range(self, first: int, last: int) -> None:
        """Mark every key from ``first`` to ``last`` as copied (a dense page)."""
        if self._contiguous and self.interval is None:
            self.interval = (first, last)
        elif self.interval is not None and first == self.interval[1] + 1:
            self.interval = (self.interval[0], last)
        else:
            self._contiguous = False
            self.interval = None
        if not self.usable or self._room(first) is None or self._room(last) is None:
            return
        base = self.base or 0
        low, high = first - base, last - base
        while low <= high and low & 7:
            self.bits[low >> 3] |= 1 << (low & 7)
            low += 1
        while low <= high and (high + 1) & 7:
            self.bits[high >> 3] |= 1 << (high & 7)
            high -= 1
        if low <= high:
            self.bits[low >> 3 : (high >> 3) + 1] = b"\xff" * ((high >> 3) - (low >> 3) + 1)
        self.upto = last

    def covers(self, pk: int) -> bool:
        """True when this pass read the range ``pk`` is in, so membership is known."""
        return (
            self.usable
            and self.upto is not None
            and pk <= self.upto
            and (self.after is None or pk > self.after)
        )

    def __contains__(self, pk: int) -> bool:
        if self.base is None or pk < self.base:
            return False
        offset = pk - self.base
        return offset < len(self.bits) * 8 and bool(self.bits[offset >> 3] & (1 << (offset & 7)))


def all_within(keys: list[bytes], prefix: bytes, interval: tuple[int, int]) -> bool:
    """True when every key is ``prefix`` + a canonical integer inside ``interval``: checked
    with a few C-level passes over the joined batch instead of Python code per key (a full
    pass reconciles a million keys)."""
    joined = b"\n".join(keys)
    if joined.count(prefix) != len(keys):
        return False
    body = joined.replace(prefix, b"")
    if not body.replace(b"\n", b"").isdigit() or b"\n0" in b"\n" + body:
        return False
    values = list(map(int, body.split(b"\n")))
    return interval[0] <= min(values) and max(values) <= interval[1]


class KeyCensus:
    """SCANs the keys under ``prefix`` (full keys, template without suffix) in a thread of its
    own, so Redis walks its keyspace while the database builds pages instead of afterwards.
    Keys that are the prefix plus a canonical integer are kept as int64s (8 bytes a key: the
    key is rebuilt from its number); any other key is kept whole, for the slow path."""

    def __init__(self, cache: CacheBackend, prefix: bytes) -> None:
        self.cache = cache
        self.prefix = prefix
        self.numbers = array("q")
        self.others: list[bytes] = []
        self._error: BaseException | None = None
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autoops-sync-census", daemon=True)

    def start(self) -> None:
        """Begin scanning in the background."""
        self._thread.start()

    def _run(self) -> None:
        try:
            for keys in self.cache.scan_prefix(self.prefix.decode(), _SCAN_COUNT):
                if self._halt.is_set():
                    return
                self._add(keys)
        except BaseException as exc:
            self._error = exc

    def _add(self, keys: list[bytes]) -> None:
        prefix = self.prefix
        joined = b"\n".join(keys)
        if joined.count(prefix) == len(keys):
            body = joined.replace(prefix, b"")
            if body.replace(b"\n", b"").isdigit() and b"\n0" not in b"\n" + body:
                try:
                    self.numbers.extend(map(int, body.split(b"\n")))
                    return
                except OverflowError:
                    pass  # beyond int64: take the keys one by one below
        for key in keys:
            text = key[len(prefix) :]
            if text.isdigit() and (text[:1] != b"0" or text == b"0") and int(text) < 2**63:
                self.numbers.append(int(text))
            else:
                self.others.append(key)

    def result(self) -> tuple[array[int], list[bytes]]:
        """Wait for the scan to end; the numbers and the other keys (raises what the scan
        raised)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.numbers, self.others

    def close(self) -> None:
        """Stop scanning (after the batch in hand) and wait for the thread."""
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join()
