"""Incremental passes: catching up from a checkpoint, late commits included."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any, Final

import orjson

from .._errors import AuthenticationError, QueryError
from .._pipeline import read_ahead
from .._time import utc_now
from ._checkpoint import State, Window, checkpoint_record
from ._lock import SyncLock
from ._page import Page
from ._pass import PassContext
from ._plan import TablePlan, quote_name, shift_back
from ._report import SyncReport

if TYPE_CHECKING:
    from ._sync import CacheSync

__all__ = ["catch_up", "horizon", "incremental_pass", "pages_ahead", "versions"]

log = logging.getLogger("autoops.sync")

# Past this many rows in the window, a process forgets their versions and the next pass reads
# the window again (a memory bound: about 150 bytes a row).
_WINDOW_LIMIT: Final = 100_000
# Between a statement's start (the time it stamps rows with) and its transaction's start in
# InnoDB (whose trx_started has whole seconds) lies parsing, table opening and rounding.
_HORIZON_MARGIN: Final = dt.timedelta(seconds=2)
_TIME_MS: Final = {True: "TIME_MS", False: "TIME * 1000 + 1000"}
# The age of the oldest transaction that has written and of the oldest running statement that
# may write (plain SELECTs and SHOWs cannot stamp a row). trx_started is in the system time zone.
_OPEN_WORK_SQL: Final = (
    "SELECT (SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_rows_modified > 0) "
    "AS trx_count, "
    "(SELECT TIMESTAMPDIFF(MICROSECOND, MIN(trx_started), "
    "CONVERT_TZ(NOW(6), @@session.time_zone, 'SYSTEM')) FROM information_schema.INNODB_TRX "
    "WHERE trx_rows_modified > 0) AS trx_us, "
    "(SELECT MAX({time_ms}) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
    "AND COMMAND IN ('Query', 'Execute') AND INFO NOT REGEXP "
    "'^[[:space:]]*(SELECT|SHOW|SET STATEMENT group_concat_max_len = [0-9]+ FOR SELECT)') "
    "AS statement_ms"
)
_QUEUE_DEPTH: Final = 2


def pages_ahead(pages: Generator[Page, None, None]) -> Iterator[Page]:
    """Read the next pages in a thread of their own while the caller writes this one; a pass
    that stops waits for the read under way, whose connection it uses next."""
    return read_ahead(pages, _QUEUE_DEPTH, name="autoops-sync-read", join_timeout=None)


def incremental_pass(
    sync: CacheSync, plan: TablePlan, lock: SyncLock, checkpoint: dict[str, Any]
) -> SyncReport:
    """Catch up from ``checkpoint``; a pass that ran to the end is recorded as the last one."""
    ctx = PassContext(sync, plan, lock, "incremental")
    shown, completed = catch_up(ctx, checkpoint)
    report = ctx.report(shown, ok=completed)
    if completed:
        ctx.finish(report, deletes=[])
    return report


def catch_up(ctx: PassContext, record: dict[str, Any]) -> tuple[Any, bool]:
    """Write what changed since the checkpoint ``record``, each batch with its checkpoint;
    returns the checkpoint as shown in reports and whether it ran to the end.

    First the window of the last pass (rows stamped from its settled time to its position,
    which a transaction still open then may have joined since): with the versions
    remembered, only rows whose version differs are read; otherwise the window is read
    again (counted as re-reads). Then every row after the position. The new settled time
    is the horizon taken before anything was read."""
    sync, plan, counts = ctx.sync, ctx.plan, ctx.counts
    state = State.load(record, sync.overlap)
    newest, source = horizon(sync, plan, state.position)
    window, sync._window = sync._window, None
    if window is not None and (window.position, window.settled) != (
        state.position,
        state.settled,
    ):
        window = None
    checkpoint_key = sync._meta("checkpoint")
    settled = newest if state.settled is None else max(state.settled, newest)
    remembered: dict[Any, Any] | None = {}
    position = state.position
    pages: Generator[Page, None, None]
    if state.settled is not None and not state.settled > position[0]:
        lower = (state.settled, None)
        known = versions(sync, plan, lower, position)
        reread = window is None or known is None
        if window is not None and known is not None:
            counts.rows_checked += len(known)
            written = window.versions
            pages = sync._pages.keys(
                plan, [pk for pk, at in known.items() if written.get(pk) != at]
            )
        else:
            pages = sync._pages.changes(plan, lower, position)
        remembered = None if known is None else dict(known)
        meta = [(checkpoint_key, orjson.dumps(record))]
        for page in pages_ahead(pages):
            ctx.write_page(page, meta)
            counts.wrote(page, reread=reread)
            if ctx.stopping():
                return record["value"], False
    unsettled = versions(sync, plan, position, None, since=newest)
    if unsettled is None or remembered is None:
        remembered = None
    else:
        remembered.update(unsettled)
    for page in pages_ahead(sync._pages.changes(plan, position, None)):
        position = (page.last_updated, page.last_pk)
        current = checkpoint_record(position, state.settled, source, utc_now())
        ctx.write_page(page, [(checkpoint_key, orjson.dumps(current))])
        counts.wrote(page)
        if ctx.stopping():
            return current["value"], False
    final = checkpoint_record(position, settled, source, utc_now())
    ctx.write(meta=[(checkpoint_key, orjson.dumps(final))])
    if remembered is not None:
        sync._window = Window(
            position,
            settled,
            {pk: stamp for pk, stamp in remembered.items() if not stamp < settled},
        )
    return final["value"], True


def horizon(sync: CacheSync, plan: TablePlan, position: tuple[Any, Any]) -> tuple[Any, str]:
    """The horizon (see :func:`_measure_horizon`); a sync reading from a replica then waits
    for one to have applied everything the primary had committed by then."""
    found = _measure_horizon(sync, plan, position)
    sync._reads.mark()
    return found


def _measure_horizon(
    sync: CacheSync, plan: TablePlan, position: tuple[Any, Any]
) -> tuple[Any, str]:
    """The time before which every row is committed, taken before a pass reads, and how
    it was found. On MySQL/MariaDB with a DATETIME/TIMESTAMP column: the server's clock
    less the age of the oldest open transaction that has written (INNODB_TRX) or of the
    oldest running statement (PROCESSLIST), less a margin, and never more than
    ``overlap`` back; without the PROCESS privilege to see those, the clock less
    ``overlap``. Otherwise the newest value less ``overlap``."""
    assert plan.updated is not None
    db = sync.db
    if db.dialect != "mysql" or plan.updated.data_type not in ("datetime", "timestamp"):
        return shift_back(position[0], sync.overlap), "newest less overlap"
    row = db.query_one("SELECT NOW(6) AS now")
    assert row is not None
    now: dt.datetime = row["now"]
    delay = dt.timedelta(seconds=sync.overlap)
    if sync._process is not False:
        try:
            work = db.query_one(_OPEN_WORK_SQL.format(time_ms=_TIME_MS[plan.mariadb]))
        except (AuthenticationError, QueryError) as exc:
            log.warning(
                "sync %s: cannot see open transactions (%s); late commits are waited for "
                "a fixed %g s (overlap). Grant PROCESS to shorten that",
                sync.name,
                exc,
                sync.overlap,
            )
            sync._process = False
        else:
            sync._process = True
            assert work is not None
            if work["trx_count"] and work["trx_us"] is None:
                return now - delay, "fixed delay (open transactions unreadable)"
            oldest = max(
                dt.timedelta(microseconds=int(work["trx_us"] or 0)),
                dt.timedelta(milliseconds=float(work["statement_ms"] or 0)),
            )
            return now - min(delay, oldest + _HORIZON_MARGIN), "open transactions"
    return now - delay, "fixed delay (no PROCESS privilege)"


def versions(
    sync: CacheSync,
    plan: TablePlan,
    lower: tuple[Any, Any] | None,
    upper: tuple[Any, Any] | None,
    since: Any = None,
) -> dict[Any, Any] | None:
    """The ``(pk -> updated)`` versions of the rows between two positions (and stamped at
    or after ``since``), from the index; None when there are too many to remember."""
    assert plan.updated is not None
    where, params = plan.keyset_where(sync.db, lower, upper)
    if since is not None:
        where += f" AND {quote_name(sync.db, plan.updated.name)} >= %s"
        params.append(since)
    rows = sync.db.query(
        plan.versions_sql(sync.db, where, _WINDOW_LIMIT + 1), params, **sync._reads.options()
    )
    if len(rows) > _WINDOW_LIMIT:
        return None
    return {row["pk"]: row["updated"] for row in rows}
