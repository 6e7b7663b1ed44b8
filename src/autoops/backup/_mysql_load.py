"""Loading a ``mariadb-dump``/``mysqldump`` stream on several connections, as myloader loads
mydumper's files.

The server parses and inserts each statement on one thread per connection, so a dump fed to one
``mariadb`` client is bound by one core of the server. Here the client still runs everything but
the table data (DDL, ``DELIMITER`` blocks of triggers and routines, views, events, session
``SET``\\s), and each ``INSERT INTO `t` VALUES ...`` statement goes to one of several worker
connections. Order is kept where it matters: a table's rows start only after the client has run
everything before them (its ``CREATE TABLE``), and nothing after them (its triggers, the next
table, ``ENABLE KEYS``) runs until every worker has finished them. Each worker first replays the
session ``SET``\\s the dump made so far (character set, ``TIME_ZONE='+00:00'``, ``SQL_MODE``,
``UNIQUE_CHECKS=0``, ``FOREIGN_KEY_CHECKS=0``), so its rows are read exactly as the client would
read them.

A statement starting ``INSERT INTO ``` at the start of a line, outside a ``DELIMITER`` block, is
table data: the dump tools escape newlines inside values, so it ends at the first ``;`` that ends
a line. The ``LOCK TABLES ... WRITE`` around a table's rows is dropped, since it would lock the
workers out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Final

from .._pipeline import read_ahead
from ..db import MySQLClient
from ._errors import BackupError

__all__ = ["LOAD_CONNECTIONS", "load_dump", "tool_message"]

log: Final = logging.getLogger("autoops.backup")

LOAD_CONNECTIONS: Final = min(4, max(2, os.cpu_count() or 2))
"""Worker connections for table data: one per core here, 2 to 4 (myloader's default is 4).
Rows of one table inserted on more connections than the server has free cores cost it more CPU
(measured: +4% on 2 connections, +15% on 4, on a 2-core machine)."""

_DATA: Final = b"INSERT INTO `"
_SYNC: Final = b"autoops-restore-sync-"
# Deadlock and lock wait timeout: the statement (its own transaction) was rolled back whole.
_RETRIED_ERRORS: Final = frozenset({1213, 1205})
_ATTEMPTS: Final = 3


def tool_message(text: str) -> str:
    """The last ten non-empty lines a dump or client tool printed (never a password: the tools
    read theirs from an option file)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-10:])


def _table_of(statement: bytes) -> str:
    """The table name of ``INSERT INTO `name` ...`` (backquotes doubled inside the name)."""
    name = bytearray()
    index = len(_DATA)
    while index < len(statement):
        byte = statement[index]
        if byte == 0x60:
            if statement[index + 1 : index + 2] != b"`":
                break
            index += 1
        name.append(byte)
        index += 1
    return name.decode("utf-8", "replace")


def _is_lock_line(line: bytes) -> bool:
    stripped = line.strip()
    return stripped == b"UNLOCK TABLES;" or (
        stripped.startswith(b"LOCK TABLES `") and stripped.endswith(b"` WRITE;")
    )


def _is_session_set(line: bytes) -> bool:
    """A one-line ``SET`` (``/*!40101 SET ... */;`` as the dump tools write them)."""
    stripped = line.strip()
    if not stripped.endswith(b";"):
        return False
    if stripped.startswith(b"/*") and b"*/" in stripped:
        body = stripped[2 : stripped.index(b"*/")].lstrip(b"!M0123456789 ")
    else:
        body = stripped
    return body[:4].upper() == b"SET "


class _Failure(Exception):
    """The first error of any connection, re-raised as a :class:`BackupError` by the loader."""

    def __init__(self, message: str, tool_message: str = "") -> None:
        super().__init__(message)
        self.tool_message = tool_message


class _Workers:
    """Connections that run the data statements, in any order, each after replaying the session
    statements the dump has made so far."""

    def __init__(self, db: MySQLClient, count: int) -> None:
        self._db = db
        self._pending: queue.Queue[tuple[str, bytes, int] | None] = queue.Queue(maxsize=2 * count)
        self.session: list[bytes] = []
        self.failure: _Failure | None = None
        self._failed = threading.Event()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"autoops-restore-load-{n}", daemon=True)
            for n in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, table: str, statement: bytes) -> None:
        """Queue a data statement (blocks while the workers are busy, so memory stays bounded)."""
        while not self._failed.is_set():
            try:
                self._pending.put((table, statement, len(self.session)), timeout=0.1)
                return
            except queue.Full:
                continue

    def wait(self) -> None:
        """Until every queued statement has run (or a worker failed)."""
        self._pending.join()

    def fail(self, failure: _Failure) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = failure
        self._failed.set()

    def close(self) -> None:
        """Stop the workers (abandoning queued statements) and close their connections."""
        self._failed.set()
        for _ in self._threads:
            with contextlib.suppress(queue.Full):
                self._pending.put_nowait(None)
        for thread in self._threads:
            thread.join(timeout=5)
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(Exception):
                    connection.close()
            self._connections.clear()

    def _connect(self) -> Any:
        connection = self._db.connection_settings.open_connection()
        with self._lock:
            self._connections.append(connection)
        return connection

    def _work(self) -> None:
        connection: Any = None
        replayed = 0
        while True:
            try:
                item = self._pending.get(timeout=0.1)
            except queue.Empty:
                if self._failed.is_set() and self._pending.empty():
                    return
                continue
            try:
                if item is None:
                    return
                if self._failed.is_set():
                    continue
                table, statement, session_length = item
                try:
                    if connection is None:
                        connection = self._connect()
                    for setting in self.session[replayed:session_length]:
                        connection.query(setting)
                    replayed = max(replayed, session_length)
                    self._run(connection, statement)
                except Exception as exc:
                    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
                    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
                    reason = f"ERROR {code}: {text}" if code else f"{type(exc).__name__}: {text}"
                    failure = _Failure(
                        f"loading the rows of table `{table}` failed: {reason}", reason
                    )
                    self.fail(failure)
            finally:
                self._pending.task_done()

    def _run(self, connection: Any, statement: bytes) -> None:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                connection.query(statement)
                return
            except Exception as exc:
                code = exc.args[0] if exc.args else None
                if code not in _RETRIED_ERRORS or attempt == _ATTEMPTS:
                    raise
                log.info("retrying a restore statement after error %s (attempt %d)", code, attempt)


class _Client:
    """The ``mariadb``/``mysql`` client that runs everything but table data. ``sync`` waits until
    it has run all it was sent, by sending a ``SELECT`` of a marker and reading it back."""

    def __init__(self, argv: list[str], stderr: IO[bytes]) -> None:
        self._stderr = stderr
        self.name = Path(argv[0]).name
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )
        assert self.process.stdin is not None
        self._stdin: IO[bytes] = self.process.stdin
        self._seen = 0
        self._ended = False
        self._changed = threading.Condition()
        self._sent = 0
        self._reader = threading.Thread(
            target=self._read, name="autoops-restore-client", daemon=True
        )
        self._reader.start()

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        for line in stdout:
            if line.startswith(_SYNC):
                with self._changed:
                    self._seen = int(line[len(_SYNC) :].strip() or 0)
                    self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def write(self, data: bytes) -> None:
        try:
            self._stdin.write(data)
        except BrokenPipeError:
            raise self.failure() from None

    def sync(self) -> None:
        self._sent += 1
        self.write(b"SELECT '" + _SYNC + str(self._sent).encode() + b"';\n")
        try:
            self._stdin.flush()
        except BrokenPipeError:
            raise self.failure() from None
        with self._changed:
            while self._seen < self._sent and not self._ended:
                self._changed.wait()
            if self._seen < self._sent:
                raise self.failure()

    def finish(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._stdin.close()
        if self.process.wait() != 0:
            raise self.failure()
        self._reader.join()
        message = self.message()
        if message:
            log.warning("%s said while restoring: %s", self.name, message)

    def message(self) -> str:
        self._stderr.seek(0)
        return tool_message(self._stderr.read().decode("utf-8", "replace"))

    def failure(self) -> _Failure:
        code = self.process.wait()
        message = self.message()
        return _Failure(
            f"{self.name} failed (exit {code}): {message or 'it stopped reading its input'}",
            message,
        )

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(OSError):
            self._stdin.close()
        self.process.wait()
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _feed(chunks: Iterable[bytes], client: _Client, workers: _Workers, progress: Any) -> None:
    """Split the dump between the client and the workers, keeping the order that matters."""
    buffer = b""
    position = 0
    delimiter = b";"
    in_data = False

    def check() -> None:
        if workers.failure is not None:
            raise workers.failure

    def units(final: bool) -> None:
        nonlocal position, delimiter, in_data
        while position < len(buffer):
            if delimiter == b";" and len(buffer) - position < len(_DATA) and not final:
                return
            if delimiter == b";" and buffer.startswith(_DATA, position):
                end = buffer.find(b";\n", position)
                if end == -1:
                    if not final:
                        return
                    end = len(buffer.rstrip(b";\n"))
                if not in_data:
                    client.sync()  # the table exists before its rows arrive
                    in_data = True
                statement = buffer[position:end]
                workers.submit(_table_of(statement), statement)
                check()
                position = end + 2
                continue
            newline = buffer.find(b"\n", position)
            if newline == -1:
                if not final:
                    return
                newline = len(buffer) - 1
            line = buffer[position : newline + 1]
            position = newline + 1
            if delimiter == b";" and _is_lock_line(line):
                continue
            if in_data:
                workers.wait()  # every row is in before the table's triggers or the next table
                check()
                in_data = False
            if line.startswith(b"DELIMITER "):
                delimiter = line[len(b"DELIMITER ") :].strip() or b";"
            elif delimiter == b";" and _is_session_set(line):
                workers.session.append(line.strip().rstrip(b";"))
            client.write(line)

    for chunk in read_ahead(chunks):
        buffer = buffer[position:] + chunk
        position = 0
        units(final=False)
        if progress is not None:
            progress.advance(len(chunk))
    buffer = buffer[position:]
    position = 0
    units(final=True)
    if in_data:
        workers.wait()
        check()


def load_dump(
    chunks: Iterable[bytes],
    db: MySQLClient,
    client_argv: list[str],
    *,
    where: str,
    connections: int = LOAD_CONNECTIONS,
    progress: Any = None,
) -> None:
    """Run a dump into ``db``: ``client_argv`` (the ``mariadb``/``mysql`` client for the
    database) runs the definitions, ``connections`` worker connections the table data. The
    first error of any of them stops all and raises :class:`BackupError` naming the table or the
    client's message and saying what the target holds."""
    argv = [*client_argv[:2], "--skip-column-names", "--unbuffered", *client_argv[2:]]
    with tempfile.TemporaryFile() as stderr:
        _load(chunks, db, _Client(argv, stderr), connections, where, progress)


def _load(
    chunks: Iterable[bytes],
    db: MySQLClient,
    client: _Client,
    connections: int,
    where: str,
    progress: Any,
) -> None:
    workers = _Workers(db, connections)
    try:
        _feed(chunks, client, workers, progress)
        client.finish()
    except _Failure as failure:
        workers.close()
        client.kill()
        raise BackupError(
            f"restoring into {where} failed: {failure}; the restore stopped on every connection "
            "and the database holds what was loaded before the failure (some objects and rows): "
            "drop it, or fix the cause and restore again with replace=True",
            tool_message=failure.tool_message,
        ) from None
    except BaseException:
        workers.close()
        client.kill()
        raise
    workers.close()
    client.kill()
