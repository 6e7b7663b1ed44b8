"""CacheSync from the binary log: a snapshot with the position that matches it, then every
committed change in commit order, each batch written with its checkpoint in one fenced step.

The snapshot reads the table inside ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` and takes
``binlog_snapshot_file/position`` from the same transaction (MariaDB), so the stream starts
exactly where the snapshot's view ends: no change is missed or applied to rows it has not seen.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson
import pymysql

from .._errors import AutoOpsError, ConfigError, ConnectError, LockHeldError
from .._progress import Progress
from .._time import utc_now
from ..cache import FencedBatch, JsonCodec
from ._binlog_stream import BinlogPosition, BinlogReader, EndOfLog, Transaction
from ._binlog_zone import session_zone
from ._checkpoint import lost_lock
from ._lock import SyncLock
from ._plan import TablePlan, quote_name
from ._report import SyncKind, SyncReport

if TYPE_CHECKING:
    from ._sync import CacheSync

__all__ = ["BinlogSync", "check_preconditions", "default_server_id"]

log = logging.getLogger("autoops.sync")

# Writes wait this long for more changes when the log goes quiet, so a burst of single-row
# transactions shares one Redis round trip while a lone change still lands within milliseconds.
_FLUSH_EVERY: Final = 0.02
# Checkpoints that only move the position (changes to other tables) or refresh the lag are
# written at most this often.
_STATUS_EVERY: Final = 1.0
_SERVER_ID_RANGE: Final = (1_000_000_000, 4_000_000_000)
_GRANT_ON_ALL: Final = re.compile(r"^GRANT (.+?) ON \*\.\* TO ", re.IGNORECASE)
_DELETE_CHUNK: Final = 10_000


def default_server_id() -> int:
    """A random replica id from a range administrators rarely use for real servers."""
    return random.randint(*_SERVER_ID_RANGE)


@dataclass(frozen=True, slots=True)
class _Server:
    mariadb: bool
    server_id: int


def _variables(db: Any) -> dict[str, str]:
    rows = db.query(
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', "
        "'binlog_row_image', 'binlog_row_metadata', 'server_id', 'version')"
    )
    return {str(row["Variable_name"]).lower(): str(row["Value"]) for row in rows}


def check_preconditions(db: Any, server_id: int) -> _Server:
    """Everything binlog mode needs from the server, each missing piece a :class:`ConfigError`
    naming the setting and the fix, checked before anything is written."""
    where = db.connection_settings.location
    if db.dialect != "mysql":
        raise ConfigError(f"source='binlog' reads a MySQL/MariaDB binary log; {where} is not one")
    values = _variables(db)
    mariadb = "mariadb" in values.get("version", "").lower()
    if values.get("log_bin", "OFF").upper() != "ON":
        raise ConfigError(
            f"log_bin is OFF on {where}: there is no binary log to read. Start the server with "
            "log_bin (--log-bin, or log_bin in its [mysqld] config) and binlog_format=ROW"
        )
    if values.get("binlog_format", "").upper() != "ROW":
        raise ConfigError(
            f"binlog_format is {values.get('binlog_format')} on {where}: source='binlog' needs "
            "row events. Set binlog_format=ROW in the server's config (SET GLOBAL "
            "binlog_format='ROW' for new sessions until the restart)"
        )
    if values.get("binlog_row_image", "").upper() != "FULL":
        raise ConfigError(
            f"binlog_row_image is {values.get('binlog_row_image')} on {where}: source='binlog' "
            "needs every column of each changed row. Set binlog_row_image=FULL (config and "
            "SET GLOBAL)"
        )
    metadata = values.get("binlog_row_metadata")
    if (metadata or "").upper() != "FULL":
        raise ConfigError(
            f"binlog_row_metadata is {metadata or 'not supported'} on {where}: source='binlog' "
            "decodes each change with the column names of its own time (so a backlog spanning "
            "an ALTER TABLE is read right), which the log carries only with "
            "binlog_row_metadata=FULL (MariaDB 10.5+, MySQL 8.0.14+). Set it in the server's "
            "config and with SET GLOBAL binlog_row_metadata=FULL"
        )
    if str(server_id) == values.get("server_id"):
        raise ConfigError(
            f"server_id={server_id} is the server_id of {where} itself; give the sync another "
            "(server_id=, --server-id), unique among the server's replicas"
        )
    _check_grants(db, mariadb, where)
    _check_replicas(db, server_id, where)
    return _Server(mariadb=mariadb, server_id=server_id)


def _check_grants(db: Any, mariadb: bool, where: str) -> None:
    granted: set[str] = set()
    for row in db.query("SHOW GRANTS"):
        text = str(next(iter(row.values())))
        found = _GRANT_ON_ALL.match(text)
        if found:
            granted.update(part.strip().upper() for part in found.group(1).split(","))
    everything = "ALL PRIVILEGES" in granted or "ALL" in granted
    monitor = "BINLOG MONITOR" if mariadb else "REPLICATION CLIENT"
    missing = []
    if not everything and "REPLICATION SLAVE" not in granted:
        missing.append("REPLICATION SLAVE")
    if not everything and not granted & {"BINLOG MONITOR", "REPLICATION CLIENT", "SUPER"}:
        missing.append(monitor)
    if missing:
        named = " and ".join(missing)
        alias = (
            " (BINLOG MONITOR is what MariaDB 10.5+ calls REPLICATION CLIENT)"
            if mariadb and monitor in missing
            else ""
        )
        raise ConfigError(
            f"the sync's user on {where} lacks {named}{alias}: source='binlog' reads the binary "
            f"log as a replica does. Run GRANT {', '.join(missing)} ON *.* TO the sync's user"
        )


def _check_replicas(db: Any, server_id: int, where: str) -> None:
    try:
        rows = db.query("SHOW SLAVE HOSTS")
    except AutoOpsError as exc:
        # Listing replicas needs REPLICATION MASTER ADMIN on MariaDB; without it a clash shows
        # later, as the server dropping one of the two connections.
        log.info("cannot list the replicas of %s to check server_id (%s)", where, exc)
        return
    for row in rows:
        if str(row.get("Server_id")) == str(server_id):
            raise ConfigError(
                f"server_id={server_id} is already used by a replica of {where} "
                f"({row.get('Host') or 'unnamed'}:{row.get('Port')}): two readers with one id "
                "disconnect each other. Give the sync another server_id= (--server-id)"
            )


@dataclass(slots=True)
class _Counts:
    events: int = 0
    written: int = 0
    deleted: int = 0


@dataclass(slots=True)
class _Encoder:
    """How rows of one column layout become keys and values."""

    pk: str
    names: tuple[str, ...]
    fixes: tuple[tuple[str, Callable[[Any], Any]], ...]
    deleted: str | None


class _Stop(Exception):
    """A stop request cut a snapshot short (the next run takes a new one)."""


class BinlogSync:
    """The binlog engine behind ``CacheSync(..., source="binlog")``."""

    def __init__(self, sync: CacheSync, *, server_id: int | None, on_purged: str) -> None:
        if on_purged not in ("error", "full"):
            raise ConfigError(f"on_purged must be 'error' or 'full', got {on_purged!r}")
        if server_id is not None and (
            not isinstance(server_id, int)
            or isinstance(server_id, bool)
            or not 1 <= server_id < 2**32
        ):
            raise ConfigError(
                f"server_id must be a whole number from 1 to 2**32 - 1, got {server_id!r}"
            )
        self.sync = sync
        self.server_id = server_id if server_id is not None else default_server_id()
        self.on_purged = on_purged
        schema, _, name = sync.table.rpartition(".")
        self.schema = schema or sync.db.connection_settings.database
        self.table_name = name
        if not self.schema:
            raise ConfigError(
                f"source='binlog' needs to know the schema of {sync.table!r}: name the database "
                "in the URL or pass table='schema.table'"
            )
        self._server: _Server | None = None
        self._encoders: dict[tuple[str, ...], _Encoder] = {}
        self._plan: TablePlan | None = None
        self._end_checked = 0.0
        self._end: BinlogPosition | None = None
        self._end_at = utc_now()

    # checks and positions -------------------------------------------------------------------

    def prepare(self) -> _Server:
        """The preconditions, checked once per engine."""
        if self._server is None:
            self._server = check_preconditions(self.sync.db, self.server_id)
            if not self._server.mariadb:
                raise ConfigError(
                    "source='binlog' takes its snapshot position from MariaDB's "
                    "binlog_snapshot_file/position; MySQL servers are not supported yet"
                )
        return self._server

    def binlog_end(self) -> BinlogPosition:
        """Where the binary log ends now (SHOW MASTER STATUS)."""
        row = self.sync.db.query_one("SHOW MASTER STATUS")
        if row is None:
            raise ConfigError(
                f"SHOW MASTER STATUS on {self.sync.db.connection_settings.location} returned "
                "nothing: the binary log is off"
            )
        self._end = BinlogPosition(str(row["File"]), int(row["Position"]))
        self._end_checked = time.monotonic()
        self._end_at = utc_now()
        return self._end

    def recent_end(self) -> tuple[BinlogPosition, dt.datetime]:
        """The log's end as read at most a second ago, and when it was read."""
        if self._end is None or time.monotonic() - self._end_checked >= _STATUS_EVERY:
            self.binlog_end()
        assert self._end is not None
        return self._end, self._end_at

    def _logs(self) -> list[tuple[str, int]]:
        return [
            (str(row["Log_name"]), int(row["File_size"]))
            for row in self.sync.db.query("SHOW BINARY LOGS")
        ]

    def behind_bytes(self, position: BinlogPosition, end: BinlogPosition) -> int:
        """Bytes of binary log from ``position`` to ``end``."""
        if position.order >= end.order:
            return 0
        if position.file == end.file:
            return end.pos - position.pos
        total = 0
        for name, size in self._logs():
            file = BinlogPosition(name, 0)
            if file.order[0] == position.order[0]:
                total += max(0, size - position.pos)
            elif position.order[0] < file.order[0] < end.order[0]:
                total += size
        return total + end.pos

    def _available(self, position: BinlogPosition) -> bool:
        return any(name == position.file for name, _ in self._logs())

    def _meta(self, part: str) -> str:
        return self.sync._meta(part)

    # passes ---------------------------------------------------------------------------------

    def run_once(self, full: bool) -> SyncReport:
        """A snapshot when needed, then every change up to the log's end as of the call."""
        self.prepare()
        started = utc_now()
        clock = time.perf_counter()
        counts = _Counts()
        with self.sync._lock() as lock:
            try:
                start, kind = self._starting_point(lock, full, counts)
            except _Stop:
                return self._report("snapshot", counts, clock, started, None, None, False)
            as_of = utc_now()
            target = self.binlog_end()
            position, completed, last_commit = self._stream(
                lock, start, counts, target=target, as_of=as_of
            )
            return self._report(
                kind, counts, clock, started, position, target, completed, last_commit
            )

    def run_forever(
        self,
        *,
        interval: float,
        on_report: Callable[[SyncReport], None] | None,
    ) -> None:
        """Follow the log until the sync is stopped; reconnect with the retry policy's backoff
        after a lost connection, wait for the lock while another runner holds it."""
        self.prepare()
        policy = self.sync.db.retry
        failures = 0
        stop = self.sync._stop
        while not stop.is_set():
            delay = policy.wait_initial
            progressed = threading.Event()
            try:
                with self.sync._lock() as lock:
                    counts = _Counts()
                    try:
                        start, kind = self._starting_point(lock, False, counts)
                    except _Stop:
                        return
                    self._follow(lock, start, counts, interval, on_report, kind, progressed)
                return
            except ConfigError:
                raise
            except LockHeldError as exc:
                log.info("%s", exc)
                delay = max(1.0, self.sync.lock_ttl / 3)
            except AutoOpsError as exc:
                failures = 1 if progressed.is_set() else failures + 1
                delay = min(policy.wait_max, policy.wait_initial * 2 ** (failures - 1))
                log.error(
                    "sync %s: binlog stream failed (%d in a row), reconnecting in %.1f s: %s",
                    self.sync.name,
                    failures,
                    delay,
                    exc,
                )
            stop.wait(delay * random.uniform(1.0, 1.1))

    def _starting_point(
        self, lock: SyncLock, full: bool, counts: _Counts
    ) -> tuple[BinlogPosition, SyncKind]:
        checkpoint_data, marker = self.sync.cache.get_many_raw(
            [self._meta("checkpoint"), self._meta("full-pass")]
        )
        record = orjson.loads(checkpoint_data) if checkpoint_data is not None else None
        if (
            not full
            and marker is None
            and isinstance(record, dict)
            and record.get("source") == "binlog"
        ):
            start = BinlogPosition.from_record(record)
            if self._available(start):
                return start, "stream"
            if self.on_purged != "full":
                raise ConfigError(
                    f"the binary log of {self.sync.db.connection_settings.location} no longer "
                    f"holds {start.file} (the checkpoint {start}): it was purged before sync "
                    f"{self.sync.name} read it. A full pass is needed: run autoops-sync --full "
                    "(run_once(full=True)), or pass on_purged='full' to do it on its own"
                )
            log.warning(
                "sync %s: checkpoint %s was purged from the binary log; taking a new snapshot "
                "(on_purged='full')",
                self.sync.name,
                start,
            )
        return self._snapshot(lock, counts), "snapshot"

    # the snapshot ---------------------------------------------------------------------------

    def plan(self) -> TablePlan:
        if self._plan is None:
            self._plan = self.sync.plan()
        return self._plan

    def _snapshot(self, lock: SyncLock, counts: _Counts) -> BinlogPosition:
        """Copy the table as of one consistent snapshot, delete the keys of rows it does not
        hold, and return the binlog position that snapshot matches."""
        sync = self.sync
        plan = self.plan()
        full_key, checkpoint_key = self._meta("full-pass"), self._meta("checkpoint")
        marker = orjson.dumps({"source": "binlog", "started_at": utc_now().isoformat()})
        # The old checkpoint goes first: a snapshot cut short leaves none to resume from.
        self._write(lock, [], [checkpoint_key], [(full_key, marker)])
        seen: set[Any] = set()
        connection = sync.db.connection_settings.open_connection()
        try:
            cursor = connection.cursor(pymysql.cursors.DictCursor)
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            cursor.execute("SHOW STATUS LIKE 'binlog_snapshot_%%'")
            status = {str(row["Variable_name"]).lower(): row["Value"] for row in cursor.fetchall()}
            position = BinlogPosition(
                str(status["binlog_snapshot_file"]), int(status["binlog_snapshot_position"])
            )
            log.info("sync %s: snapshot at %s", sync.name, position)
            with Progress(
                f"sync {sync.name}", total=sync._pages.estimated_rows(), enabled=sync.progress
            ) as progress:
                for items, deletes, pks in self._snapshot_pages(cursor, plan):
                    if sync._stop.is_set():
                        raise _Stop
                    self._write(lock, items, deletes, [(full_key, marker)])
                    seen.update(pks)
                    counts.events += len(items) + len(deletes)
                    counts.written += len(items)
                    counts.deleted += len(deletes)
                    progress.advance(len(items) + len(deletes))
            cursor.execute("COMMIT")
        except pymysql.MySQLError as exc:
            raise ConnectError(
                f"sync {sync.name}: the snapshot read from "
                f"{sync.db.connection_settings.location} failed: {exc}"
            ) from None
        finally:
            connection.close()
        counts.deleted += self._reconcile(lock, plan, seen)
        record = self._checkpoint_record(position, None)
        self._write(lock, [], [full_key], [(checkpoint_key, record)])
        return position

    def _snapshot_pages(
        self, cursor: Any, plan: TablePlan
    ) -> Iterable[tuple[list[tuple[str, bytes]], list[str], list[Any]]]:
        sync = self.sync
        pk = quote_name(sync.db, plan.primary_key.name)
        prefix = sync.cache.key(sync.template.prefix)
        suffix = sync.template.suffix
        encode = plan.row_encoder(sync.cache.codec)
        last: Any = None
        while True:
            sql, params = plan.select_sql(
                sync.db,
                where="1 = 1" if last is None else f"{pk} > %s",
                order_by_updated=False,
                limit=sync.batch_size,
                key_parts=(prefix, suffix),
            )
            cursor.execute(sql, params if last is None else [*params, last])
            rows = cursor.fetchall()
            if not rows:
                return
            items: list[tuple[str, bytes]] = []
            deletes: list[str] = []
            pks: list[Any] = []
            for row in rows:
                if plan.server_side:
                    key, value = row["k"].decode(), row["v"]
                    gone = bool(row.get("deleted"))
                    last = row["pk"]
                else:
                    last = row[plan.primary_key.name]
                    key = f"{prefix}{last}{suffix}"
                    gone = plan.deleted is not None and plan.is_deleted(row[plan.deleted.name])
                    value = b"" if gone else encode(row)
                if gone:
                    deletes.append(key)
                else:
                    items.append((key, value))
                    pks.append(last)
            yield items, deletes, pks
            if len(rows) < sync.batch_size:
                return

    def _reconcile(self, lock: SyncLock, plan: TablePlan, seen: set[Any]) -> int:
        """Delete the sync's keys whose rows the snapshot did not hold."""
        sync = self.sync
        prefix = sync.cache.key(sync.template.prefix)
        namespace = len(sync.cache.key(""))
        gone: list[str] = []
        for keys in sync.cache.scan_prefix(prefix, 10_000):
            for raw in keys:
                name = raw.decode()
                value = sync.template.primary_key_of(name[namespace:], plan.primary_key.integer)
                if value is not None and value not in seen:
                    gone.append(name)
        for start in range(0, len(gone), _DELETE_CHUNK):
            self._write(lock, [], gone[start : start + _DELETE_CHUNK], [])
        return len(gone)

    # the stream -----------------------------------------------------------------------------

    def _stream(
        self,
        lock: SyncLock,
        start: BinlogPosition,
        counts: _Counts,
        *,
        target: BinlogPosition,
        as_of: dt.datetime,
    ) -> tuple[BinlogPosition, bool, dt.datetime | None]:
        """Apply the changes from ``start`` up to ``target``; returns where it stopped, whether
        it got there (False: stopped early) and the commit time of the last change applied."""
        if start.order >= target.order:
            self._write(lock, [], [], self._status_meta(start, as_of, 0, counts))
            return start, True, None
        applier = _Applier(self, lock, counts, start)
        reader = BinlogReader(
            self.sync.db.connection_settings,
            server_id=self.server_id,
            start=start,
            tables={(self.schema, self.table_name)},
            follow=False,
            key_columns=frozenset({self.sync.primary_key}),
            zone=session_zone(self.sync.db),
        )
        with reader:
            for item in reader.items(_FLUSH_EVERY):
                if self.sync._stop.is_set():
                    applier.flush(None, force=True)
                    return applier.position, False, applier.last_commit
                if item is None:
                    applier.flush(None)
                elif isinstance(item, EndOfLog):
                    break
                else:
                    applier.add(item)
                    if applier.position.order >= target.order:
                        break
                    applier.maybe_flush(reader.pending())
        applier.flush(as_of, behind=0, force=True)
        return applier.position, True, applier.last_commit

    def _follow(
        self,
        lock: SyncLock,
        start: BinlogPosition,
        counts: _Counts,
        interval: float,
        on_report: Callable[[SyncReport], None] | None,
        kind: SyncKind,
        progressed: threading.Event,
    ) -> None:
        applier = _Applier(self, lock, counts, start, progressed=progressed)
        started, clock = utc_now(), time.perf_counter()
        next_report = time.monotonic() + max(1.0, interval)
        reader = BinlogReader(
            self.sync.db.connection_settings,
            server_id=self.server_id,
            start=start,
            tables={(self.schema, self.table_name)},
            follow=True,
            key_columns=frozenset({self.sync.primary_key}),
            zone=session_zone(self.sync.db),
        )
        with reader:
            for item in reader.items(_FLUSH_EVERY):
                if self.sync._stop.is_set():
                    break
                if item is None:
                    applier.flush(None)
                elif isinstance(item, EndOfLog):
                    if item.position.order >= applier.position.order:
                        applier.at_end(item.at)
                else:
                    applier.add(item)
                    applier.maybe_flush(reader.pending())
                if on_report is not None and time.monotonic() >= next_report:
                    applier.flush(None)
                    on_report(
                        self._report(kind, counts, clock, started, applier.position, None, True)
                    )
                    kind, started, clock = "stream", utc_now(), time.perf_counter()
                    counts.events = counts.written = counts.deleted = 0
                    next_report = time.monotonic() + max(1.0, interval)
        applier.flush(None)

    # writing --------------------------------------------------------------------------------

    def _write(
        self,
        lock: SyncLock,
        items: list[tuple[str, bytes]],
        deletes: list[str],
        meta: list[tuple[str, bytes]],
    ) -> None:
        cache = self.sync.cache
        batch = FencedBatch.from_items(
            lock.fence, items, self.sync.ttl_ms, deletes, meta, lock.token
        )
        if not cache.write_fenced(batch):
            lost_lock(cache, lock, self.sync.name)

    def _checkpoint_record(self, position: BinlogPosition, behind: int | None) -> bytes:
        return orjson.dumps(
            {
                "source": "binlog",
                "value": str(position),
                **position.record(),
                "behind_bytes": behind,
                "committed_at": utc_now().isoformat(),
                "horizon": "binary log",
            }
        )

    def _status_meta(
        self,
        position: BinlogPosition,
        as_of: dt.datetime | None,
        behind: int | None,
        counts: _Counts,
    ) -> list[tuple[str, bytes]]:
        meta = [(self._meta("checkpoint"), self._checkpoint_record(position, behind))]
        if as_of is not None:
            record = {
                "started_at": as_of.isoformat(),
                "finished_at": utc_now().isoformat(),
                "last_pass": {
                    "kind": "stream",
                    "rows_read": counts.events,
                    "rows_reread": 0,
                    "keys_written": counts.written,
                    "keys_deleted": counts.deleted,
                    "duration_seconds": 0.0,
                },
            }
            meta.append((self._meta("last-pass"), orjson.dumps(record)))
        return meta

    def _report(
        self,
        kind: SyncKind,
        counts: _Counts,
        clock: float,
        started: dt.datetime,
        position: BinlogPosition | None,
        target: BinlogPosition | None,
        completed: bool,
        last_commit: dt.datetime | None = None,
    ) -> SyncReport:
        behind: int | None = None
        lag: float | None = None
        if position is not None:
            end = target if target is not None else self.binlog_end()
            behind = self.behind_bytes(position, end)
            if behind == 0:
                lag = 0.0
            elif last_commit is not None:
                lag = max(0.0, (utc_now() - last_commit).total_seconds())
        report = SyncReport(
            name=self.sync.name,
            kind=kind,
            rows_read=counts.events,
            keys_written=counts.written,
            keys_deleted=counts.deleted,
            duration_seconds=time.perf_counter() - clock,
            started_at=started,
            checkpoint=None if position is None else str(position),
            ok=completed,
            events_read=counts.events,
            behind_bytes=behind,
            binlog_lag_seconds=lag,
        )
        log.info("%s", report)
        return report

    # decoding -------------------------------------------------------------------------------

    def encoder(self, shape: tuple[str, ...], position: BinlogPosition) -> _Encoder:
        """The encoder for rows of this column layout (names and types at the change's time)."""
        encoder = self._encoders.get(shape)
        if encoder is not None:
            return encoder
        sync = self.sync
        names = shape
        if sync.primary_key not in names:
            raise ConfigError(
                f"sync {sync.name}: at {position} the table {sync.table!r} has no column "
                f"{sync.primary_key!r} any more (a schema change renamed or dropped it), so "
                f"the key template {sync.key_template!r} cannot be built. The sync stopped "
                "there: fix key= / primary_key= and run a full pass (autoops-sync --full)"
            )
        if sync.columns is None:
            cached = tuple(name for name in names if name not in sync.exclude)
        else:
            missing = [name for name in sync.columns if name not in names]
            if missing:
                raise ConfigError(
                    f"sync {sync.name}: at {position} the table {sync.table!r} has no column "
                    f"{', '.join(map(repr, missing))} any more (renamed or dropped by a schema "
                    "change). The sync stopped there: change columns= and run a full pass "
                    "(autoops-sync --full)"
                )
            cached = tuple(name for name in sync.columns if name not in sync.exclude)
        plan = self.plan()
        known = {column.name: column for column in plan.cached}
        fixes = tuple(
            (name, fix)
            for name in cached
            if name in known and (fix := known[name].to_json) is not None
        )
        deleted = plan.deleted.name if plan.deleted is not None else None
        encoder = _Encoder(sync.primary_key, cached, fixes, deleted)
        self._encoders[shape] = encoder
        return encoder

    def schema_changed(self) -> None:
        """A DDL statement went by: re-read the table's columns before the next row."""
        self._encoders.clear()
        self._plan = None
        self.sync._plan = None


class _Applier:
    """Turns transactions into pending key writes and writes them with their checkpoint."""

    def __init__(
        self,
        engine: BinlogSync,
        lock: SyncLock,
        counts: _Counts,
        start: BinlogPosition,
        *,
        progressed: threading.Event | None = None,
    ) -> None:
        self.engine = engine
        self.lock = lock
        self.counts = counts
        self.position = start
        self.written = start
        self.pending: dict[str, bytes | None] = {}
        self.last_commit: dt.datetime | None = None
        self.last_flush = time.monotonic()
        self.last_status = 0.0
        self.progressed = progressed
        sync = engine.sync
        self.prefix = sync.cache.key(sync.template.prefix)
        self.suffix = sync.template.suffix
        self.batch_size = sync.batch_size
        codec = sync.cache.codec
        # As the polling sync's row encoder: BIGINTs past 2**53 become strings unless the
        # codec says otherwise.
        if isinstance(codec, JsonCodec) and codec.safe_integers is None:
            codec = JsonCodec(safe_integers=True, fraction_digits=codec.fraction_digits)
        self.encode = codec.encode

    def _key(self, encoder: _Encoder, row: dict[str, Any]) -> str:
        pk = row[encoder.pk]
        if not isinstance(pk, int | str) or isinstance(pk, bool):
            raise ConfigError(
                f"primary key {encoder.pk!r} of {self.engine.sync.table!r} holds "
                f"{type(pk).__name__} values; CacheSync keys rows by integer or text primary keys"
            )
        return f"{self.prefix}{pk}{self.suffix}"

    def add(self, transaction: Transaction) -> None:
        """Apply one transaction to the pending writes (a later change to a key wins)."""
        if transaction.ddl is not None:
            self.flush(None)
            self.engine.schema_changed()
        pending = self.pending
        position = transaction.end
        shape: tuple[str, ...] | None = None
        encoder: _Encoder | None = None
        for change in transaction.changes:
            # The changes of one row event share their column tuple: one lookup an event.
            if change.columns is not shape or encoder is None:
                shape = change.columns
                encoder = self.engine.encoder(shape, position)
            pk = encoder.pk
            self.counts.events += 1
            before, after = change.before, change.after
            if after is None:
                assert before is not None
                pending[self._key(encoder, before)] = None
                continue
            key = self._key(encoder, after)
            if before is not None and before[pk] != after[pk]:
                pending[self._key(encoder, before)] = None
            if encoder.deleted is not None and _is_deleted(after[encoder.deleted]):
                pending[key] = None
                continue
            value = {name: after[name] for name in encoder.names}
            for name, fix in encoder.fixes:
                value[name] = fix(value[name])
            pending[key] = self.encode(value)
        self.position = position
        if transaction.committed_at is not None:
            self.last_commit = transaction.committed_at

    def maybe_flush(self, more_waiting: bool) -> None:
        if len(self.pending) >= self.batch_size or (
            not more_waiting and time.monotonic() - self.last_flush >= _FLUSH_EVERY
        ):
            self.flush(None)

    def at_end(self, at: dt.datetime) -> None:
        """The reader reached the log's end and everything before it is here."""
        self.flush(at, behind=0, force=self.position != self.written)

    def flush(
        self, as_of: dt.datetime | None, behind: int | None = None, *, force: bool = False
    ) -> None:
        """Write the pending keys and the checkpoint after them, in one fenced step. Without
        keys to write, a moved position or a new "caught up" time is written at most once a
        second (``force``: now)."""
        now = time.monotonic()
        if not self.pending and not force:
            due = now - self.last_status >= _STATUS_EVERY
            if not due or (self.position == self.written and as_of is None):
                return
        engine = self.engine
        if behind is None:
            end, read_at = engine.recent_end()
            behind = engine.behind_bytes(self.position, end)
            if behind == 0 and (as_of is None or as_of < read_at):
                # Every change committed before the end was read is applied.
                as_of = read_at
        if as_of is None and self.last_commit is not None and self.pending:
            as_of = self.last_commit
        items = [(key, value) for key, value in self.pending.items() if value is not None]
        deletes = [key for key, value in self.pending.items() if value is None]
        engine._write(
            self.lock,
            items,
            deletes,
            engine._status_meta(self.position, as_of, behind, self.counts),
        )
        self.counts.written += len(items)
        self.counts.deleted += len(deletes)
        self.pending = {}
        self.written = self.position
        self.last_flush = self.last_status = now
        if self.progressed is not None:
            self.progressed.set()


def _is_deleted(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool | int):
        return value != 0
    return True
