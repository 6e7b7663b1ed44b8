"""Reading the binary log: committed transactions of one table, each with the position after it.

python-mysql-replication decodes the events; this module groups them into transactions (a
MariaDB GTID event or ``BEGIN`` opens one, ``XID`` or ``COMMIT`` closes it, a DDL statement is
one of its own) and knows where the stream may be resumed: only between transactions, so a
checkpoint never lands inside one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.constants import BINLOG, FIELD_TYPE
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from .._connection import DbConnectionSettings
from .._errors import AuthenticationError, ConfigError, ConnectError, QueryError
from ._binlog_rows import Reader, Skipper, decode_images, fast_readers
from ._binlog_zone import UTC, SessionZone

__all__ = [
    "BinlogPosition",
    "BinlogReader",
    "Change",
    "EndOfLog",
    "Transaction",
    "binlog_error",
]

log = logging.getLogger("autoops.sync")

_ROW_EVENTS: Final = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)
# MariaDB's GTID event flag for an event group that is not a transaction (DDL, Aria/MyISAM).
_FL_STANDALONE: Final = 1
_FILE_NUMBER: Final = re.compile(r"\.(\d+)$")
# 1236: the server cannot send from the requested file and position (purged, or never there).
_ER_MASTER_FATAL_READING: Final = 1236
_ER_ACCESS: Final = (1045, 1227, 1044, 1142)
_QUEUE_ITEMS: Final = 2000
_PARTIAL_UPDATE: Final = BINLOG.PARTIAL_UPDATE_ROWS_EVENT
_TIMESTAMPS: Final = (FIELD_TYPE.TIMESTAMP, FIELD_TYPE.TIMESTAMP2)


@dataclass(frozen=True, slots=True, order=False)
class BinlogPosition:
    """A place in the binary log where reading may resume: between two transactions."""

    file: str
    pos: int
    gtid: str | None = None

    @property
    def order(self) -> tuple[int, int]:
        """Sortable: the file's sequence number, then the byte offset."""
        found = _FILE_NUMBER.search(self.file)
        return (int(found.group(1)) if found else 0, self.pos)

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"

    def record(self) -> dict[str, Any]:
        """The checkpoint's fields."""
        return {"file": self.file, "pos": self.pos, "gtid": self.gtid}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> BinlogPosition:
        return cls(str(record["file"]), int(record["pos"]), record.get("gtid"))


@dataclass(slots=True)
class Change:
    """One row change: ``before`` is None for an insert, ``after`` None for a delete."""

    before: dict[str, Any] | None
    after: dict[str, Any] | None
    columns: tuple[str, ...]
    """The table's column names at the change's time (binlog_row_metadata=FULL)."""


@dataclass(slots=True)
class Transaction:
    """A committed transaction (or DDL statement) and the position right after it."""

    end: BinlogPosition
    committed_at: dt.datetime | None
    changes: list[Change] = field(default_factory=list)
    ddl: str | None = None


@dataclass(frozen=True, slots=True)
class EndOfLog:
    """The reader reached the end of the binary log (``at``: when it knew)."""

    at: dt.datetime
    position: BinlogPosition


@dataclass(slots=True)
class _Failed:
    error: BaseException


def binlog_error(exc: BaseException, where: str, start: BinlogPosition | None) -> Exception:
    """An autoops error for a failure of the binlog connection: a purged or missing file is a
    ConfigError naming the way out; access errors name the privilege; the rest may be retried."""
    code = exc.args[0] if isinstance(exc, pymysql.MySQLError) and exc.args else None
    text = (
        str(exc.args[1]) if isinstance(exc, pymysql.MySQLError) and len(exc.args) > 1 else str(exc)
    )
    if code == _ER_MASTER_FATAL_READING:
        return ConfigError(
            f"the binary log at {where} no longer holds the checkpoint {start} ({text}): it "
            "was purged before this sync read it. A full pass is needed: run autoops-sync "
            "--full (CacheSync.run_once(full=True)), or pass on_purged='full' to do it on its own"
        )
    if code in _ER_ACCESS:
        return AuthenticationError(
            f"the server at {where} refused the binlog connection ({text}); the user needs "
            "REPLICATION SLAVE: GRANT REPLICATION SLAVE ON *.* TO the sync's user"
        )
    if isinstance(exc, pymysql.MySQLError | OSError | EOFError | ConnectionError):
        return ConnectError(f"binlog connection to {where} failed: {type(exc).__name__}: {text}")
    return QueryError(f"reading the binary log at {where} failed: {type(exc).__name__}: {text}")


def _utc(timestamp: int) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC) if timestamp else None


class BinlogReader:
    """Reads the binary log from ``start`` in a thread of its own and hands over transactions
    touching ``tables`` (``(schema, table)`` pairs; others pass as empty transactions, so the
    position still advances). ``follow``: keep reading at the end (heartbeats every second)
    instead of stopping there. ``key_columns``: what the caller needs of the images that only
    locate a key (see :func:`_changes`). ``zone``: the session time zone TIMESTAMPs are read in
    (the one the sync's SELECTs use)."""

    def __init__(
        self,
        settings: DbConnectionSettings,
        *,
        server_id: int,
        start: BinlogPosition,
        tables: set[tuple[str, str]],
        follow: bool,
        key_columns: frozenset[str] | None = None,
        zone: SessionZone = UTC,
    ) -> None:
        self.settings = settings
        self.zone = zone
        self.server_id = server_id
        self.start = start
        self.tables = tables
        self.follow = follow
        self.key_columns = key_columns
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_ITEMS)
        self._cancel = threading.Event()
        self._stream: BinLogStreamReader | None = None
        self._thread = threading.Thread(
            target=self._produce, name="autoops-sync-binlog", daemon=True
        )

    def __enter__(self) -> BinlogReader:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading: a blocked read is woken by shutting its socket."""
        self._cancel.set()
        stream = self._stream
        connection = getattr(stream, "_stream_connection", None) if stream else None
        sock = getattr(connection, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)

    def items(self, idle: float) -> Iterator[Transaction | EndOfLog | None]:
        """Transactions in commit order, EndOfLog at the end, and None whenever nothing has
        come for ``idle`` seconds (the caller flushes then). Raises what the reader raised."""
        while True:
            try:
                item = self._queue.get(timeout=idle)
            except queue.Empty:
                yield None
                continue
            if isinstance(item, _Failed):
                raise item.error
            assert isinstance(item, Transaction | EndOfLog)
            yield item
            if isinstance(item, EndOfLog) and not self.follow:
                return

    def pending(self) -> bool:
        """Whether items wait to be taken (the caller may take more before writing)."""
        return not self._queue.empty()

    def _put(self, item: object) -> None:
        while not self._cancel.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _connect(self) -> BinLogStreamReader:
        arguments = self.settings.pymysql_arguments()
        arguments.pop("database", None)
        arguments.pop("autocommit", None)
        arguments.pop("local_infile", None)
        arguments["passwd"] = arguments.pop("password")
        # Heartbeats come every second when the log is idle, so a silent socket past this
        # means the server is gone.
        arguments["read_timeout"] = 30
        if arguments.get("ssl") is None:
            arguments.pop("ssl", None)
        return BinLogStreamReader(
            arguments,
            server_id=self.server_id,
            log_file=self.start.file,
            log_pos=self.start.pos,
            resume_stream=True,
            blocking=self.follow,
            only_events=[
                WriteRowsEvent,
                UpdateRowsEvent,
                DeleteRowsEvent,
                XidEvent,
                QueryEvent,
                MariadbGtidEvent,
                GtidEvent,
                RotateEvent,
                HeartbeatLogEvent,
            ],
            only_tables=sorted({table for _, table in self.tables}),
            slave_heartbeat=1.0 if self.follow else None,
            enable_logging=False,
        )

    def _produce(self) -> None:
        try:
            self._read()
        except BaseException as exc:
            if not self._cancel.is_set():
                self._put(_Failed(binlog_error(exc, self.settings.location, self.start)))

    def _read(self) -> None:
        stream = self._stream = self._connect()
        try:
            current: Transaction | None = None
            standalone = False
            gtid = self.start.gtid
            safe = self.start
            for event in stream:
                if self._cancel.is_set():
                    return
                position = BinlogPosition(stream.log_file, stream.log_pos, gtid)
                if isinstance(event, MariadbGtidEvent | GtidEvent):
                    gtid = str(event.gtid)
                    current = Transaction(safe, None)
                    standalone = bool(getattr(event, "flags", 0) & _FL_STANDALONE) and isinstance(
                        event, MariadbGtidEvent
                    )
                elif isinstance(event, _ROW_EVENTS):
                    if current is not None and (event.schema, event.table) in self.tables:
                        current.changes.extend(_changes(event, self.key_columns, self.zone))
                elif isinstance(event, XidEvent):
                    safe = BinlogPosition(stream.log_file, event.packet.log_pos, gtid)
                    self._put(
                        Transaction(safe, _utc(event.timestamp), current.changes if current else [])
                    )
                    current = None
                elif isinstance(event, QueryEvent):
                    query = _text(event.query).strip()
                    if query.upper() == "BEGIN":
                        current = current or Transaction(safe, None)
                        continue
                    closes = query.upper() == "COMMIT" or standalone or current is None
                    if not closes:
                        continue
                    safe = BinlogPosition(stream.log_file, event.packet.log_pos, gtid)
                    ddl = None if query.upper() == "COMMIT" else query
                    self._put(
                        Transaction(
                            safe,
                            _utc(event.timestamp),
                            current.changes if current else [],
                            ddl=ddl,
                        )
                    )
                    current, standalone = None, False
                elif isinstance(event, HeartbeatLogEvent):
                    if current is None:
                        self._put(EndOfLog(dt.datetime.now(dt.UTC), safe))
                elif current is None and position.pos:
                    safe = position
            # A transaction is written to the log whole at its commit, so a read that ends
            # finds none half-written; ``safe`` is the end of the last one.
            self._put(EndOfLog(dt.datetime.now(dt.UTC), safe))
        finally:
            stream.close()
            self.zone.close()


def _text(query: Any) -> str:
    return query.decode("utf-8", "replace") if isinstance(query, bytes) else str(query)


def _changes(
    event: Any, key_columns: frozenset[str] | None = None, zone: SessionZone = UTC
) -> Iterator[Change]:
    """The event's row changes, TIMESTAMPs in ``zone``; with ``key_columns``, an update's
    before image and a delete's image hold only those columns (all the applier needs of them)
    when the fast decoder reads the event."""
    columns = tuple(column.name for column in event.columns)
    images = 2 if isinstance(event, UpdateRowsEvent) else 1
    table = event.table_map[event.table_id]
    # Compiled once per table map (the library keeps one Table per map event).
    if not hasattr(table, "_autoops_readers"):
        table._autoops_readers = fast_readers(table, zone)
    readers: tuple[tuple[Reader, Skipper], ...] | None = table._autoops_readers
    if readers is not None and event.complete and event.event_type != _PARTIAL_UPDATE:
        data = event.packet.read(event.event_size - event.packet.read_bytes)
        locates = not isinstance(event, WriteRowsEvent)
        rows = decode_images(data, readers, columns, images, key_columns, first_locates=locates)
        for row in rows:
            if images == 2:
                yield Change(row[0], row[1], columns)
            elif isinstance(event, WriteRowsEvent):
                yield Change(None, row[0], columns)
            else:
                yield Change(row[0], None, columns)
        return
    stamps = [column.name for column in event.columns if column.type in _TIMESTAMPS]
    shift = _shifter(stamps, zone) if stamps and zone.offset != 0 else _unchanged
    if isinstance(event, WriteRowsEvent):
        for row in event.rows:
            yield Change(None, shift(row["values"]), columns)
    elif isinstance(event, UpdateRowsEvent):
        for row in event.rows:
            yield Change(shift(row["before_values"]), shift(row["after_values"]), columns)
    else:
        for row in event.rows:
            yield Change(shift(row["values"]), None, columns)


def _unchanged(values: dict[str, Any]) -> dict[str, Any]:
    return values


def _shifter(stamps: list[str], zone: SessionZone) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Moves the library's TIMESTAMPs (naive UTC) into ``zone``, in place."""

    def shift(values: dict[str, Any]) -> dict[str, Any]:
        for name in stamps:
            value = values.get(name)
            if isinstance(value, dt.datetime):
                values[name] = zone.from_utc(value)
        return values

    return shift
