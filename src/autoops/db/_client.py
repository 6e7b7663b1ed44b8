"""DbClient: the shared shape of the MySQL and SQLite clients.

Connections are per thread (never shared between threads) and opened lazily. Reads are retried on
transient failures; a write is retried only when it provably never reached the server, otherwise a
lost connection is an :class:`OutcomeUnknownError`. Transactions (and ``executemany``, which is one)
are retried as a whole by :meth:`DbClient.run_transaction`.
"""

from __future__ import annotations

import abc
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, TypeVar

from .._config import DbUrl, Dialect, Settings, load_settings
from .._connection import DbConnectionSettings
from .._display import html_table
from .._errors import (
    AutoOpsError,
    ConfigError,
    ConnectError,
    OutcomeUnknownError,
    TransactionConflictError,
)
from .._retry import Failure, RetryPolicy
from .._schemes import SchemeTable
from ._identifiers import quote_identifier
from ._params import Params

if TYPE_CHECKING:
    from ._replicas import ReplicaSet

__all__ = ["DbClient", "Row", "Transaction"]

Row = dict[str, Any]
T = TypeVar("T")


class _Lost(Exception):
    """Internal: the connection was lost; ``sent`` says whether the statement reached the wire."""

    def __init__(self, cause: BaseException, *, sent: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.sent = sent


class Transaction:
    """Statements inside one transaction, bound to one connection; nothing here is retried alone.

    Use it through ``with db.transaction() as tx`` or ``db.run_transaction(fn)``.
    """

    def __init__(self, client: DbClient, connection: Any) -> None:
        self._client = client
        self._connection = connection

    def query(self, sql: str, params: Params = None) -> list[Row]:
        """Rows of a SELECT inside the transaction."""
        rows: list[Row] = self._client._in_transaction(self._connection, "query", sql, params)
        return rows

    def query_one(self, sql: str, params: Params = None) -> Row | None:
        """The first row, or None."""
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: Params = None) -> int:
        """Run one statement; returns the affected row count."""
        count: int = self._client._in_transaction(self._connection, "execute", sql, params)
        return count

    def executemany(self, sql: str, params: Sequence[Params]) -> int:
        """Run one statement for each parameter set; returns the affected row count."""
        count: int = self._client._in_transaction(self._connection, "executemany", sql, params)
        return count


class DbClient(abc.ABC):
    """A database client: MySQL/MariaDB through pymysql, or SQLite through the standard library.

    Build one with :meth:`from_url`, :meth:`from_config`, or the dialect's class
    (:class:`~autoops.MySQLClient`, :class:`~autoops.SQLiteClient`). Placeholders are pymysql's
    ``%s`` and ``%(name)s`` in both dialects. Safe to use from many threads: each thread gets its
    own connection.
    """

    dialect: ClassVar[Dialect]
    # The replicas reads marked replica_ok may go to (MySQLClient only).
    _replicas: ReplicaSet | None = None

    def __init__(self, url: DbUrl, *, retry: RetryPolicy | None = None) -> None:
        self.url = url
        self.retry = retry if retry is not None else RetryPolicy()
        self._local = threading.local()
        # Every open connection by id, so close() reaches those of other threads too.
        self._all: dict[int, Any] = {}
        self._all_lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self._where = url.redacted()

    # construction -------------------------------------------------------------------------

    @classmethod
    def from_url(
        cls, url: str | DbUrl, *, retry: RetryPolicy | None = None, **options: Any
    ) -> Self:
        """A client for ``mysql://user:pass@host:3306/db?charset=utf8mb4`` (also ``mysql+pymysql://``)
        or ``sqlite:///relative.db`` / ``sqlite:////absolute.db``; ``options`` override the URL's
        query options (``connect_timeout``, ``read_timeout``, ...) and add MySQL's ``replicas``
        and ``max_replica_lag`` (see :class:`~autoops.MySQLClient`). ``DbClient.from_url`` picks
        the client by scheme; a dialect's class (``MySQLClient.from_url``) refuses another's URL."""
        parsed = url if isinstance(url, DbUrl) else DbUrl.parse(url)
        client = CLIENTS.client_class(parsed.dialect, cls, parsed.redacted())
        return client.from_parsed(parsed, retry=retry, **options)

    @classmethod
    @abc.abstractmethod
    def from_parsed(cls, url: DbUrl, *, retry: RetryPolicy | None = None, **options: Any) -> Self:
        """Build from a parsed URL of this dialect; keyword ``options`` override its query
        options."""

    @classmethod
    def from_connection_settings(
        cls, settings: DbConnectionSettings, *, retry: RetryPolicy | None = None
    ) -> Self:
        """A new client that connects exactly as ``settings`` say (TLS, timeouts, credentials);
        with :attr:`connection_settings` and ``dataclasses.replace`` it opens a second client on
        the same server, e.g. for another database."""
        client = CLIENTS.client_class(settings.dialect, cls, str(settings))
        return client._from_connection_settings(settings, retry=retry)

    @classmethod
    @abc.abstractmethod
    def _from_connection_settings(
        cls, settings: DbConnectionSettings, *, retry: RetryPolicy | None
    ) -> Self: ...

    @property
    def connection_settings(self) -> DbConnectionSettings:
        """Everything a second connection to this client's database needs (host, port or
        socket, TLS, timeouts, credentials), as a value whose repr and str hide the password."""
        # An SQLite database is its file; MySQLClient overrides this with its server's settings.
        return DbConnectionSettings(dialect="sqlite", path=self.url.path)

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        settings: Settings | None = None,
        **options: Any,
    ) -> Self:
        """A client from keyword arguments > ``AUTOOPS_DB_URL`` > the ``[db]`` table of the
        settings file; a URL set nowhere is a :class:`ConfigError` that says how to set it."""
        resolved = settings if settings is not None else load_settings(path, db_url=url)
        table = dict(resolved.section("db"))
        table.pop("url", None)
        retry_table = resolved.section("retry")
        retry = options.pop("retry", None)
        if retry is None and retry_table:
            retry = RetryPolicy.from_mapping(dict(retry_table))
        merged = {**table, **options}
        return cls.from_url(resolved.require_db_url(), retry=retry, **merged)

    # the dialect's part ---------------------------------------------------------------------

    @abc.abstractmethod
    def _connect(self) -> Any:
        """Open a new connection (raises driver errors)."""

    @abc.abstractmethod
    def _is_alive(self, connection: Any) -> bool:
        """A zero-round-trip check that an idle connection has not been closed by the server."""

    @abc.abstractmethod
    def _close_connection(self, connection: Any) -> None:
        """Close quietly."""

    @abc.abstractmethod
    def _run(self, connection: Any, kind: str, sql: str, params: Any) -> Any:
        """Run ``query`` / ``execute`` / ``executemany``; raise ``_Lost`` on a lost connection."""

    @abc.abstractmethod
    def _iterate(
        self, connection: Any, sql: str, params: Params, batch_size: int
    ) -> Iterator[list[Row]]:
        """Yield batches of rows from an unbuffered cursor."""

    @abc.abstractmethod
    def _begin(self, connection: Any) -> None: ...

    @abc.abstractmethod
    def _commit(self, connection: Any) -> None: ...

    @abc.abstractmethod
    def _rollback(self, connection: Any) -> None: ...

    @abc.abstractmethod
    def _classify(self, exc: BaseException, *, operation: str) -> Failure:
        """Map a driver error to a retry decision and an autoops error with a clear message."""

    @abc.abstractmethod
    def _ping(self, connection: Any) -> None: ...

    def _judge(self, exc: BaseException, operation: str) -> Failure:
        """Classify anything an attempt raised: autoops errors pass through unchanged, a lost
        connection is judged by its driver error, the rest by the dialect."""
        if isinstance(exc, AutoOpsError):
            return Failure(False, type(exc), str(exc), passthrough=True)
        if isinstance(exc, _Lost):
            return self._classify(exc.cause, operation=operation)
        return self._classify(exc, operation=operation)

    # connections ----------------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._closed:
            raise ConnectError(f"the database client for {self._where} is closed; make a new one")
        if os.getpid() != self._pid:
            # A forked child must not talk over its parent's sockets.
            self._local = threading.local()
            self._all = {}
            self._pid = os.getpid()
        connection: Any | None = getattr(self._local, "connection", None)
        if connection is not None and not self._is_alive(connection):
            self._discard()
            connection = None
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
            with self._all_lock:
                self._all[id(connection)] = connection
        return connection

    def _discard(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._all_lock:
                self._all.pop(id(connection), None)
            self._close_connection(connection)

    # reads and writes -----------------------------------------------------------------------

    def _call(self, kind: str, sql: str, params: Any, *, write: bool) -> Any:
        if getattr(self._local, "transaction", False):
            raise AutoOpsError(
                f"this thread has a transaction open on {self._where}; run statements through "
                "its Transaction object (tx.query / tx.execute) instead of the client"
            )
        operation = f"{self.dialect} {kind}"

        def attempt() -> Any:
            connection = self._connection()
            try:
                return self._run(connection, kind, sql, params)
            except _Lost:
                self._discard()
                raise

        def classify(exc: BaseException) -> Failure:
            if isinstance(exc, _Lost) and write and exc.sent:
                return Failure(
                    transient=False,
                    error_type=OutcomeUnknownError,
                    message=(
                        f"the connection to {self._where} was lost after a write was sent, "
                        "so it may or may not have been applied; autoops does not replay it: "
                        "check the data, then retry if it is missing"
                    ),
                )
            return self._judge(exc, operation)

        return self.retry.call(attempt, classify=classify, operation=operation, where=self._where)

    def query(
        self,
        sql: str,
        params: Params = None,
        *,
        replica_ok: bool = False,
        applied_since: float | None = None,
    ) -> list[Row]:
        """Run a SELECT and return every row as a dict; retried on transient failures.

        ``replica_ok=True`` lets a replica within ``max_replica_lag`` answer it (a client with
        ``replicas``): say so only for reads that may miss the last seconds of writes. With
        ``applied_since`` (a ``time.monotonic()`` moment), only a replica known to have applied
        everything the primary committed before then may answer."""
        replica = self._replica_for_read(replica_ok, applied_since)
        if replica is not None:
            try:
                return replica.query(sql, params)
            except AutoOpsError as exc:
                self._replica_failed(replica, exc)
        result: list[Row] = self._call("query", sql, params, write=False)
        return result

    def query_one(
        self,
        sql: str,
        params: Params = None,
        *,
        replica_ok: bool = False,
        applied_since: float | None = None,
    ) -> Row | None:
        """The first row of a SELECT, or None (``replica_ok`` as for :meth:`query`)."""
        rows = self.query(sql, params, replica_ok=replica_ok, applied_since=applied_since)
        return rows[0] if rows else None

    def _replica_for_read(self, replica_ok: bool, applied_since: float | None) -> DbClient | None:
        if not replica_ok or self._replicas is None or not self._replicas:
            return None
        if getattr(self._local, "transaction", False) or self._closed:
            return None  # the primary's path says what is wrong
        return self._replicas.pick(applied_since)

    def wait_for_replica(self, since: float, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a replica to have applied everything the primary
        committed before the ``time.monotonic()`` moment ``since``; False when none did (or the
        client has no replicas). Reads with ``applied_since=since`` may then go to it."""
        if self._replicas is None or not self._replicas:
            return False
        return self._replicas.wait_applied(since, timeout)

    def _replica_failed(self, replica: DbClient, exc: AutoOpsError) -> None:
        assert self._replicas is not None
        self._replicas.read_failed(replica, exc)

    def execute(self, sql: str, params: Params = None) -> int:
        """Run one statement and return the affected row count.

        Retried when the statement never reached the server (refused connection, deadlock, lock
        wait timeout); a connection lost after sending raises :class:`OutcomeUnknownError`.
        """
        count: int = self._call("execute", sql, params, write=True)
        return count

    def executemany(self, sql: str, params: Sequence[Params]) -> int:
        """Run the statement for each parameter set, all in one transaction: all or nothing.

        pymysql sends a large batch as several multi-row INSERTs (an UPDATE as one statement per
        set); one transaction makes the batch safe to replay, so it is retried like
        :meth:`run_transaction` when the connection is lost before COMMIT, and a connection lost
        during COMMIT raises :class:`OutcomeUnknownError`. Never a batch applied in part.
        """
        rows = list(params)
        if not rows:
            return 0
        return self.run_transaction(lambda tx: tx.executemany(sql, rows))

    def stream(
        self,
        sql: str,
        params: Params = None,
        *,
        batch_size: int = 10_000,
        replica_ok: bool = False,
        applied_since: float | None = None,
    ) -> Iterator[Row]:
        """Yield rows one by one from a server-side cursor: constant memory over any result size.

        The stream has a connection of its own for its whole life. A transient failure before the
        first row is retried; once rows have been yielded, a lost connection raises
        :class:`ConnectError` (a result cannot be resumed: page by primary key for that).
        ``replica_ok`` as for :meth:`query`: a replica that fails before the first row hands the
        stream to the primary; one that fails later raises as above.
        """
        for batch in self.stream_batches(
            sql, params, batch_size=batch_size, replica_ok=replica_ok, applied_since=applied_since
        ):
            yield from batch

    def stream_batches(
        self,
        sql: str,
        params: Params = None,
        *,
        batch_size: int = 10_000,
        replica_ok: bool = False,
        applied_since: float | None = None,
    ) -> Iterator[list[Row]]:
        """Like :meth:`stream`, but yields lists of up to ``batch_size`` rows."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        replica = self._replica_for_read(replica_ok, applied_since)
        if replica is not None:
            batches = replica.stream_batches(sql, params, batch_size=batch_size)
            try:
                try:
                    first = next(batches, None)
                except AutoOpsError as exc:
                    self._replica_failed(replica, exc)
                else:
                    if first is not None:
                        yield first
                        yield from batches
                    return
            finally:
                if isinstance(batches, Generator):
                    batches.close()
        yield from self._stream_batches(sql, params, batch_size)

    def _stream_batches(self, sql: str, params: Params, batch_size: int) -> Iterator[list[Row]]:
        operation = f"{self.dialect} stream"
        holder: dict[str, Any] = {}

        def start() -> Iterator[list[Row]]:
            connection = self._connect()
            holder["connection"] = connection
            iterator = self._iterate(connection, sql, params, batch_size)
            holder["iterator"] = iterator
            holder["first"] = next(iterator, None)
            return iterator

        def classify(exc: BaseException) -> Failure:
            self._drop_stream(holder)
            return self._judge(exc, operation)

        iterator = self.retry.call(start, classify=classify, operation=operation, where=self._where)
        yielded = 0
        try:
            first = holder.pop("first")
            if first is None:
                return
            yielded += len(first)
            yield first
            try:
                for batch in iterator:
                    yielded += len(batch)
                    yield batch
            except Exception as exc:
                failure = self._judge(exc, operation)
                if failure.passthrough:
                    raise
                if failure.transient:
                    raise ConnectError(
                        f"the stream from {self._where} was cut after {yielded} rows "
                        f"({failure.message}); a result cannot be resumed part way, so run it "
                        "again, or page by primary key to resume"
                    ) from exc
                raise failure.build() from exc
        finally:
            self._drop_stream(holder)

    def _drop_stream(self, holder: dict[str, Any]) -> None:
        iterator = holder.pop("iterator", None)
        if iterator is not None:
            iterator.close()
        connection = holder.pop("connection", None)
        if connection is not None:
            self._close_connection(connection)

    # transactions ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Run the block in one transaction: commit when it ends, roll back if it raises.

        Not retried (see :meth:`run_transaction`). A connection lost during COMMIT raises
        :class:`OutcomeUnknownError`.
        """
        if getattr(self._local, "transaction", False):
            raise AutoOpsError(
                "a transaction is already open in this thread; nested transactions are not "
                "supported: pass the Transaction object down instead"
            )

        def open_transaction() -> Any:
            connection = self._connection()
            try:
                self._begin(connection)
            except _Lost:
                self._discard()
                raise
            return connection

        connection = self.retry.call(
            open_transaction,
            classify=lambda exc: self._judge(exc, f"{self.dialect} begin"),
            operation=f"{self.dialect} begin",
            where=self._where,
        )
        self._local.transaction = True
        try:
            yield Transaction(self, connection)
        except BaseException:
            try:
                self._rollback(connection)
            except Exception:
                self._discard()
            raise
        else:
            try:
                self._commit(connection)
            except _Lost as exc:
                self._discard()
                raise OutcomeUnknownError(
                    f"the connection to {self._where} was lost during COMMIT, so the transaction "
                    "may or may not have been applied; check the data before running it again"
                ) from exc.cause
            except Exception as exc:
                raise self._classify(exc, operation=f"{self.dialect} commit").build() from exc
        finally:
            self._local.transaction = False

    def run_transaction(self, fn: Callable[[Transaction], T]) -> T:
        """Call ``fn(tx)`` inside a transaction and commit; replay the *whole* function on a
        deadlock, a lock wait timeout or a connection lost before COMMIT, within the retry policy.

        ``fn`` may therefore run more than once: keep side effects outside the database out of it.
        """

        def attempt() -> T:
            with self.transaction() as tx:
                return fn(tx)

        def classify(exc: BaseException) -> Failure:
            transient = isinstance(exc, TransactionConflictError) or (
                isinstance(exc, ConnectError) and not isinstance(exc, OutcomeUnknownError)
            )
            error_type = type(exc) if isinstance(exc, Exception) else AutoOpsError
            return Failure(
                transient=transient, error_type=error_type, message=str(exc), passthrough=True
            )

        return self.retry.call(
            attempt, classify=classify, operation=f"{self.dialect} transaction", where=self._where
        )

    def _in_transaction(self, connection: Any, kind: str, sql: str, params: Any) -> Any:
        operation = f"{self.dialect} {kind}"
        try:
            return self._run(connection, kind, sql, params)
        except _Lost as exc:
            self._discard()
            failure = self._classify(exc.cause, operation=operation)
            raise ConnectError(
                f"the connection to {self._where} was lost inside a transaction, which the "
                f"server rolls back ({failure.message}); run_transaction replays it"
            ) from exc.cause
        except AutoOpsError:
            raise
        except Exception as exc:
            raise self._classify(exc, operation=operation).build() from exc

    # the rest -------------------------------------------------------------------------------

    def ping(self) -> float:
        """Check the server answers; returns the round trip in seconds (reconnects if needed)."""
        operation = f"{self.dialect} ping"

        def attempt() -> float:
            connection = self._connection()
            started = time.perf_counter()
            try:
                self._ping(connection)
            except _Lost:
                self._discard()
                raise
            return time.perf_counter() - started

        return self.retry.call(
            attempt,
            classify=lambda exc: self._judge(exc, operation),
            operation=operation,
            where=self._where,
        )

    def quote_identifier(self, name: str) -> str:
        """Quote a table or column name for this dialect; see :func:`autoops.quote_identifier`."""
        return quote_identifier(name, self.dialect)

    def close(self) -> None:
        """Close every connection this client opened, in every thread (its replicas' too)."""
        self._closed = True
        self._drop_connections()
        if self._replicas is not None:
            self._replicas.close()

    def _drop_connections(self) -> None:
        """Close every connection this client opened, in every thread; the client stays usable
        and connects again when next used."""
        with self._all_lock:
            connections = list(self._all.values())
            self._all = {}
        for connection in connections:
            self._close_connection(connection)
        self._local = threading.local()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if not self._replicas:
            return f"{type(self).__name__}({self._where!r})"
        return (
            f"{type(self).__name__}({self._where!r}, replicas={self._replicas.labels!r}, "
            f"max_replica_lag={self._replicas.max_lag:g})"
        )

    def _repr_html_(self) -> str:
        rows: list[tuple[str, object]] = [("url", self._where), ("retry", self.retry)]
        if self._replicas:
            rows.append(("max replica lag", f"{self._replicas.max_lag:g} s"))
            rows.extend(
                (f"replica {label}", state if lag is None else f"{state}, {lag:g} s behind")
                for label, state, lag in self._replicas.status()
            )
        return html_table(type(self).__name__, rows)


# The dialect -> client table (DbUrl maps ``mysql+pymysql://`` and the like to a dialect).
CLIENTS: Final = SchemeTable(
    DbClient,
    {
        "mysql": "autoops.db._mysql:MySQLClient",
        "sqlite": "autoops.db._sqlite:SQLiteClient",
    },
)


def options_with_defaults(
    defaults: Mapping[str, Any], url_options: Mapping[str, Any], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge defaults < URL query options < keyword options."""
    return {**defaults, **url_options, **overrides}
