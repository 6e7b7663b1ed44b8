"""Reconciliation: deleting the cached keys whose rows are gone (or soft-deleted)."""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from typing import Any, Final

from ..cache import CacheBackend
from ..db import DbClient
from ._census import SeenKeys, all_within
from ._checkpoint import write
from ._lock import SyncLock
from ._plan import KeyTemplate, TablePlan, quote_name
from ._replica import ReadPoint

__all__ = ["Reconciler"]

_CHUNK: Final = 1000
_SCAN: Final = 10_000


class Reconciler:
    """Deletes, under ``lock``, the keys under the sync's prefix whose rows are gone. Keys whose
    primary key lies in the range a full pass read are checked against its ``seen`` keys; the
    others in SQL, a chunk at a time. Keys that do not parse as one of this sync's keys are
    left alone."""

    def __init__(
        self,
        db: DbClient,
        cache: CacheBackend,
        template: KeyTemplate,
        plan: TablePlan,
        lock: SyncLock,
        seen: SeenKeys | None,
        *,
        table: str,
        name: str,
        reads: ReadPoint | None = None,
    ) -> None:
        self.db = db
        self.reads = reads if reads is not None else ReadPoint(db, "primary", name)
        self.cache = cache
        self.template = template
        self.plan = plan
        self.lock = lock
        self.seen = seen if seen is not None and seen.usable and seen.upto is not None else None
        self.table = table
        self.name = name
        self._prefix = cache.key(template.prefix).encode()

    def scan(self) -> int:
        """Reconcile every key the cache holds under the prefix; returns how many were deleted."""
        interval = self.seen.interval if self.seen is not None else None
        deleted = 0
        for keys in self.cache.scan_prefix(self._prefix.decode(), _SCAN):
            fast = interval is not None and not self.template.suffix
            if fast and interval is not None and all_within(keys, self._prefix, interval):
                continue
            deleted += self.keys(keys)
        return deleted

    def keys(self, keys: list[bytes]) -> int:
        """Reconcile one batch of full keys (bytes), parsing each."""
        prefix = self._prefix
        suffix = self.template.suffix.encode()
        namespace = len(self.cache.key(""))
        integer = self.plan.primary_key.integer
        parsed: list[tuple[Any, bytes]] = []
        for key in keys:
            if suffix and not key.endswith(suffix):
                continue
            text = key[len(prefix) : len(key) - len(suffix)]
            if integer and text.isdigit() and (text[0] != 0x30 or len(text) == 1):
                value: Any = int(text)
            else:
                value = self.template.primary_key_of(key.decode()[namespace:], integer)
                if value is None:
                    continue
            parsed.append((value, key))
        return self._settle(parsed)

    def numbers(self, numbers: array[int]) -> int:
        """Reconcile the integer keys a census gathered (the key is the prefix + the number)."""
        interval = self.seen.interval if self.seen is not None else None
        deleted = 0
        for start in range(0, len(numbers), _SCAN):
            chunk = numbers[start : start + _SCAN]
            if interval is not None and interval[0] <= min(chunk) and max(chunk) <= interval[1]:
                continue
            deleted += self._settle((value, b"%b%d" % (self._prefix, value)) for value in chunk)
        return deleted

    def _settle(self, keys: Iterable[tuple[Any, bytes]]) -> int:
        """Delete the ``(primary key, key)`` pairs whose rows are gone: from ``seen`` where it
        covers them, from the table otherwise."""
        seen = self.seen
        unknown: dict[Any, bytes] = {}
        gone: list[bytes] = []
        for value, key in keys:
            if seen is not None and seen.covers(value):
                if value not in seen:
                    gone.append(key)
            else:
                unknown[value] = key
        return self._delete(gone) + self._delete_missing(unknown)

    def _delete_missing(self, keys: dict[Any, bytes]) -> int:
        """Delete the keys (by primary key) whose rows the table no longer has."""
        plan = self.plan
        table = quote_name(self.db, self.table)
        pk = quote_name(self.db, plan.primary_key.name)
        alive = "" if plan.deleted is None else f" AND NOT {plan.deleted_condition(self.db)}"
        pks = list(keys)
        deleted = 0
        for start in range(0, len(pks), _CHUNK):
            chunk = pks[start : start + _CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            rows = self.db.query(
                f"SELECT {pk} AS pk FROM {table} WHERE {pk} IN ({marks}){alive}",  # noqa: S608
                chunk,
                **self.reads.options(),
            )
            present = {row["pk"] for row in rows}
            deleted += self._delete([keys[value] for value in chunk if value not in present])
        return deleted

    def _delete(self, keys: list[bytes]) -> int:
        if keys:
            write(self.cache, self.lock, name=self.name, deletes=[key.decode() for key in keys])
        return len(keys)
