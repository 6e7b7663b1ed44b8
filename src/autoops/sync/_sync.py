"""CacheSync: keep a cache in step with a table, pass after pass, correct after any crash."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import queue
import random
import signal
import threading
import time
from array import array
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final

import orjson

from .._errors import AutoOpsError, ConfigError, LockHeldError
from .._progress import Progress
from ..cache import CacheClient, JsonCodec, RedisCache
from ..cache._client import TTL
from ..cache._resp import pack_arguments
from ..db import DbClient
from ._census import KeyCensus, SeenKeys, all_within
from ._lock import SyncLock
from ._plan import KeyTemplate, TablePlan, shift_back
from ._report import SyncReport, SyncStatus, meta_key, read_sync_status, utc_now

__all__ = ["CacheSync"]

log = logging.getLogger("autoops.sync")

_RECONCILE_CHUNK: Final = 1000
_QUEUE_DEPTH: Final = 2


@dataclass(slots=True)
class _Page:
    """One batch of rows, encoded and ready to write."""

    rows: int
    last_pk: Any
    last_updated: Any
    pks: list[Any] = field(default_factory=list)
    dense: tuple[int, int] | None = None
    item_count: int = 0
    packed: bytes = b""
    items: list[tuple[str, bytes]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Counts:
    rows_read: int = 0
    keys_written: int = 0
    keys_deleted: int = 0


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END: Final = object()


def _checkpoint_record(value: Any, committed_at: dt.datetime) -> bytes:
    stored: int | float | str
    if isinstance(value, dt.datetime | dt.date):
        kind, stored = ("datetime" if isinstance(value, dt.datetime) else "date"), value.isoformat()
    elif isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(
            f"updated_column holds values of type {type(value).__name__}; use a time or a number"
        )
    else:
        kind, stored = type(value).__name__, value
    return orjson.dumps({"value": stored, "type": kind, "committed_at": committed_at.isoformat()})


def _checkpoint_value(record: dict[str, Any]) -> Any:
    value = record.get("value")
    if record.get("type") == "datetime" and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    if record.get("type") == "date" and isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value


class CacheSync:
    """Keep ``cache`` in step with ``table``: one key per row (``key="users:{id}"``), its value
    the JSON object of the cached ``columns`` as the cache's codec writes it, so
    ``cache.get("users:7")`` returns the row as a dict (BIGINTs beyond 2**53 - 1 as strings
    unless the codec says ``safe_integers=False``, times at the column's declared precision, JSON
    columns embedded: see docs/clients.md).

    A full pass pages the table by primary key; once it has finished, passes are incremental
    (rows whose ``updated_column`` is at or past the checkpoint less ``overlap`` seconds, so a row
    committed late with an older time is not missed). Every batch is written in one atomic step
    with the checkpoint that covers it, and only while this runner holds the sync's lock, so a
    crash or a second runner can neither skip rows nor write an older version over a newer one.
    Reconciliation (on full passes, or :meth:`reconcile`) deletes keys whose rows are gone;
    ``deleted_column`` (soft deletes) deletes them during incremental passes too.
    """

    def __init__(
        self,
        db: DbClient,
        cache: CacheClient,
        *,
        table: str,
        key: str,
        columns: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        primary_key: str = "id",
        updated_column: str | None = None,
        deleted_column: str | None = None,
        ttl: TTL | None = None,
        batch_size: int = 5000,
        overlap: float = 60.0,
        name: str | None = None,
        lock_ttl: float = 30.0,
        server_side: bool = True,
        readers: int = 2,
        progress: bool | None = None,
    ) -> None:
        for what, identifier in (
            ("table", table),
            ("primary_key", primary_key),
            *(("column", column) for column in columns or ()),
            *(("exclude", column) for column in exclude),
            ("updated_column", updated_column),
            ("deleted_column", deleted_column),
        ):
            if identifier is not None:
                try:
                    db.quote_identifier(identifier)
                except ConfigError as exc:
                    raise ConfigError(f"CacheSync {what}: {exc}") from None
        if isinstance(columns, str) or isinstance(exclude, str):
            raise ConfigError("columns and exclude take a list of column names, not a string")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if isinstance(overlap, bool) or not isinstance(overlap, int | float) or overlap < 0:
            raise ConfigError(f"overlap must be a number of seconds >= 0, got {overlap!r}")
        if not isinstance(readers, int) or readers < 1:
            raise ConfigError(f"readers must be a whole number >= 1, got {readers!r}")
        if not isinstance(lock_ttl, int | float) or lock_ttl < 1:
            raise ConfigError(f"lock_ttl must be at least 1 second, got {lock_ttl!r}")
        self.db = db
        self.cache = cache
        self.table = table
        self.template = KeyTemplate.parse(key, primary_key)
        self.key_template = key
        self.columns = None if columns is None else tuple(columns)
        self.exclude = tuple(exclude)
        self.primary_key = primary_key
        self.updated_column = updated_column
        self.deleted_column = deleted_column
        self.ttl_ms = cache._ttl_ms(ttl)
        self.batch_size = batch_size
        self.overlap = float(overlap)
        self.name = name or table
        self.lock_ttl = float(lock_ttl)
        self.server_side = server_side
        self.readers = readers
        self.progress = progress
        self._plan: TablePlan | None = None
        self._stop = threading.Event()
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autoops-sync-read")
        self._page_readers = ThreadPoolExecutor(
            max_workers=readers, thread_name_prefix="autoops-sync-page"
        )

    # public API -----------------------------------------------------------------------------

    def plan(self) -> TablePlan:
        """The columns and SQL this sync uses, resolved against the table (cached)."""
        if self._plan is None:
            self._plan = TablePlan.build(
                self.db,
                self.table,
                self.template,
                columns=self.columns,
                exclude=self.exclude,
                primary_key=self.primary_key,
                updated_column=self.updated_column,
                deleted_column=self.deleted_column,
                server_side=self.server_side and isinstance(self.cache.codec, JsonCodec),
                codec=self.cache.codec,
            )
        return self._plan

    def run_once(self, full: bool = False, *, handle_signals: bool = False) -> SyncReport:
        """One pass: full when asked, when there is no checkpoint yet (or no updated_column),
        or to finish an interrupted full pass; otherwise incremental. ``handle_signals`` makes
        SIGINT/SIGTERM stop the pass after its current batch (main thread only).

        Raises :class:`LockHeldError` if another runner holds the sync's lock.
        """
        self._stop.clear()
        with self._signals_stop(handle_signals):
            return self._run_pass(full)

    def run_forever(
        self,
        interval: float = 60.0,
        *,
        jitter: float = 0.1,
        max_backoff: float = 900.0,
        stop_event: threading.Event | None = None,
        on_report: Callable[[SyncReport], None] | None = None,
        handle_signals: bool = True,
    ) -> None:
        """Run passes every ``interval`` seconds (± ``jitter`` as a fraction) until
        :meth:`stop`, ``stop_event``, SIGINT or SIGTERM; a pass being stopped finishes its
        batch and commits its checkpoint. After a failure the wait doubles (from at least a
        second), up to ``max_backoff``. A :class:`ConfigError` is raised at once: retrying
        cannot fix it."""
        if not interval >= 0 or not 0 <= jitter < 1:
            raise ConfigError("interval must be >= 0 seconds and jitter from 0 up to 1")
        self._stop.clear()
        failures = 0
        with self._signals_stop(handle_signals), self._watch(stop_event):
            while not self._stop.is_set() and not (stop_event and stop_event.is_set()):
                delay = interval
                try:
                    report = self._run_pass(full=False)
                    failures = 0
                    if on_report is not None:
                        on_report(report)
                except ConfigError:
                    raise
                except LockHeldError as exc:
                    log.info("%s", exc)
                except AutoOpsError as exc:
                    failures += 1
                    delay = min(max_backoff, max(interval, 1.0) * 2 ** (failures - 1))
                    log.error("sync %s: pass failed (%d in a row): %s", self.name, failures, exc)
                self._stop.wait(delay * (1 + random.uniform(-jitter, jitter)))

    def stop(self) -> None:
        """Ask the running pass (or :meth:`run_forever`) to stop after its current batch."""
        self._stop.set()

    def reconcile(self) -> SyncReport:
        """Delete the cached keys whose rows are gone (or soft-deleted), under the lock."""
        plan = self.plan()
        started = utc_now()
        clock = time.perf_counter()
        with self._lock() as lock:
            deleted = self._reconcile(plan, lock, None)
            return SyncReport(
                name=self.name,
                kind="reconcile",
                rows_read=0,
                keys_written=0,
                keys_deleted=deleted,
                duration_seconds=time.perf_counter() - clock,
                started_at=started,
                checkpoint=self.status().checkpoint,
                server_side=plan.server_side,
            )

    def status(self) -> SyncStatus:
        """This sync's stored state; see :func:`autoops.read_sync_status`."""
        return read_sync_status(self.cache, self.name)

    def close(self) -> None:
        """Stop the reader thread (the clients stay open: they are the caller's)."""
        self._reader.shutdown(wait=True)
        self._page_readers.shutdown(wait=True)

    def __enter__(self) -> CacheSync:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"CacheSync(table={self.table!r}, key={self.key_template!r}, "
            f"name={self.name!r}, db={self.db!r}, cache={self.cache!r})"
        )

    # passes ---------------------------------------------------------------------------------

    def _meta(self, part: str) -> str:
        return self.cache.key(meta_key(self.name, part))

    def _lock(self) -> SyncLock:
        return SyncLock(self.cache, meta_key(self.name, "lock"), self.lock_ttl, f"sync {self.name}")

    def _run_pass(self, full: bool) -> SyncReport:
        plan = self.plan()
        with self._lock() as lock:
            full_data, checkpoint_data = self.cache._get_many(
                [self._meta("full-pass"), self._meta("checkpoint")]
            )
            if full_data is not None:
                return self._full_pass(plan, lock, orjson.loads(full_data))
            checkpoint = orjson.loads(checkpoint_data) if checkpoint_data is not None else None
            if full or plan.updated is None or checkpoint is None or checkpoint["value"] is None:
                return self._full_pass(plan, lock, None)
            return self._incremental_pass(plan, lock, checkpoint)

    def _full_pass(
        self, plan: TablePlan, lock: SyncLock, marker: dict[str, Any] | None
    ) -> SyncReport:
        clock = time.perf_counter()
        resumed = marker is not None
        if marker is None:
            target = self._newest_updated(plan)
            marker = {
                "phase": "copy",
                "cursor": None,
                "target": None
                if target is None
                else orjson.loads(_checkpoint_record(target, utc_now())),
                "started_at": utc_now().isoformat(),
            }
        started = dt.datetime.fromisoformat(marker["started_at"])
        counts = _Counts()
        seen = SeenKeys(marker["cursor"]) if plan.primary_key.integer else None
        census = None
        if marker["phase"] == "copy" and self._packed_copy(plan) and not self.template.suffix:
            census = KeyCensus(self.cache, self.cache.key(self.template.prefix).encode())
            census.start()
        try:
            return self._copy_and_reconcile(
                plan, lock, marker, seen, census, counts, clock, started, resumed
            )
        finally:
            if census is not None:
                census.close()

    def _copy_and_reconcile(
        self,
        plan: TablePlan,
        lock: SyncLock,
        marker: dict[str, Any],
        seen: SeenKeys | None,
        census: KeyCensus | None,
        counts: _Counts,
        clock: float,
        started: dt.datetime,
        resumed: bool,
    ) -> SyncReport:
        full_key = self._meta("full-pass")
        if marker["phase"] == "copy":
            log.info("sync %s: full pass %s", self.name, "resumed" if resumed else "started")
            with Progress(
                f"sync {self.name}", total=self._estimated_rows(plan), enabled=self.progress
            ) as progress:
                pages = (
                    self._read_packed_pages(plan, marker["cursor"])
                    if self._packed_copy(plan)
                    else self._read_pages(plan, None, marker["cursor"])
                )
                for page in self._pipeline(pages):
                    marker["cursor"] = page.last_pk
                    self._write_page(lock, page, [(full_key, orjson.dumps(marker))])
                    if seen is not None and page.dense is not None:
                        seen.add_range(*page.dense)
                    elif seen is not None:
                        seen.add(page.pks, page.last_pk)
                    counts.rows_read += page.rows
                    counts.keys_written += page.item_count
                    counts.keys_deleted += len(page.deletes)
                    progress.advance(page.rows)
                    if self._stop.is_set():
                        return self._report(
                            plan, "full", counts, clock, started, None, False, resumed
                        )
            marker["phase"] = "reconcile"
            meta = [(full_key, orjson.dumps(marker))]
            if marker["target"] is not None:
                record = {**marker["target"], "committed_at": utc_now().isoformat()}
                meta.append((self._meta("checkpoint"), orjson.dumps(record)))
            self._write(lock, meta=meta)
        checkpoint = None
        if marker["target"] is not None:
            # Rows changed while the copy ran (or while it was interrupted) after their page
            # was read: catch up from the checkpoint the copy started at.
            stored = self.cache._get(self._meta("checkpoint"))
            record = orjson.loads(stored) if stored is not None else marker["target"]
            checkpoint, completed = self._catch_up(plan, lock, record, counts)
            if not completed:
                return self._report(
                    plan, "full", counts, clock, started, checkpoint, False, resumed
                )
        if census is not None:
            numbers, others = census.result()
            counts.keys_deleted += self._reconcile_numbers(plan, lock, seen, numbers)
            counts.keys_deleted += self._reconcile_keys(plan, lock, seen, others)
        else:
            counts.keys_deleted += self._reconcile(plan, lock, seen)
        report = self._report(plan, "full", counts, clock, started, checkpoint, True, resumed)
        self._finish(lock, report, deletes=[full_key])
        return report

    def _catch_up(
        self, plan: TablePlan, lock: SyncLock, checkpoint: dict[str, Any], counts: _Counts
    ) -> tuple[Any, bool]:
        """Write the rows changed since ``checkpoint`` less the overlap, each batch with its
        checkpoint; returns the checkpoint as shown in reports and whether it ran to the end."""
        newest = _checkpoint_value(checkpoint)
        lower = shift_back(newest, self.overlap)
        checkpoint_key = self._meta("checkpoint")
        completed = True
        for page in self._pipeline(self._read_pages(plan, lower, None)):
            if page.last_updated is not None and page.last_updated > newest:
                newest = page.last_updated
            record = _checkpoint_record(newest, utc_now())
            self._write_page(lock, page, [(checkpoint_key, record)])
            counts.rows_read += page.rows
            counts.keys_written += page.item_count
            counts.keys_deleted += len(page.deletes)
            if self._stop.is_set():
                completed = False
                break
        return orjson.loads(_checkpoint_record(newest, utc_now()))["value"], completed

    def _incremental_pass(
        self, plan: TablePlan, lock: SyncLock, checkpoint: dict[str, Any]
    ) -> SyncReport:
        clock = time.perf_counter()
        started = utc_now()
        counts = _Counts()
        shown, completed = self._catch_up(plan, lock, checkpoint, counts)
        report = self._report(plan, "incremental", counts, clock, started, shown, completed, False)
        if completed:
            self._finish(lock, report, deletes=[])
        return report

    def _report(
        self,
        plan: TablePlan,
        kind: str,
        counts: _Counts,
        clock: float,
        started: dt.datetime,
        checkpoint: Any,
        completed: bool,
        resumed: bool,
    ) -> SyncReport:
        report = SyncReport(
            name=self.name,
            kind=kind,
            rows_read=counts.rows_read,
            keys_written=counts.keys_written,
            keys_deleted=counts.keys_deleted,
            duration_seconds=time.perf_counter() - clock,
            started_at=started,
            checkpoint=checkpoint,
            completed=completed,
            resumed=resumed,
            server_side=plan.server_side,
        )
        log.info("%s", report)
        return report

    def _finish(self, lock: SyncLock, report: SyncReport, deletes: list[str]) -> None:
        record = {
            "started_at": report.started_at.isoformat(),
            "finished_at": utc_now().isoformat(),
            "last_pass": report.summary(),
        }
        self._write(lock, deletes=deletes, meta=[(self._meta("last-pass"), orjson.dumps(record))])

    # reading --------------------------------------------------------------------------------

    def _newest_updated(self, plan: TablePlan) -> Any:
        if plan.updated is None:
            return None
        column = self.db.quote_identifier(plan.updated.name)
        row = self.db.query_one(
            f"SELECT MAX({column}) AS newest FROM {self.db.quote_identifier(self.table)}"  # noqa: S608
        )
        return None if row is None else row["newest"]

    def _estimated_rows(self, plan: TablePlan) -> int | None:
        if self.db.dialect != "mysql":
            return None
        schema, _, name = self.table.rpartition(".")
        row = self.db.query_one(
            "SELECT TABLE_ROWS AS n FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s",
            (schema or None, name),
        )
        return int(row["n"]) if row and row["n"] else None

    def _read_pages(self, plan: TablePlan, lower: Any, cursor: Any) -> Generator[_Page, None, None]:
        """Pages in key order: by primary key after ``cursor`` (full), or by (updated, pk) from
        ``lower`` (incremental, when ``lower`` is not None)."""
        incremental = lower is not None
        limit = self.batch_size
        key_parts = (self.cache.key(self.template.prefix), self.template.suffix)
        last_pk, last_updated = cursor, lower
        first = cursor is None
        while not self._stop.is_set():
            sql, params = plan.select_sql(
                self.db, incremental=incremental, first=first, limit=limit, key_parts=key_parts
            )
            if incremental:
                params += [lower] if first else [last_updated, last_updated, last_pk]
            elif not first:
                params.append(last_pk)
            rows = self.db.query(sql, params)
            if not rows:
                return
            page = self._encode_server(plan, rows) if plan.server_side else self._encode(plan, rows)
            yield page
            if len(rows) < limit:
                return
            first = False
            last_pk, last_updated = page.last_pk, page.last_updated

    def _packed_copy(self, plan: TablePlan) -> bool:
        return (
            plan.server_side
            and plan.deleted is None
            and plan.primary_key.integer
            and isinstance(self.cache, RedisCache)
        )

    def _read_packed_pages(self, plan: TablePlan, cursor: Any) -> Generator[_Page, None, None]:
        """Full-pass pages built whole by the server (see ``TablePlan.packed_page_sql``), cut
        ahead by primary key and read by ``readers`` connections at once, yielded in order."""
        pending: collections.deque[Future[list[_Page]]] = collections.deque()
        low, exhausted = cursor, False
        try:
            while not self._stop.is_set() and (pending or not exhausted):
                while not exhausted and len(pending) < self.readers + 1:
                    first = low is None
                    row = self.db.query_one(
                        plan.boundary_sql(self.db, first=first, limit=self.batch_size),
                        None if first else [low],
                    )
                    count = int(row["n"]) if row is not None else 0
                    if count == 0:
                        exhausted = True
                        break
                    assert row is not None
                    high = int(row["last_pk"])
                    pending.append(self._page_readers.submit(self._packed_range, plan, low, high))
                    exhausted = count < self.batch_size
                    low = high
                if pending:
                    yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            for future in pending:
                with contextlib.suppress(BaseException):
                    future.result()

    def _packed_range(self, plan: TablePlan, low: Any, high: int) -> list[_Page]:
        """The rows with ``low < pk <= high`` as packed pages: one, unless the server had to
        cut its GROUP_CONCAT short (a page larger than it lets one value be), in which case
        the range is read again in smaller pages."""
        key_parts = (self.cache.key(self.template.prefix), self.template.suffix)
        limit = self.batch_size
        pages: list[_Page] = []
        while True:
            first = low is None
            sql, params = plan.packed_page_sql(
                self.db, first=first, limit=limit, key_parts=key_parts, bounded=True
            )
            row = self.db.query_one(sql, [*params, *([] if first else [low]), high])
            if row is None or not row["n"]:
                return pages
            packed = row["packed"] or b""
            if len(packed) != int(row["size"]):
                if limit == 1:
                    raise ConfigError(
                        f"a row of {self.table!r} is too large to be read whole "
                        "(max_allowed_packet); use server_side=False"
                    )
                limit = max(1, limit // 2)
                continue
            count = int(row["n"])
            first_pk, last_pk = int(row["first_pk"]), int(row["last_pk"])
            dense = count == last_pk - first_pk + 1
            pks: list[Any] = []
            if not dense:
                # Rare on tables without deletes; the keys are read again, from the index.
                keys_sql = plan.keys_in_range_sql(self.db, first=first)
                bounds = [last_pk] if first else [low, last_pk]
                pks = [key["pk"] for key in self.db.query(keys_sql, bounds)]
            pages.append(
                _Page(
                    rows=count,
                    last_pk=last_pk,
                    last_updated=None,
                    pks=sorted(pks),
                    dense=(first_pk, last_pk) if dense else None,
                    item_count=count,
                    packed=packed,
                )
            )
            if last_pk >= high:
                return pages
            low = last_pk

    def _encode(self, plan: TablePlan, rows: list[dict[str, Any]]) -> _Page:
        pk_name = plan.primary_key.name
        prefix = self.cache.key(self.template.prefix)
        suffix = self.template.suffix
        encode = plan.row_encoder(self.cache.codec)
        deleted_name = plan.deleted.name if plan.deleted is not None else None
        items: list[tuple[str, bytes]] = []
        deletes: list[str] = []
        pks: list[Any] = []
        for row in rows:
            pk = row[pk_name]
            if not isinstance(pk, int | str) or isinstance(pk, bool):
                raise ConfigError(
                    f"primary key {pk_name!r} of {self.table!r} holds {type(pk).__name__} values; "
                    "CacheSync keys rows by integer or text primary keys"
                )
            key = f"{prefix}{pk}{suffix}"
            if deleted_name is not None and plan.is_deleted(row[deleted_name]):
                deletes.append(key)
            else:
                items.append((key, encode(row)))
                pks.append(pk)
        last = rows[-1]
        page = _Page(
            rows=len(rows),
            last_pk=last[pk_name],
            last_updated=last[plan.updated.name] if plan.updated is not None else None,
            pks=pks,
            item_count=len(items),
            deletes=deletes,
        )
        if isinstance(self.cache, RedisCache):
            page.packed = pack_arguments(
                [part for key, value in items for part in (key.encode(), value)]
            )
        else:
            page.items = items
        return page

    def _encode_server(self, plan: TablePlan, rows: list[dict[str, Any]]) -> _Page:
        live = rows
        deletes: list[str] = []
        if plan.deleted is not None:
            live = [row for row in rows if not row["deleted"]]
            deletes = [row["k"].decode() for row in rows if row["deleted"]]
        last = rows[-1]
        page = _Page(
            rows=len(rows),
            last_pk=last["pk"],
            last_updated=last.get("updated"),
            pks=[row["pk"] for row in live],
            item_count=len(live),
            deletes=deletes,
        )
        if isinstance(self.cache, RedisCache):
            page.packed = b"".join(
                [
                    b"$%d\r\n%b\r\n$%d\r\n%b\r\n"
                    % (len(row["k"]), row["k"], len(row["v"]), row["v"])
                    for row in live
                ]
            )
        else:
            page.items = [(row["k"].decode(), row["v"]) for row in live]
        return page

    def _pipeline(self, pages: Generator[_Page, None, None]) -> Iterator[_Page]:
        """Read the next pages in the reader thread while the caller writes this one."""
        channel: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_DEPTH)
        cancel = threading.Event()

        def put(item: object) -> None:
            while not cancel.is_set():
                try:
                    channel.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def produce() -> None:
            try:
                for page in pages:
                    put(page)
                    if cancel.is_set():
                        return
                put(_END)
            except BaseException as exc:
                put(_Failed(exc))

        future = self._reader.submit(produce)
        try:
            while True:
                item = channel.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                assert isinstance(item, _Page)
                yield item
        finally:
            cancel.set()
            future.result()
            pages.close()

    # writing --------------------------------------------------------------------------------

    def _write_page(self, lock: SyncLock, page: _Page, meta: list[tuple[str, bytes]]) -> None:
        if isinstance(self.cache, RedisCache):
            ok = self.cache.write_fenced_packed(
                lock.fence,
                page.packed,
                page.item_count,
                self.ttl_ms,
                pack_arguments([key.encode() for key in page.deletes]),
                len(page.deletes),
                meta,
            )
        else:
            ok = self.cache._write_fenced(lock.fence, page.items, self.ttl_ms, page.deletes, meta)
        if not ok:
            self._lost_lock(lock)

    def _write(
        self,
        lock: SyncLock,
        *,
        deletes: list[str] | None = None,
        meta: list[tuple[str, bytes]] | None = None,
    ) -> None:
        if not self.cache._write_fenced(lock.fence, [], None, deletes or [], meta or []):
            self._lost_lock(lock)

    def _lost_lock(self, lock: SyncLock) -> None:
        raise LockHeldError(
            f"sync {self.name} lost its lock {lock.key} in {self.cache.location} (it expired "
            "while this process was paused, or was taken over): the batch was not written. The "
            "checkpoint covers every batch written before, so the next pass resumes from it"
        )

    # reconciliation -------------------------------------------------------------------------

    def _reconcile(self, plan: TablePlan, lock: SyncLock, seen: SeenKeys | None) -> int:
        """Delete the keys under the sync's prefix whose rows are gone. Keys whose primary key
        lies in the range this full pass read are checked against ``seen``; the others in SQL,
        a chunk at a time. Keys that do not parse as one of this sync's keys are left alone."""
        prefix = self.cache.key(self.template.prefix).encode()
        known = seen is not None and seen.usable and seen.upto is not None
        interval = seen.interval if known and seen is not None else None
        deleted = 0
        for keys in self.cache._scan_prefix(prefix.decode(), 10_000):
            fast = interval is not None and not self.template.suffix
            if fast and interval is not None and all_within(keys, prefix, interval):
                continue
            deleted += self._reconcile_keys(plan, lock, seen, keys)
        return deleted

    def _reconcile_keys(
        self, plan: TablePlan, lock: SyncLock, seen: SeenKeys | None, keys: list[bytes]
    ) -> int:
        """Reconcile one batch of full keys (bytes), parsing each."""
        prefix = self.cache.key(self.template.prefix).encode()
        suffix = self.template.suffix.encode()
        namespace = len(self.cache.key(""))
        integer = plan.primary_key.integer
        known = seen is not None and seen.usable and seen.upto is not None
        unknown: dict[Any, bytes] = {}
        gone: list[bytes] = []
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
            if known and seen is not None and seen.covers(value):
                if value not in seen:
                    gone.append(key)
            else:
                unknown[value] = key
        return self._delete_keys(lock, gone) + self._delete_missing(plan, lock, unknown)

    def _reconcile_numbers(
        self, plan: TablePlan, lock: SyncLock, seen: SeenKeys | None, numbers: array[int]
    ) -> int:
        """Reconcile the integer keys a census gathered (the key is the prefix + the number)."""
        prefix = self.cache.key(self.template.prefix).encode()
        known = seen is not None and seen.usable and seen.upto is not None
        interval = seen.interval if known and seen is not None else None
        deleted = 0
        for start in range(0, len(numbers), 10_000):
            chunk = numbers[start : start + 10_000]
            if interval is not None and interval[0] <= min(chunk) and max(chunk) <= interval[1]:
                continue
            unknown: dict[Any, bytes] = {}
            gone: list[bytes] = []
            for value in chunk:
                if known and seen is not None and seen.covers(value):
                    if value not in seen:
                        gone.append(b"%b%d" % (prefix, value))
                else:
                    unknown[value] = b"%b%d" % (prefix, value)
            deleted += self._delete_keys(lock, gone) + self._delete_missing(plan, lock, unknown)
        return deleted

    def _delete_missing(self, plan: TablePlan, lock: SyncLock, keys: dict[Any, bytes]) -> int:
        """Delete the keys (by primary key) whose rows the table no longer has."""
        table = self.db.quote_identifier(self.table)
        pk = self.db.quote_identifier(plan.primary_key.name)
        alive = "" if plan.deleted is None else f" AND NOT {plan.deleted_condition(self.db)}"
        pks = list(keys)
        deleted = 0
        for start in range(0, len(pks), _RECONCILE_CHUNK):
            chunk = pks[start : start + _RECONCILE_CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            rows = self.db.query(
                f"SELECT {pk} AS pk FROM {table} WHERE {pk} IN ({marks}){alive}",  # noqa: S608
                chunk,
            )
            present = {row["pk"] for row in rows}
            deleted += self._delete_keys(
                lock, [keys[value] for value in chunk if value not in present]
            )
        return deleted

    def _delete_keys(self, lock: SyncLock, keys: list[bytes]) -> int:
        if keys:
            self._write(lock, deletes=[key.decode() for key in keys])
        return len(keys)

    # signals --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _signals_stop(self, enabled: bool) -> Iterator[None]:
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            log.warning(
                "sync %s: %s received, stopping after the current batch",
                self.name,
                signal.Signals(signum).name,
            )
            self._stop.set()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    @contextlib.contextmanager
    def _watch(self, stop_event: threading.Event | None) -> Iterator[None]:
        if stop_event is None:
            yield
            return
        done = threading.Event()

        def forward() -> None:
            while not done.is_set():
                if stop_event.wait(0.1):
                    self._stop.set()
                    return

        watcher = threading.Thread(target=forward, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()
