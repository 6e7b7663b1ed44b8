"""CacheSync: keep a cache in step with a table, pass after pass, correct after any crash."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import functools
import logging
import math
import queue
import random
import signal
import threading
import time
from array import array
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final

import orjson

from .._config import Settings
from .._errors import AuthenticationError, AutoOpsError, ConfigError, LockHeldError, QueryError
from .._metrics import write_textfile
from .._progress import Progress
from ..cache import CacheClient, FencedBatch, JsonCodec
from ..cache._client import TTL
from ..cache._resp import pack_arguments
from ..db import DbClient
from ._census import KeyCensus, SeenKeys, all_within
from ._lock import SyncLock
from ._plan import KeyTemplate, TablePlan, quote_name, shift_back
from ._report import SyncKind, SyncReport, SyncStatus, meta_key, read_sync_status, utc_now
from ._settings import sync_metrics, sync_settings

__all__ = ["CacheSync"]

log = logging.getLogger("autoops.sync")

_RECONCILE_CHUNK: Final = 1000
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
    deletes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Counts:
    rows_read: int = 0
    rows_reread: int = 0
    rows_checked: int = 0
    keys_written: int = 0
    keys_deleted: int = 0


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END: Final = object()


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


def _checkpoint_record(
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
class _State:
    """Where incremental reading stands: rows up to ``position`` were written; rows stamped
    before ``settled`` were all committed when they were read."""

    position: tuple[Any, Any]
    settled: Any

    @classmethod
    def load(cls, record: dict[str, Any], overlap: float) -> _State:
        value = _loaded(record.get("type"), record.get("value"))
        if "pk" not in record:
            # A checkpoint written before positions were kept: the old overlap window.
            return cls((value, None), shift_back(value, overlap))
        return cls((value, record["pk"]), _loaded(record.get("type"), record.get("settled")))


@dataclass(slots=True)
class _Window:
    """What this process remembers of the rows a late commit may still join: the ``(pk,
    updated)`` versions between ``settled`` and ``position`` it has written, so the next pass
    compares versions from the index instead of reading those rows again."""

    position: tuple[Any, Any]
    settled: Any
    versions: dict[Any, Any]


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _ttl_ms(ttl: TTL | None) -> int | None:
    """The TTL in milliseconds, before jitter: the cache jitters each key's expiry itself."""
    if ttl is None:
        return None
    seconds = ttl.total_seconds() if isinstance(ttl, dt.timedelta) else ttl
    if not _finite(seconds) or not seconds > 0:
        raise ConfigError(
            f"ttl must be a finite number of seconds above 0 or a timedelta, got {ttl!r}"
        )
    return max(1, int(seconds * 1000))


class CacheSync:
    """Keep ``cache`` in step with ``table``: one key per row (``key="users:{id}"``), its value
    the JSON object of the cached ``columns`` as the cache's codec writes it, so
    ``cache.get("users:7")`` returns the row as a dict (BIGINTs beyond 2**53 - 1 as strings
    unless the codec says ``safe_integers=False``, times at the column's declared precision, JSON
    columns embedded: see docs/clients.md).

    A full pass pages the table by primary key; once it has finished, passes are incremental:
    the rows past the checkpoint's ``(updated_column, pk)`` position, each version read once, and
    the rows of the last pass's late-commit window whose version changed (a transaction that
    stamped a row earlier and committed later; ``overlap`` is the longest such a transaction may
    stay open, see docs/sync.md). Every batch is written in one atomic step
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
        interval: float = 60.0,
        metrics_file: str | None = None,
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
                    quote_name(db, identifier)
                except ConfigError as exc:
                    raise ConfigError(f"CacheSync {what}: {exc}") from None
        if isinstance(columns, str) or isinstance(exclude, str):
            raise ConfigError("columns and exclude take a list of column names, not a string")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if not _finite(overlap) or overlap < 0:
            raise ConfigError(f"overlap must be a finite number of seconds >= 0, got {overlap!r}")
        if not isinstance(readers, int) or readers < 1:
            raise ConfigError(f"readers must be a whole number >= 1, got {readers!r}")
        if not _finite(lock_ttl) or lock_ttl < 1:
            raise ConfigError(f"lock_ttl must be a finite number of seconds >= 1, got {lock_ttl!r}")
        if not _finite(interval) or interval < 0:
            raise ConfigError(f"interval must be a finite number of seconds >= 0, got {interval!r}")
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
        self.ttl_ms = _ttl_ms(ttl)
        self.batch_size = batch_size
        self.overlap = float(overlap)
        self.name = name or table
        self.lock_ttl = float(lock_ttl)
        self.server_side = server_side
        self.readers = readers
        self.progress = progress
        self.interval = float(interval)
        self.metrics_file = metrics_file
        self._owned: tuple[DbClient | CacheClient, ...] = ()
        self._plan: TablePlan | None = None
        self._window: _Window | None = None
        self._process: bool | None = None
        self._stop = threading.Event()
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autoops-sync-read")
        self._page_readers = ThreadPoolExecutor(
            max_workers=readers, thread_name_prefix="autoops-sync-page"
        )

    # public API -----------------------------------------------------------------------------

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        db: DbClient | None = None,
        cache: CacheClient | None = None,
        **overrides: Any,
    ) -> CacheSync:
        """The sync ``autoops-sync`` runs: the ``[sync]`` table (``table``, ``key``, ``columns``,
        ..., ``interval``, ``metrics_file``; keyword arguments that are not None win) on ``db``
        and ``cache``, or on clients built from ``[db]`` and ``[cache]`` (with ``[sync]``'s
        ``namespace``) that :meth:`close` then closes."""
        options = sync_settings(settings.section("sync"), overrides)
        namespace = options.pop("namespace", None)
        owned: list[DbClient | CacheClient] = []
        try:
            if db is None:
                db = DbClient.from_config(settings=settings)
                owned.append(db)
            if cache is None:
                cache = CacheClient.from_config(settings=settings, namespace=namespace)
                owned.append(cache)
            sync = cls(db, cache, **options)
        except BaseException:
            for client in owned:
                client.close()
            raise
        sync._owned = tuple(owned)
        return sync

    def write_metrics(self, report: SyncReport | None) -> None:
        """Write the Prometheus textfile ``metrics_file`` (if set) after a pass: ``report``, or
        None for a pass that failed. A failed write is logged, not raised: the pass's outcome
        stands."""
        if self.metrics_file is None:
            return
        try:
            write_textfile(self.metrics_file, sync_metrics(self.name, report, self.cache))
        except (OSError, AutoOpsError) as exc:
            log.error("cannot write metrics to %s: %s", self.metrics_file, exc)

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
        interval: float | None = None,
        *,
        jitter: float = 0.1,
        max_backoff: float = 900.0,
        stop_event: threading.Event | None = None,
        on_report: Callable[[SyncReport], None] | None = None,
        handle_signals: bool = True,
    ) -> None:
        """Run passes every ``interval`` seconds (default: the sync's ``interval``; ± ``jitter``
        as a fraction) until
        :meth:`stop`, ``stop_event``, SIGINT or SIGTERM; a pass being stopped finishes its
        batch and commits its checkpoint. After a failure the wait doubles (from at least a
        second), up to ``max_backoff``. A :class:`ConfigError` is raised at once: retrying
        cannot fix it."""
        interval = self.interval if interval is None else interval
        if not _finite(interval) or not interval >= 0 or not 0 <= jitter < 1:
            raise ConfigError(
                "interval must be a finite number of seconds >= 0 and jitter from 0 up to 1"
            )
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
        """Stop the reader threads, and close the clients :meth:`from_settings` built (clients
        passed in stay open: they are the caller's)."""
        self._reader.shutdown(wait=True)
        self._page_readers.shutdown(wait=True)
        for client in self._owned:
            client.close()

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
            full_data, checkpoint_data = self.cache.get_many_raw(
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
            marker = {
                "phase": "copy",
                "cursor": None,
                "copied": 0,
                "target": self._starting_point(plan),
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
            # A resumed copy counts the rows its earlier runs copied toward the table's total.
            with Progress(
                f"sync {self.name}",
                total=self._estimated_rows(plan),
                enabled=self.progress,
                start=marker.get("copied", 0),
            ) as progress:
                pages = (
                    self._read_packed_pages(plan, marker["cursor"])
                    if self._packed_copy(plan)
                    else self._read_pages(plan, marker["cursor"])
                )
                for page in self._pipeline(pages):
                    marker["cursor"] = page.last_pk
                    marker["copied"] = marker.get("copied", 0) + page.rows
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
            stored = self.cache.get_raw(self._meta("checkpoint"))
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

    def _starting_point(self, plan: TablePlan) -> dict[str, Any] | None:
        """The checkpoint a full pass starts from: the newest row's position and the settled
        time before its copy reads anything. The versions of the rows between the two are
        remembered (read from the index before the copy), so the catch-up after the copy
        compares versions instead of reading those rows again."""
        if plan.updated is None:
            return None
        quote = functools.partial(quote_name, self.db)
        updated, pk = quote(plan.updated.name), quote(plan.primary_key.name)
        row = self.db.query_one(
            f"SELECT {updated} AS updated, {pk} AS pk FROM {quote(self.table)} "  # noqa: S608
            f"ORDER BY {updated} DESC, {pk} DESC LIMIT 1"
        )
        if row is None or row["updated"] is None:
            return None
        position = (row["updated"], row["pk"])
        settled, horizon = self._horizon(plan, position)
        versions = self._versions(plan, (settled, None), position)
        self._window = None if versions is None else _Window(position, settled, versions)
        return _checkpoint_record(position, settled, horizon, utc_now())

    def _catch_up(
        self, plan: TablePlan, lock: SyncLock, record: dict[str, Any], counts: _Counts
    ) -> tuple[Any, bool]:
        """Write what changed since the checkpoint ``record``, each batch with its checkpoint;
        returns the checkpoint as shown in reports and whether it ran to the end.

        First the window of the last pass (rows stamped from its settled time to its position,
        which a transaction still open then may have joined since): with the versions
        remembered, only rows whose version differs are read; otherwise the window is read
        again (counted as re-reads). Then every row after the position. The new settled time
        is the horizon taken before anything was read."""
        state = _State.load(record, self.overlap)
        horizon, source = self._horizon(plan, state.position)
        window, self._window = self._window, None
        if window is not None and (window.position, window.settled) != (
            state.position,
            state.settled,
        ):
            window = None
        checkpoint_key = self._meta("checkpoint")
        settled = horizon if state.settled is None else max(state.settled, horizon)
        remembered: dict[Any, Any] | None = {}
        position = state.position
        pages: Generator[_Page, None, None]
        if state.settled is not None and not state.settled > position[0]:
            lower = (state.settled, None)
            versions = self._versions(plan, lower, position)
            reread = window is None or versions is None
            if window is not None and versions is not None:
                counts.rows_checked += len(versions)
                known = window.versions
                pages = self._read_keys(
                    plan, [pk for pk, at in versions.items() if known.get(pk) != at]
                )
            else:
                pages = self._read_changes(plan, lower, position)
            remembered = None if versions is None else dict(versions)
            meta = [(checkpoint_key, orjson.dumps(record))]
            for page in self._pipeline(pages):
                self._write_page(lock, page, meta)
                if reread:
                    counts.rows_reread += page.rows
                else:
                    counts.rows_read += page.rows
                counts.keys_written += page.item_count
                counts.keys_deleted += len(page.deletes)
                if self._stop.is_set():
                    return record["value"], False
        unsettled = self._versions(plan, position, None, since=horizon)
        if unsettled is None or remembered is None:
            remembered = None
        else:
            remembered.update(unsettled)
        for page in self._pipeline(self._read_changes(plan, position, None)):
            position = (page.last_updated, page.last_pk)
            current = _checkpoint_record(position, state.settled, source, utc_now())
            self._write_page(lock, page, [(checkpoint_key, orjson.dumps(current))])
            counts.rows_read += page.rows
            counts.keys_written += page.item_count
            counts.keys_deleted += len(page.deletes)
            if self._stop.is_set():
                return current["value"], False
        final = _checkpoint_record(position, settled, source, utc_now())
        self._write(lock, meta=[(checkpoint_key, orjson.dumps(final))])
        if remembered is not None:
            self._window = _Window(
                position,
                settled,
                {pk: stamp for pk, stamp in remembered.items() if not stamp < settled},
            )
        return final["value"], True

    def _horizon(self, plan: TablePlan, position: tuple[Any, Any]) -> tuple[Any, str]:
        """The time before which every row is committed, taken before a pass reads, and how
        it was found. On MySQL/MariaDB with a DATETIME/TIMESTAMP column: the server's clock
        less the age of the oldest open transaction that has written (INNODB_TRX) or of the
        oldest running statement (PROCESSLIST), less a margin, and never more than
        ``overlap`` back; without the PROCESS privilege to see those, the clock less
        ``overlap``. Otherwise the newest value less ``overlap``."""
        assert plan.updated is not None
        if self.db.dialect != "mysql" or plan.updated.data_type not in ("datetime", "timestamp"):
            return shift_back(position[0], self.overlap), "newest less overlap"
        row = self.db.query_one("SELECT NOW(6) AS now")
        assert row is not None
        now: dt.datetime = row["now"]
        delay = dt.timedelta(seconds=self.overlap)
        if self._process is not False:
            try:
                work = self.db.query_one(_OPEN_WORK_SQL.format(time_ms=_TIME_MS[plan.mariadb]))
            except (AuthenticationError, QueryError) as exc:
                log.warning(
                    "sync %s: cannot see open transactions (%s); late commits are waited for "
                    "a fixed %g s (overlap). Grant PROCESS to shorten that",
                    self.name,
                    exc,
                    self.overlap,
                )
                self._process = False
            else:
                self._process = True
                assert work is not None
                if work["trx_count"] and work["trx_us"] is None:
                    return now - delay, "fixed delay (open transactions unreadable)"
                oldest = max(
                    dt.timedelta(microseconds=int(work["trx_us"] or 0)),
                    dt.timedelta(milliseconds=float(work["statement_ms"] or 0)),
                )
                return now - min(delay, oldest + _HORIZON_MARGIN), "open transactions"
        return now - delay, "fixed delay (no PROCESS privilege)"

    def _versions(
        self,
        plan: TablePlan,
        lower: tuple[Any, Any] | None,
        upper: tuple[Any, Any] | None,
        since: Any = None,
    ) -> dict[Any, Any] | None:
        """The ``(pk -> updated)`` versions of the rows between two positions (and stamped at
        or after ``since``), from the index; None when there are too many to remember."""
        assert plan.updated is not None
        where, params = plan.keyset_where(self.db, lower, upper)
        if since is not None:
            where += f" AND {quote_name(self.db, plan.updated.name)} >= %s"
            params.append(since)
        rows = self.db.query(plan.versions_sql(self.db, where, _WINDOW_LIMIT + 1), params)
        if len(rows) > _WINDOW_LIMIT:
            return None
        return {row["pk"]: row["updated"] for row in rows}

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
        kind: SyncKind,
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
            rows_reread=counts.rows_reread,
            rows_checked=counts.rows_checked,
            keys_written=counts.keys_written,
            keys_deleted=counts.keys_deleted,
            duration_seconds=time.perf_counter() - clock,
            started_at=started,
            checkpoint=checkpoint,
            ok=completed,
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

    def _estimated_rows(self, plan: TablePlan) -> int | None:
        if self.db.dialect != "mysql":
            return None
        schema, name = self.table.split(".", 1) if "." in self.table else ("", self.table)
        row = self.db.query_one(
            "SELECT TABLE_ROWS AS n FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s",
            (schema or None, name),
        )
        return int(row["n"]) if row and row["n"] else None

    def _read_pages(self, plan: TablePlan, cursor: Any) -> Generator[_Page, None, None]:
        """Full-pass pages, one result row per table row, by primary key after ``cursor``."""
        pk = quote_name(self.db, plan.primary_key.name)
        key_parts = (self.cache.key(self.template.prefix), self.template.suffix)
        while not self._stop.is_set():
            sql, params = plan.select_sql(
                self.db,
                where="1 = 1" if cursor is None else f"{pk} > %s",
                order_by_updated=False,
                limit=self.batch_size,
                key_parts=key_parts,
            )
            rows = self.db.query(sql, params if cursor is None else [*params, cursor])
            if not rows:
                return
            page = self._encode_rows(plan, rows)
            yield page
            if len(rows) < self.batch_size:
                return
            cursor = page.last_pk

    def _read_changes(
        self, plan: TablePlan, lower: tuple[Any, Any], upper: tuple[Any, Any] | None
    ) -> Generator[_Page, None, None]:
        """The rows after ``lower`` (up to ``upper``) in ``(updated, pk)`` order, paged by that
        pair: as packed pages built by the server when the full copy can use them."""
        if self._packed_copy(plan):
            yield from self._read_packed_changes(plan, lower, upper)
            return
        key_parts = (self.cache.key(self.template.prefix), self.template.suffix)
        while not self._stop.is_set():
            where, where_params = plan.keyset_where(self.db, lower, upper)
            sql, params = plan.select_sql(
                self.db,
                where=where,
                order_by_updated=True,
                limit=self.batch_size,
                key_parts=key_parts,
            )
            rows = self.db.query(sql, [*params, *where_params])
            if not rows:
                return
            page = self._encode_rows(plan, rows)
            yield page
            if len(rows) < self.batch_size:
                return
            lower = (page.last_updated, page.last_pk)

    def _read_packed_changes(
        self, plan: TablePlan, lower: tuple[Any, Any], upper: tuple[Any, Any] | None
    ) -> Generator[_Page, None, None]:
        """:meth:`_read_changes` as packed pages: each page's last position is cut first from
        the index (``batch_size`` rows on, or the last row), then the range up to it is read
        whole by one of ``readers`` connections, as the full copy does."""
        pending: collections.deque[Future[list[_Page]]] = collections.deque()
        low, exhausted = lower, False
        try:
            while not self._stop.is_set() and (pending or not exhausted):
                while not exhausted and len(pending) < self.readers + 1:
                    high = self._position(plan, low, upper, self.batch_size - 1)
                    if high is None:
                        exhausted = True
                        high = self._position(plan, low, upper, None)
                        if high is None:
                            break
                    pending.append(self._page_readers.submit(self._packed_changes, plan, low, high))
                    low = high
                if pending:
                    yield from pending.popleft().result()
        finally:
            _abandon(pending)

    def _position(
        self,
        plan: TablePlan,
        lower: tuple[Any, Any],
        upper: tuple[Any, Any] | None,
        offset: int | None,
    ) -> tuple[Any, Any] | None:
        where, params = plan.keyset_where(self.db, lower, upper)
        row = self.db.query_one(plan.position_sql(self.db, where, offset), params)
        return None if row is None else (row["updated"], row["pk"])

    def _packed_changes(
        self, plan: TablePlan, low: tuple[Any, Any], high: tuple[Any, Any]
    ) -> list[_Page]:
        """The rows in ``(low, high]`` as one packed page, or, when the server had to cut its
        GROUP_CONCAT short, as the two halves of the range."""
        key_parts = (self.cache.key(self.template.prefix), self.template.suffix)
        where, where_params = plan.keyset_where(self.db, low, high)
        sql, params = plan.packed_changes_sql(self.db, where=where, key_parts=key_parts)
        row = self.db.query_one(sql, [*params, *where_params])
        if row is None or not row["n"]:
            return []
        count = int(row["n"])
        packed = row["packed"] or b""
        if len(packed) != int(row["size"]):
            middle = self._position(plan, low, high, count // 2 - 1) if count > 1 else None
            if middle is None or middle == high:
                raise ConfigError(
                    f"a row of {self.table!r} is too large to be read whole "
                    "(max_allowed_packet); use server_side=False"
                )
            return self._packed_changes(plan, low, middle) + self._packed_changes(
                plan, middle, high
            )
        return [
            _Page(
                rows=count,
                last_pk=high[1],
                last_updated=high[0],
                item_count=count,
                packed=packed,
            )
        ]

    def _read_keys(self, plan: TablePlan, keys: list[Any]) -> Generator[_Page, None, None]:
        """The rows with these primary keys, a thousand at a time."""
        key_parts = (self.cache.key(self.template.prefix), self.template.suffix)
        pk = quote_name(self.db, plan.primary_key.name)
        for start in range(0, len(keys), _RECONCILE_CHUNK):
            chunk = keys[start : start + _RECONCILE_CHUNK]
            sql, params = plan.select_sql(
                self.db,
                where=f"{pk} IN ({', '.join(['%s'] * len(chunk))})",
                order_by_updated=False,
                limit=None,
                key_parts=key_parts,
            )
            rows = self.db.query(sql, [*params, *chunk])
            if rows:
                yield self._encode_rows(plan, rows)

    def _encode_rows(self, plan: TablePlan, rows: list[dict[str, Any]]) -> _Page:
        return self._encode_server(plan, rows) if plan.server_side else self._encode(plan, rows)

    def _packed_copy(self, plan: TablePlan) -> bool:
        return plan.server_side and plan.deleted is None and plan.primary_key.integer

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
            _abandon(pending)

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
        page.packed = pack_arguments(
            [part for key, value in items for part in (key.encode(), value)]
        )
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
        page.packed = b"".join(
            [
                b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(row["k"]), row["k"], len(row["v"]), row["v"])
                for row in live
            ]
        )
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
        batch = FencedBatch(
            lock.fence, page.packed, page.item_count, self.ttl_ms, page.deletes, meta
        )
        if not self.cache.write_fenced(batch):
            self._lost_lock(lock)

    def _write(
        self,
        lock: SyncLock,
        *,
        deletes: list[str] | None = None,
        meta: list[tuple[str, bytes]] | None = None,
    ) -> None:
        if not self.cache.write_fenced(
            FencedBatch(lock.fence, deletes=deletes or (), meta=meta or ())
        ):
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
        for keys in self.cache.scan_prefix(prefix.decode(), 10_000):
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
        table = quote_name(self.db, self.table)
        pk = quote_name(self.db, plan.primary_key.name)
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


def _abandon(pending: Iterable[Future[Any]]) -> None:
    """Cancel page reads not yet started and wait out the running ones, whatever they raise:
    a pass that stops early leaves no reader working behind it."""
    futures = list(pending)
    for future in futures:
        future.cancel()
    for future in futures:
        with contextlib.suppress(BaseException):
            future.result()
