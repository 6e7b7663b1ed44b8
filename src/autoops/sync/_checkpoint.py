"""The stored checkpoint of incremental reading, and the fenced writes that carry it: every
page is written in one atomic step with the checkpoint that covers it, while the lock is held."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigError, LockHeldError
from ..cache import CacheBackend, FencedBatch
from ._lock import SyncLock
from ._page import Page
from ._plan import shift_back

__all__ = ["State", "Window", "checkpoint_record", "lost_lock", "write", "write_page"]


def _stored(value: Any) -> tuple[str, int | float | str]:
    if isinstance(value, dt.datetime | dt.date):
        kind = "datetime" if isinstance(value, dt.datetime) else "date"
        return kind, value.isoformat()
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(
            f"updated_column holds values of type {type(value).__name__}; use a time or a number"
        )
    return type(value).__name__, value


def _loaded(kind: Any, value: Any) -> Any:
    if kind == "datetime" and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    if kind == "date" and isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value


def checkpoint_record(
    position: tuple[Any, Any], settled: Any, horizon: str, committed_at: dt.datetime
) -> dict[str, Any]:
    """The stored checkpoint: the ``(updated, pk)`` position of the newest row written (its
    ``value`` is what status shows), and ``settled``, the time before which every row was
    committed and read (the window from it to the position is checked for late commits)."""
    kind, stored = _stored(position[0])
    return {
        "value": stored,
        "type": kind,
        "pk": position[1],
        "settled": None if settled is None else _stored(settled)[1],
        "horizon": horizon,
        "committed_at": committed_at.isoformat(),
    }


@dataclass(slots=True)
class State:
    """Where incremental reading stands: rows up to ``position`` were written; rows stamped
    before ``settled`` were all committed when they were read."""

    position: tuple[Any, Any]
    settled: Any

    @classmethod
    def load(cls, record: dict[str, Any], overlap: float) -> State:
        value = _loaded(record.get("type"), record.get("value"))
        if "pk" not in record:
            # A checkpoint written before positions were kept: the old overlap window.
            return cls((value, None), shift_back(value, overlap))
        return cls((value, record["pk"]), _loaded(record.get("type"), record.get("settled")))


@dataclass(slots=True)
class Window:
    """What this process remembers of the rows a late commit may still join: the ``(pk,
    updated)`` versions between ``settled`` and ``position`` it has written, so the next pass
    compares versions from the index instead of reading those rows again."""

    position: tuple[Any, Any]
    settled: Any
    versions: dict[Any, Any]


def write_page(
    cache: CacheBackend,
    lock: SyncLock,
    page: Page,
    meta: list[tuple[str, bytes]],
    *,
    ttl_ms: int | None,
    name: str,
) -> None:
    """Write ``page`` and the ``meta`` keys (its checkpoint) in one fenced step."""
    batch = FencedBatch(
        lock.fence, page.packed, page.item_count, ttl_ms, page.deletes, meta, lock.token,
        page.prepared,
    )  # fmt: skip
    if not cache.write_fenced(batch):
        lost_lock(cache, lock, name)


def write(
    cache: CacheBackend,
    lock: SyncLock,
    *,
    name: str,
    deletes: list[str] | None = None,
    meta: list[tuple[str, bytes]] | None = None,
) -> None:
    """Delete keys and write ``meta`` keys in one fenced step."""
    batch = FencedBatch(lock.fence, deletes=deletes or (), meta=meta or (), token=lock.token)
    if not cache.write_fenced(batch):
        lost_lock(cache, lock, name)


def lost_lock(cache: CacheBackend, lock: SyncLock, name: str) -> None:
    """Raise the :class:`LockHeldError` of a fenced write the lock's loss refused."""
    raise LockHeldError(
        f"sync {name} lost its lock {lock.key} in {cache.location} (it expired "
        "while this process was paused, or was taken over): the batch was not written. The "
        "checkpoint covers every batch written before, so the next pass resumes from it"
    )
