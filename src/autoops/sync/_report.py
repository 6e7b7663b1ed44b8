"""What a pass reports, and what a sync leaves in the cache for monitors to read."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from .._deprecation import renamed
from .._display import format_count, format_seconds, html_table
from .._time import utc_now
from ..cache import CacheBackend
from ._plan import META_PREFIX

__all__ = ["SyncReport", "SyncStatus", "meta_key", "read_sync_status"]

SyncKind = Literal["full", "incremental", "reconcile", "snapshot", "stream"]

_LAST_PASS_FIELDS: Final = (
    "kind",
    "rows_read",
    "rows_reread",
    "keys_written",
    "keys_deleted",
    "duration_seconds",
)


def meta_key(name: str, part: str) -> str:
    """The sync's own bookkeeping key (``autoops-sync:<name>:<part>``), namespace not included."""
    return f"{META_PREFIX}{name}:{part}"


def _parse_time(text: Any) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if isinstance(text, str) else None


@dataclass(frozen=True, slots=True)
class SyncReport:
    """The outcome of one pass: what was read, written and deleted, how fast, and where the
    checkpoint stands. ``ok`` is False when a stop request ended the pass early (the
    checkpoint still covers every batch written, so the next pass resumes from it)."""

    name: str
    kind: SyncKind
    rows_read: int
    """Rows read from the table, each row version once."""
    keys_written: int
    keys_deleted: int
    duration_seconds: float
    started_at: dt.datetime
    checkpoint: Any
    rows_reread: int = 0
    """Rows read again because they may have joined the last pass's window by a late commit
    and this process did not remember their versions (a new process, or a window too large)."""
    rows_checked: int = 0
    """Versions ``(pk, updated)`` of that window compared from the index (no row read)."""
    ok: bool = True
    resumed: bool = False
    server_side: bool = False
    """True when the database built the keys and JSON values (the fast path)."""
    events_read: int = 0
    """Binlog mode: row changes read from the binary log (the snapshot's rows included)."""
    behind_bytes: int | None = None
    """Binlog mode: bytes of binary log between the checkpoint and the log's end."""
    binlog_lag_seconds: float | None = None
    """Binlog mode: the age of the oldest change not yet applied (0 at the log's end)."""

    @property
    def completed(self) -> bool:
        """Deprecated: :attr:`ok`."""
        renamed("SyncReport.completed", "SyncReport.ok")
        return self.ok

    @property
    def rows_per_second(self) -> float:
        """Rows read per second of the pass."""
        return self.rows_read / self.duration_seconds if self.duration_seconds > 0 else 0.0

    @property
    def lag_seconds(self) -> float:
        """How old the cache's view of the table is when the pass ends: it holds every change
        committed before the pass started reading (within the overlap window). Binlog mode:
        the age of the oldest change not yet applied, 0 at the log's end."""
        if self.binlog_lag_seconds is not None:
            return self.binlog_lag_seconds
        return self.duration_seconds

    def _rows(self) -> list[tuple[str, object]]:
        return [
            ("kind", self.kind + ("" if self.ok else " (stopped early)")),
            ("rows read", format_count(self.rows_read)),
            ("rows read again", format_count(self.rows_reread)),
            ("versions checked", format_count(self.rows_checked)),
            ("keys written", format_count(self.keys_written)),
            ("keys deleted", format_count(self.keys_deleted)),
            ("duration", format_seconds(self.duration_seconds)),
            ("rows/s", format_count(self.rows_per_second)),
            ("checkpoint", self.checkpoint),
            ("lag", format_seconds(self.lag_seconds)),
            ("values built by", "the database" if self.server_side else "the codec"),
            *(
                [("binary log behind", f"{format_count(self.behind_bytes)} bytes")]
                if self.behind_bytes is not None
                else []
            ),
        ]

    def __str__(self) -> str:
        done = "" if self.ok else ", stopped early"
        again = f" (+{format_count(self.rows_reread)} read again)" if self.rows_reread else ""
        return (
            f"sync {self.name}: {self.kind} pass{done}, {format_count(self.rows_read)} rows read"
            f"{again}, "
            f"{format_count(self.keys_written)} keys written, "
            f"{format_count(self.keys_deleted)} deleted in {format_seconds(self.duration_seconds)}"
            f" ({format_count(self.rows_per_second)} rows/s), checkpoint {self.checkpoint}"
        )

    def __repr__(self) -> str:
        return (
            f"SyncReport(name={self.name!r}, kind={self.kind!r}, rows_read={self.rows_read}, "
            f"rows_reread={self.rows_reread}, rows_checked={self.rows_checked}, "
            f"keys_written={self.keys_written}, keys_deleted={self.keys_deleted}, "
            f"duration_seconds={self.duration_seconds:.3f}, "
            f"rows_per_second={self.rows_per_second:.0f}, checkpoint={self.checkpoint!r}, "
            f"lag_seconds={self.lag_seconds:.3f}, ok={self.ok})"
        )

    def _repr_html_(self) -> str:
        return html_table(f"SyncReport: {self.name}", self._rows())

    def summary(self) -> dict[str, Any]:
        """The fields a monitor reads back through :class:`SyncStatus` ``.last_pass``."""
        return {
            "kind": self.kind,
            "rows_read": self.rows_read,
            "rows_reread": self.rows_reread,
            "keys_written": self.keys_written,
            "keys_deleted": self.keys_deleted,
            "duration_seconds": round(self.duration_seconds, 6),
        }


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """A sync's state as stored in the cache, readable by any process (see docs/sync.md)."""

    name: str
    checkpoint: str | int | float | None
    checkpoint_committed_at: dt.datetime | None
    last_success_at: dt.datetime | None
    synced_as_of: dt.datetime | None
    last_pass: dict[str, Any] | None
    full_pass_in_progress: bool
    lock_holder: str | None
    horizon: str | None = None
    """How the last pass bounded late commits: ``"open transactions"`` (INNODB_TRX and
    PROCESSLIST), ``"fixed delay (no PROCESS privilege)"`` (``overlap`` seconds of the
    database's clock) or ``"newest less overlap"`` (other databases and column types);
    ``"binary log"`` for binlog syncs."""
    behind_bytes: int | None = None
    """Binlog syncs: bytes of binary log between the checkpoint and the log's end when the
    checkpoint was written (0: caught up); None for polling syncs."""

    def lag_seconds(self, now: dt.datetime | None = None) -> float | None:
        """Seconds from ``synced_as_of`` to ``now`` (default: the current time); None if no pass
        has succeeded yet."""
        if self.synced_as_of is None:
            return None
        return ((now or utc_now()) - self.synced_as_of).total_seconds()

    def __repr__(self) -> str:
        return (
            f"SyncStatus(name={self.name!r}, checkpoint={self.checkpoint!r}, "
            f"last_success_at={self.last_success_at!r}, lag_seconds={self.lag_seconds()!r}, "
            f"full_pass_in_progress={self.full_pass_in_progress}, "
            f"lock_holder={self.lock_holder!r})"
        )

    def _repr_html_(self) -> str:
        lag = self.lag_seconds()
        return html_table(
            f"SyncStatus: {self.name}",
            [
                ("checkpoint", self.checkpoint),
                ("checkpoint committed at", self.checkpoint_committed_at),
                ("last success at", self.last_success_at),
                ("lag", "never synced" if lag is None else format_seconds(lag)),
                ("last pass", describe_pass(self.last_pass)),
                ("full pass in progress", self.full_pass_in_progress),
                ("late commits bounded by", self.horizon),
                ("lock holder", self.lock_holder),
            ],
        )


def describe_pass(summary: dict[str, Any] | None) -> str:
    """``full: 300,000 rows read, 300,000 keys written, 0 deleted in 12.3 s`` from a stored
    last-pass summary (fields may be missing in one written by an older version)."""
    if not summary:
        return "none yet"

    def count(field: str) -> str:
        value = summary.get(field)
        return f"{value:,}" if isinstance(value, int) else "?"

    duration = summary.get("duration_seconds")
    took = f" in {format_seconds(duration)}" if isinstance(duration, int | float) else ""
    return (
        f"{summary.get('kind') or 'pass'}: {count('rows_read')} rows read, "
        f"{count('keys_written')} keys written, {count('keys_deleted')} deleted{took}"
    )


def describe_holder(data: bytes | None) -> str | None:
    """``host pid N since TIME`` from a lock value."""
    if data is None:
        return None
    try:
        holder = orjson.loads(data)
        return f"{holder['host']} pid {holder['pid']} since {holder['since']}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "an unknown holder"


def _load(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def read_sync_status(cache: CacheBackend, name: str) -> SyncStatus:
    """The state of sync ``name`` (by default its table's name) as stored in ``cache``: the
    checkpoint and when it was committed, the last successful pass, and any running holder."""
    checkpoint_key, last_key, full_key, lock_key = (
        cache.key(meta_key(name, part)) for part in ("checkpoint", "last-pass", "full-pass", "lock")
    )
    checkpoint_data, last_data, full_data, lock_data = cache.get_many_raw(
        [checkpoint_key, last_key, full_key, lock_key]
    )
    checkpoint = _load(checkpoint_data) or {}
    last = _load(last_data) or {}
    summary = last.get("last_pass")
    return SyncStatus(
        name=name,
        checkpoint=checkpoint.get("value"),
        checkpoint_committed_at=_parse_time(checkpoint.get("committed_at")),
        last_success_at=_parse_time(last.get("finished_at")),
        synced_as_of=_parse_time(last.get("started_at")),
        last_pass=(
            {field: summary.get(field) for field in _LAST_PASS_FIELDS}
            if isinstance(summary, dict)
            else None
        ),
        full_pass_in_progress=full_data is not None,
        lock_holder=describe_holder(lock_data),
        horizon=checkpoint.get("horizon"),
        behind_bytes=checkpoint.get("behind_bytes"),
    )
