"""CacheSync: keep a cache in step with a table, pass after pass, correct after any crash.

The passes live beside it: ``_full`` (copy, catch up, reconcile), ``_incremental`` (catch-up
from a checkpoint), ``_reading`` and ``_page`` (pages read and encoded), ``_checkpoint``
(checkpoints and the fenced writes that carry them), ``_reconcile`` and ``_signals``."""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from .._config import Settings
from .._errors import AutoOpsError, ConfigError, LockHeldError
from .._metrics import write_textfile
from .._time import utc_now
from ..cache import CacheClient, JsonCodec
from ..cache._client import TTL
from ..db import DbClient
from ._checkpoint import Window, write_page
from ._full import full_pass
from ._incremental import incremental_pass
from ._lock import SyncLock
from ._page import Page
from ._plan import KeyTemplate, TablePlan, quote_name
from ._reading import PageReader
from ._reconcile import Reconciler
from ._replica import ReadFrom, ReadPoint
from ._report import SyncReport, SyncStatus, meta_key, read_sync_status
from ._settings import sync_metrics, sync_settings
from ._signals import forward_stop, stop_on_signals

if TYPE_CHECKING:
    from ._binlog import BinlogSync

__all__ = ["CacheSync"]

log = logging.getLogger("autoops.sync")


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

    ``read_from="replica"`` (a client with ``replicas``) reads the rows from a replica that has
    applied everything the primary had committed when the pass took its horizon, and from the
    primary when none has within the client's ``max_replica_lag``.

    ``source="binlog"`` (MariaDB, the ``binlog`` extra) reads the binary log instead: a snapshot
    with its matching binlog position, then every committed change, hard deletes included, each
    batch written with its binlog checkpoint; ``server_id`` is the reader's replica id (default:
    random), ``on_purged="full"`` re-snapshots when the checkpoint's log was purged (default: a
    ConfigError). See docs/sync.md, "Binlog mode".
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
        read_from: ReadFrom = "primary",
        source: str = "poll",
        server_id: int | None = None,
        on_purged: str = "error",
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
        self._window: Window | None = None
        self._process: bool | None = None
        self._stop = threading.Event()
        self.read_from = read_from
        self._reads = ReadPoint(db, read_from, self.name)
        self._pages = PageReader(
            db,
            cache,
            self.template,
            table=table,
            batch_size=batch_size,
            readers=readers,
            stop=self._stop,
            reads=self._reads,
        )
        if source not in ("poll", "binlog"):
            raise ConfigError(f"source must be 'poll' or 'binlog', got {source!r}")
        if source == "binlog" and read_from != "primary":
            raise ConfigError(
                "read_from='replica' is for the polling sync; source='binlog' follows the "
                "binary log of the server it connects to"
            )
        self.source = source
        self._binlog: BinlogSync | None = None
        if source == "binlog":
            try:
                from ._binlog import BinlogSync  # noqa: PLC0415  (an optional extra)
            except ImportError as exc:
                raise ConfigError(
                    f"source='binlog' needs mysql-replication ({exc}): pip install "
                    "'autoops[binlog]'"
                ) from None
            self._binlog = BinlogSync(self, server_id=server_id, on_purged=on_purged)

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
        with stop_on_signals(self._stop, self.name, enabled=handle_signals):
            if self._binlog is not None:
                return self._binlog.run_once(full)
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
        with (
            stop_on_signals(self._stop, self.name, enabled=handle_signals),
            forward_stop(stop_event, self._stop),
        ):
            if self._binlog is not None:
                self._binlog.run_forever(interval=interval, on_report=on_report)
                return
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
            deleted = Reconciler(
                self.db,
                self.cache,
                self.template,
                plan,
                lock,
                None,
                table=self.table,
                name=self.name,
                reads=self._reads,
            ).scan()
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
        self._pages.close()
        for client in self._owned:
            client.close()

    def __enter__(self) -> CacheSync:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"CacheSync(table={self.table!r}, key={self.key_template!r}, "
            f"name={self.name!r}, db={self.db!r}, cache={self.cache!r}"
            + (f", read_from={self.read_from!r})" if self.read_from != "primary" else ")")
        )

    # passes ---------------------------------------------------------------------------------

    def _meta(self, part: str) -> str:
        return self.cache.key(meta_key(self.name, part))

    def _lock(self) -> SyncLock:
        return SyncLock(self.cache, meta_key(self.name, "lock"), self.lock_ttl, f"sync {self.name}")

    def _run_pass(self, full: bool) -> SyncReport:
        plan = self.plan()
        self._reads.new_pass()
        with self._lock() as lock:
            full_data, checkpoint_data = self.cache.get_many_raw(
                [self._meta("full-pass"), self._meta("checkpoint")]
            )
            if full_data is not None:
                return full_pass(self, plan, lock, orjson.loads(full_data))
            checkpoint = orjson.loads(checkpoint_data) if checkpoint_data is not None else None
            if full or plan.updated is None or checkpoint is None or checkpoint["value"] is None:
                return full_pass(self, plan, lock, None)
            return incremental_pass(self, plan, lock, checkpoint)

    def _write_page(self, lock: SyncLock, page: Page, meta: list[tuple[str, bytes]]) -> None:
        write_page(self.cache, lock, page, meta, ttl_ms=self.ttl_ms, name=self.name)
