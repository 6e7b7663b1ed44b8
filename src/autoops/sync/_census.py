"""The sync's cached keys, gathered by SCAN while a full pass copies, for its reconciliation."""

from __future__ import annotations

import threading
from array import array

from ..cache import CacheClient

__all__ = ["KeyCensus"]

_SCAN_COUNT = 10_000


class KeyCensus:
    """SCANs the keys under ``prefix`` (full keys, template without suffix) in a thread of its
    own, so Redis walks its keyspace while the database builds pages instead of afterwards.
    Keys that are the prefix plus a canonical integer are kept as int64s (8 bytes a key: the
    key is rebuilt from its number); any other key is kept whole, for the slow path."""

    def __init__(self, cache: CacheClient, prefix: bytes) -> None:
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
            for keys in self.cache._scan_prefix(self.prefix.decode(), _SCAN_COUNT):
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
