"""What one pass carries from start to report: the sync, its plan and lock, and its counts."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from .._time import utc_now
from ._checkpoint import write
from ._lock import SyncLock
from ._page import Page
from ._plan import TablePlan
from ._report import SyncReport

if TYPE_CHECKING:
    from ._sync import CacheSync

__all__ = ["Counts", "PassContext"]

log = logging.getLogger("autoops.sync")


@dataclass(slots=True)
class Counts:
    """What a pass has read, checked, written and deleted so far."""

    rows_read: int = 0
    rows_reread: int = 0
    rows_checked: int = 0
    keys_written: int = 0
    keys_deleted: int = 0

    def wrote(self, page: Page, *, reread: bool = False) -> None:
        """Count a page just written."""
        if reread:
            self.rows_reread += page.rows
        else:
            self.rows_read += page.rows
        self.keys_written += page.item_count
        self.keys_deleted += len(page.deletes)


@dataclass(slots=True)
class PassContext:
    """One pass of ``sync``, under ``lock``: its kind, whether it resumes an interrupted full
    pass, when it started, and its counts."""

    sync: CacheSync
    plan: TablePlan
    lock: SyncLock
    kind: Literal["full", "incremental"]
    resumed: bool = False
    clock: float = field(default_factory=time.perf_counter)
    started: dt.datetime = field(default_factory=utc_now)
    counts: Counts = field(default_factory=Counts)

    def stopping(self) -> bool:
        """Whether the pass was asked to stop (it does so after its current batch)."""
        return self.sync._stop.is_set()

    def write_page(self, page: Page, meta: list[tuple[str, bytes]]) -> None:
        """Write ``page`` with its checkpoint ``meta``, under the lock."""
        self.sync._write_page(self.lock, page, meta)

    def write(
        self, *, deletes: list[str] | None = None, meta: list[tuple[str, bytes]] | None = None
    ) -> None:
        """Delete keys and write ``meta`` keys, under the lock."""
        write(self.sync.cache, self.lock, name=self.sync.name, deletes=deletes, meta=meta)

    def report(self, checkpoint: Any, *, ok: bool) -> SyncReport:
        """The pass's report (logged), as it stands."""
        counts = self.counts
        report = SyncReport(
            name=self.sync.name,
            kind=self.kind,
            rows_read=counts.rows_read,
            rows_reread=counts.rows_reread,
            rows_checked=counts.rows_checked,
            keys_written=counts.keys_written,
            keys_deleted=counts.keys_deleted,
            duration_seconds=time.perf_counter() - self.clock,
            started_at=self.started,
            checkpoint=checkpoint,
            ok=ok,
            resumed=self.resumed,
            server_side=self.plan.server_side,
        )
        log.info("%s", report)
        return report

    def finish(self, report: SyncReport, deletes: list[str]) -> None:
        """Record the completed pass (and delete ``deletes``, its markers) in one write."""
        record = {
            "started_at": report.started_at.isoformat(),
            "finished_at": utc_now().isoformat(),
            "last_pass": report.summary(),
        }
        self.write(deletes=deletes, meta=[(self.sync._meta("last-pass"), orjson.dumps(record))])
