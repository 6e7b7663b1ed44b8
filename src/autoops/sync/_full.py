"""Full passes: copy the table by primary key, catch up, then reconcile; resumable."""

from __future__ import annotations

import datetime as dt
import functools
import logging
from typing import TYPE_CHECKING, Any

import orjson

from .._progress import Progress
from .._time import utc_now
from ._census import KeyCensus, SeenKeys
from ._checkpoint import Window, checkpoint_record
from ._incremental import catch_up, horizon, pages_ahead, versions
from ._lock import SyncLock
from ._pass import PassContext
from ._plan import TablePlan, quote_name
from ._reconcile import Reconciler
from ._report import SyncReport

if TYPE_CHECKING:
    from ._sync import CacheSync

__all__ = ["full_pass"]

log = logging.getLogger("autoops.sync")


def full_pass(
    sync: CacheSync, plan: TablePlan, lock: SyncLock, marker: dict[str, Any] | None
) -> SyncReport:
    """A full pass, or the rest of the interrupted one whose ``marker`` is stored."""
    ctx = PassContext(sync, plan, lock, "full", resumed=marker is not None)
    if marker is None:
        marker = {
            "phase": "copy",
            "cursor": None,
            "copied": 0,
            "target": _starting_point(sync, plan),
            "started_at": utc_now().isoformat(),
        }
    ctx.started = dt.datetime.fromisoformat(marker["started_at"])
    seen = SeenKeys(marker["cursor"]) if plan.primary_key.integer else None
    census = None
    if marker["phase"] == "copy" and sync._pages.packed_copy(plan) and not sync.template.suffix:
        census = KeyCensus(sync.cache, sync.cache.key(sync.template.prefix).encode())
        census.start()
    try:
        return _copy_and_reconcile(ctx, marker, seen, census)
    finally:
        if census is not None:
            census.close()


def _copy_and_reconcile(
    ctx: PassContext, marker: dict[str, Any], seen: SeenKeys | None, census: KeyCensus | None
) -> SyncReport:
    sync, plan, counts = ctx.sync, ctx.plan, ctx.counts
    full_key = sync._meta("full-pass")
    if marker["phase"] == "copy":
        log.info("sync %s: full pass %s", sync.name, "resumed" if ctx.resumed else "started")
        # A resumed copy counts the rows its earlier runs copied toward the table's total.
        with Progress(
            f"sync {sync.name}",
            total=sync._pages.estimated_rows(),
            enabled=sync.progress,
            start=marker.get("copied", 0),
        ) as progress:
            for page in pages_ahead(sync._pages.copy_pages(plan, marker["cursor"])):
                marker["cursor"] = page.last_pk
                marker["copied"] = marker.get("copied", 0) + page.rows
                ctx.write_page(page, [(full_key, orjson.dumps(marker))])
                if seen is not None and page.dense is not None:
                    seen.add_range(*page.dense)
                elif seen is not None:
                    seen.add(page.pks, page.last_pk)
                counts.wrote(page)
                progress.advance(page.rows)
                if ctx.stopping():
                    return ctx.report(None, ok=False)
        marker["phase"] = "reconcile"
        meta = [(full_key, orjson.dumps(marker))]
        if marker["target"] is not None:
            record = {**marker["target"], "committed_at": utc_now().isoformat()}
            meta.append((sync._meta("checkpoint"), orjson.dumps(record)))
        ctx.write(meta=meta)
    checkpoint = None
    if marker["target"] is not None:
        # Rows changed while the copy ran (or while it was interrupted) after their page
        # was read: catch up from the checkpoint the copy started at.
        stored = sync.cache.get_raw(sync._meta("checkpoint"))
        record = orjson.loads(stored) if stored is not None else marker["target"]
        checkpoint, completed = catch_up(ctx, record)
        if not completed:
            return ctx.report(checkpoint, ok=False)
    reconciler = Reconciler(
        sync.db,
        sync.cache,
        sync.template,
        plan,
        ctx.lock,
        seen,
        table=sync.table,
        name=sync.name,
        reads=sync._reads,
    )
    if census is not None:
        numbers, others = census.result()
        counts.keys_deleted += reconciler.numbers(numbers)
        counts.keys_deleted += reconciler.keys(others)
    else:
        counts.keys_deleted += reconciler.scan()
    report = ctx.report(checkpoint, ok=True)
    ctx.finish(report, deletes=[full_key])
    return report


def _starting_point(sync: CacheSync, plan: TablePlan) -> dict[str, Any] | None:
    """The checkpoint a full pass starts from: the newest row's position and the settled
    time before its copy reads anything. The versions of the rows between the two are
    remembered (read from the index before the copy), so the catch-up after the copy
    compares versions instead of reading those rows again."""
    if plan.updated is None:
        return None
    quote = functools.partial(quote_name, sync.db)
    updated, pk = quote(plan.updated.name), quote(plan.primary_key.name)
    row = sync.db.query_one(
        f"SELECT {updated} AS updated, {pk} AS pk FROM {quote(sync.table)} "  # noqa: S608
        f"ORDER BY {updated} DESC, {pk} DESC LIMIT 1"
    )
    if row is None or row["updated"] is None:
        return None
    position = (row["updated"], row["pk"])
    settled, source = horizon(sync, plan, position)
    known = versions(sync, plan, (settled, None), position)
    sync._window = None if known is None else Window(position, settled, known)
    return checkpoint_record(position, settled, source, utc_now())
