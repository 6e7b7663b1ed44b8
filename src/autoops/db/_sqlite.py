"""SQLite through the standard library: the embedded default for demos and small apps."""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._config import SQLITE_OPTIONS, DbUrl, convert_options
from .._connection import DbConnectionSettings
from .._errors import (
    ConfigError,
    ConnectError,
    IntegrityError,
    QueryError,
    TransactionConflictError,
)
from .._retry import Failure, RetryPolicy
from ._client import DbClient, Row
from ._params import Params, adapt_sqlite_params, to_sqlite_style
from ._replicas import REPLICA_OPTIONS
from ._rows import row_builder

__all__ = ["SQLiteClient"]

_memory_names = itertools.count(1)


def _rows(cursor: sqlite3.Cursor, rows: list[Any]) -> list[Row]:
    return row_builder(tuple(column[0] for column in cursor.description or ()))(rows)


class SQLiteClient(DbClient):
    """A :class:`DbClient` for an SQLite file (or ``:memory:``), in WAL mode, autocommit.

    Dates, times and Decimals are stored as text in MySQL's format and come back as text.
    """

    dialect = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 5.0,
        journal_mode: str = "wal",
        retry: RetryPolicy | None = None,
    ) -> None:
        text = os.fspath(path)
        super().__init__(DbUrl(dialect="sqlite", path=text), retry=retry)
        self._timeout = timeout
        self._journal_mode = journal_mode
        self._anchor: sqlite3.Connection | None = None
        if text == ":memory:":
            # One in-memory database shared by this client's threads, kept alive by an anchor.
            self._target = (
                f"file:autoops-memory-{os.getpid()}-{next(_memory_names)}?mode=memory&cache=shared"
            )
            self._uri = True
            self._anchor = self._connect()
        else:
            self._target = text
            self._uri = False

    @classmethod
    def from_parsed(
        cls, url: DbUrl, *, retry: RetryPolicy | None = None, **options: Any
    ) -> SQLiteClient:
        """Build from a parsed URL; keyword ``options`` override the URL's query options."""
        replica_options = [name for name in REPLICA_OPTIONS if name in options]
        if replica_options:
            raise ConfigError(
                f"{', '.join(replica_options)} given for the SQLite database {url.redacted()}: "
                "an SQLite file has no replicas; remove the option, or use a mysql:// URL"
            )
        merged = {**url.options, **convert_options(options, SQLITE_OPTIONS, url.redacted())}
        return cls(url.path, retry=retry, **merged)

    @classmethod
    def _from_connection_settings(
        cls, settings: DbConnectionSettings, *, retry: RetryPolicy | None
    ) -> SQLiteClient:
        return cls(settings.path, retry=retry)

    def _connect(self) -> sqlite3.Connection:
        if not self._uri:
            parent = Path(self._target).parent
            if not parent.is_dir():
                raise ConnectError(
                    f"cannot open SQLite database {self._target}: directory {parent} does not "
                    "exist; create it or fix the path"
                )
        connection = sqlite3.connect(
            self._target,
            timeout=self._timeout,
            isolation_level=None,
            check_same_thread=False,
            uri=self._uri,
        )
        if not self._uri and self._journal_mode:
            mode = self._journal_mode.lower()
            if mode not in {"wal", "delete", "truncate", "persist", "memory", "off"}:
                connection.close()
                raise QueryError(f"unknown SQLite journal_mode {self._journal_mode!r}")
            connection.execute(f"PRAGMA journal_mode={mode}")
        return connection

    def _is_alive(self, connection: sqlite3.Connection) -> bool:
        return True

    def _close_connection(self, connection: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            connection.close()

    def _statement(self, sql: str, params: Params) -> tuple[str, Any]:
        if params is None:
            return sql, ()
        return to_sqlite_style(sql), adapt_sqlite_params(params)

    def _run(self, connection: sqlite3.Connection, kind: str, sql: str, params: Any) -> Any:
        if kind == "executemany":
            # Always inside a transaction (DbClient.executemany opens one): one fsync, not one
            # per row.
            values = [adapt_sqlite_params(p) for p in params]
            return connection.executemany(to_sqlite_style(sql), values).rowcount
        statement, values = self._statement(sql, params)
        cursor = connection.execute(statement, values)
        if kind == "query":
            return _rows(cursor, cursor.fetchall())
        return cursor.rowcount

    def _iterate(
        self, connection: sqlite3.Connection, sql: str, params: Params, batch_size: int
    ) -> Iterator[list[Row]]:
        statement, values = self._statement(sql, params)
        cursor = connection.execute(statement, values)
        while rows := cursor.fetchmany(batch_size):
            yield _rows(cursor, rows)

    def _begin(self, connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")

    def _commit(self, connection: sqlite3.Connection) -> None:
        connection.execute("COMMIT")

    def _rollback(self, connection: sqlite3.Connection) -> None:
        if connection.in_transaction:
            connection.execute("ROLLBACK")

    def _ping(self, connection: sqlite3.Connection) -> None:
        connection.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close every connection; an in-memory database is gone afterwards."""
        super().close()
        if self._anchor is not None:
            self._close_connection(self._anchor)
            self._anchor = None

    def _classify(self, exc: BaseException, *, operation: str) -> Failure:
        where = self._where
        text = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ConnectError):
            return Failure(False, ConnectError, str(exc))
        if isinstance(exc, QueryError):
            return Failure(False, type(exc), str(exc))
        if isinstance(exc, sqlite3.OperationalError):
            lowered = str(exc).lower()
            if "locked" in lowered or "busy" in lowered:
                return Failure(
                    True,
                    TransactionConflictError,
                    f"{operation} on {where}: the database is locked by another writer ({exc})",
                )
            if "unable to open" in lowered:
                return Failure(
                    False,
                    ConnectError,
                    f"cannot open SQLite database {self.url.path} ({exc}); check the path and its "
                    "permissions",
                )
        if isinstance(exc, sqlite3.IntegrityError):
            return Failure(
                False, IntegrityError, f"{operation} on {where} broke a constraint: {exc}"
            )
        if isinstance(exc, sqlite3.ProgrammingError) and "binding" in str(exc).lower():
            return Failure(
                False,
                QueryError,
                f"{operation}: the parameters do not match the statement's %s / %(name)s "
                f"placeholders ({exc})",
            )
        return Failure(False, QueryError, f"{operation} on {where} failed: {text}")
