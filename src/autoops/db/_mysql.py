"""MySQL and MariaDB through pymysql."""

from __future__ import annotations

import contextlib
import select
from collections.abc import Iterator, Sequence
from typing import Any, Final

import pymysql
import pymysql.cursors
from pymysql.connections import Connection
from pymysql.converters import escape_string

from .._config import MYSQL_OPTIONS, REDACTED, Converter, DbUrl, Secret, convert_options
from .._connection import DbConnectionSettings, TlsSettings
from .._errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    IntegrityError,
    QueryError,
    TransactionConflictError,
)
from .._retry import Failure, RetryPolicy
from ._client import DbClient, Row, _Lost
from ._params import Params, check_mysql_placeholders
from ._replicas import REPLICA_OPTIONS, ReplicaSet, tls_from_options
from ._rows import row_builder

__all__ = ["MySQLClient"]

# The connection never carried the request: connect failures and pymysql's failed send (2006).
_NOT_SENT: Final = frozenset({2002, 2003, 2005, 2006, 1040, 1053})
# Lost while waiting for the reply, or told by the server it was killed / timed out.
_LOST: Final = frozenset({2013, 2055, 1927, 4031, 1152, 1158, 1159, 1160, 1161})
_CONFLICT: Final = frozenset({1205, 1213})
_DENIED: Final = frozenset({1044, 1045, 1130, 1142, 1143, 1227, 1698})
_UNKNOWN_DATABASE: Final = 1049

_CONNECTION_ERRORS: Final = (
    pymysql.err.OperationalError,
    pymysql.err.InterfaceError,
    pymysql.err.InternalError,
)
MySQLConnection = Connection  # the stubs make it generic; at run time it is not


def _code(exc: BaseException) -> int | None:
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def _is_desynchronised(exc: BaseException) -> bool:
    # MariaDB answers KILL CONNECTION mid-statement with an error packet pymysql reads out of
    # sequence; SQLAlchemy treats this message as a disconnect too.
    return (
        isinstance(exc, pymysql.err.InternalError)
        and "packet sequence number wrong" in str(exc).lower()
    )


def _wrap_lost(exc: Exception, *, sent: bool) -> Exception:
    """Turn a driver error that means "the connection is gone" into ``_Lost``."""
    if isinstance(exc, pymysql.err.InterfaceError):
        return _Lost(exc, sent=False)
    if _is_desynchronised(exc):
        return _Lost(exc, sent=sent)
    code = _code(exc)
    if code in _NOT_SENT:
        return _Lost(exc, sent=False)
    if code in _LOST:
        return _Lost(exc, sent=sent)
    return exc


class MySQLClient(DbClient):
    """A :class:`DbClient` for MySQL and MariaDB (autocommit on, utf8mb4 by default).

    Timeouts are in seconds: ``connect_timeout`` (10), ``read_timeout`` and ``write_timeout``
    (300, so a dead network cannot hang a cron job forever) and ``stream_write_timeout`` (3600, the
    server-side ``net_write_timeout`` for streams, so a slow consumer is not cut off).

    TLS: ``ssl_ca`` (verify the server against this CA), ``ssl_cert``/``ssl_key`` (a client
    certificate) and ``ssl_verify_identity`` (match the host name too), as in the URL's query; or
    a :class:`~autoops.TlsSettings` as ``tls``.

    Replicas: ``replicas`` (``mysql://`` URLs, which take the primary's credentials, database,
    timeouts and TLS for what they leave out, or :class:`~autoops.DbConnectionSettings`) answer
    the reads marked ``replica_ok=True`` while at most ``max_replica_lag`` seconds behind (5); a
    replica that cannot be reached is left alone for ``replica_retry_after`` seconds (30).
    Everything else goes to the primary.
    """

    dialect = "mysql"

    def __init__(
        self,
        *,
        host: str,
        user: str,
        password: str | Secret | None = None,
        database: str = "",
        port: int = 3306,
        charset: str = "utf8mb4",
        connect_timeout: float = 10.0,
        read_timeout: float | None = 300.0,
        write_timeout: float | None = 300.0,
        stream_write_timeout: int = 3600,
        unix_socket: str | None = None,
        ssl_ca: str | None = None,
        ssl_cert: str | None = None,
        ssl_key: str | None = None,
        ssl_verify_identity: bool = False,
        tls: TlsSettings | None = None,
        retry: RetryPolicy | None = None,
        replicas: Sequence[str | DbUrl | DbConnectionSettings] = (),
        max_replica_lag: float = 5.0,
        replica_retry_after: float = 30.0,
    ) -> None:
        secret = password if isinstance(password, Secret) or password is None else Secret(password)
        if tls is not None and (ssl_ca or ssl_cert or ssl_key or ssl_verify_identity):
            raise ConfigError("give MySQLClient either tls= or the ssl_* options, not both")
        if tls is None:
            ssl_options: dict[str, Any] = {
                "ssl_ca": ssl_ca,
                "ssl_cert": ssl_cert,
                "ssl_key": ssl_key,
                "ssl_verify_identity": ssl_verify_identity,
            }
            tls = tls_from_options(ssl_options)
        options: dict[str, Any] = {"charset": charset}
        if unix_socket:
            options["unix_socket"] = unix_socket
        url = DbUrl(
            dialect="mysql",
            host=host,
            port=port,
            user=user,
            password=secret,
            database=database,
            options=options,
        )
        super().__init__(url, retry=retry)
        self._password = secret
        self._stream_write_timeout = int(stream_write_timeout)
        self._settings = DbConnectionSettings(
            dialect="mysql",
            host=host,
            port=port,
            unix_socket=unix_socket or None,
            user=user,
            password=secret,
            database=database,
            charset=charset,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            tls=tls,
        )
        self._replicas = ReplicaSet(
            self._settings,
            replicas,
            max_lag=max_replica_lag,
            retry_after=replica_retry_after,
            make=DbClient.from_connection_settings,
        )

    @property
    def replicas(self) -> tuple[DbConnectionSettings, ...]:
        """Each replica's connection settings (their repr and str hide the password)."""
        assert self._replicas is not None
        return self._replicas.settings

    @property
    def max_replica_lag(self) -> float:
        """The most a replica may be behind, in seconds, and still answer a ``replica_ok`` read."""
        assert self._replicas is not None
        return self._replicas.max_lag

    @property
    def connection_settings(self) -> DbConnectionSettings:
        return self._settings

    @classmethod
    def from_parsed(
        cls, url: DbUrl, *, retry: RetryPolicy | None = None, **options: Any
    ) -> MySQLClient:
        """Build from a parsed URL; keyword ``options`` override the URL's query options."""
        allowed: dict[str, Converter] = {**MYSQL_OPTIONS, "stream_write_timeout": int}
        # Not URL query options: a list, and numbers given as numbers.
        replica_options: dict[str, Any] = {
            name: options.pop(name) for name in REPLICA_OPTIONS if name in options
        }
        merged: dict[str, Any] = {
            **url.options,
            **convert_options(options, allowed, url.redacted()),
            **replica_options,
        }
        return cls(
            host=url.host,
            port=url.port,
            user=url.user,
            password=url.password,
            database=url.database,
            retry=retry,
            **merged,
        )

    @classmethod
    def _from_connection_settings(
        cls, settings: DbConnectionSettings, *, retry: RetryPolicy | None
    ) -> MySQLClient:
        return cls(
            host=settings.host,
            port=settings.port,
            unix_socket=settings.unix_socket,
            user=settings.user,
            password=settings.password,
            database=settings.database,
            charset=settings.charset,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            write_timeout=settings.write_timeout,
            tls=settings.tls,
            retry=retry,
        )

    def _connect(self) -> MySQLConnection:
        return self._settings.open_connection()

    def _is_alive(self, connection: MySQLConnection) -> bool:
        sock = getattr(connection, "_sock", None)
        if sock is None:
            return False
        # An idle connection has nothing to read; EOF or an error packet means the server closed
        # it (KILL, wait_timeout, restart), and we can reconnect before sending anything.
        poller = select.poll()
        try:
            poller.register(sock, select.POLLIN | select.POLLPRI)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def _close_connection(self, connection: MySQLConnection) -> None:
        try:
            connection.close()
        except Exception:
            connection._force_close()  # type: ignore[attr-defined]

    def _run(self, connection: MySQLConnection, kind: str, sql: str, params: Any) -> Any:
        if params is not None:
            check_mysql_placeholders(sql)
        cursor = connection.cursor()
        try:
            if kind == "executemany":
                cursor.executemany(sql, params)
                return cursor.rowcount
            cursor.execute(sql, params)
            if kind == "query":
                if cursor.description is None:
                    return []
                names = tuple(column[0] for column in cursor.description)
                return row_builder(names)(cursor.fetchall())
            return cursor.rowcount
        except _CONNECTION_ERRORS as exc:
            raise _wrap_lost(exc, sent=True) from exc
        finally:
            with contextlib.suppress(pymysql.err.Error):
                cursor.close()

    def _iterate(
        self, connection: MySQLConnection, sql: str, params: Params, batch_size: int
    ) -> Iterator[list[Row]]:
        if params is not None:
            check_mysql_placeholders(sql)
        cursor = connection.cursor(pymysql.cursors.SSCursor)
        try:
            cursor.execute("SET SESSION net_write_timeout = %s", (self._stream_write_timeout,))
            cursor.execute(sql, params)
            build = row_builder(tuple(column[0] for column in cursor.description or ()))
            fetch = cursor.fetchmany
            while rows := fetch(batch_size):
                yield build(rows)
        except _CONNECTION_ERRORS as exc:
            raise _wrap_lost(exc, sent=True) from exc
        finally:
            # Closing an SSCursor would read the rest of the result: a stream stopped early
            # instead drops the result and lets the caller close this connection, which ends it.
            result = getattr(cursor, "_result", None)
            if result is not None and result.unbuffered_active:
                result.unbuffered_active = False
                connection._result = None  # type: ignore[attr-defined]

    def _begin(self, connection: MySQLConnection) -> None:
        try:
            connection.begin()
        except _CONNECTION_ERRORS as exc:
            raise _wrap_lost(exc, sent=False) from exc

    def _commit(self, connection: MySQLConnection) -> None:
        try:
            connection.commit()
        except _CONNECTION_ERRORS as exc:
            raise _wrap_lost(exc, sent=True) from exc

    def _rollback(self, connection: MySQLConnection) -> None:
        connection.rollback()

    def _ping(self, connection: MySQLConnection) -> None:
        try:
            connection.ping(reconnect=False)
        except _CONNECTION_ERRORS as exc:
            raise _Lost(exc, sent=False) from exc

    def _message(self, exc: BaseException) -> str:
        if isinstance(exc, pymysql.err.MySQLError) and len(exc.args) >= 2:
            text = f"({exc.args[0]}) {exc.args[1]}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        password = self._password.reveal() if self._password is not None else ""
        if password:
            # The server quotes a failed statement as it received it: a password passed as a
            # parameter comes back escaped (a backslash before quotes and backslashes): hide both.
            for form in (escape_string(password), password):
                text = text.replace(form, REDACTED)
        return text

    def _classify(self, exc: BaseException, *, operation: str) -> Failure:
        where = self._where
        message = self._message(exc)
        code = _code(exc)
        if (
            isinstance(exc, pymysql.err.InterfaceError)
            or code in _NOT_SENT
            or code in _LOST
            or _is_desynchronised(exc)
        ):
            return Failure(
                True,
                ConnectError,
                f"{operation}: cannot reach MySQL at {self.url.location} ({message}); check that "
                "the server is up and that the URL's host and port are right",
            )
        if isinstance(exc, OSError):
            return Failure(
                True, ConnectError, f"{operation}: network error talking to {where}: {message}"
            )
        if code in _CONFLICT:
            return Failure(
                True,
                TransactionConflictError,
                f"{operation} on {where} hit a lock conflict {message}; the transaction was rolled "
                "back and can be run again",
            )
        if code in _DENIED:
            return Failure(
                False,
                AuthenticationError,
                f"MySQL at {self.url.location} refused user {self.url.user!r}: {message}; "
                "check the user name, password and grants (URL, AUTOOPS_DB_URL or autoops.toml)",
            )
        if code == _UNKNOWN_DATABASE:
            return Failure(
                False,
                QueryError,
                f"database {self.url.database!r} does not exist on {self.url.location} {message}; "
                "create it or fix the URL's path",
            )
        if isinstance(exc, pymysql.err.IntegrityError):
            return Failure(
                False, IntegrityError, f"{operation} on {where} broke a constraint: {message}"
            )
        if isinstance(exc, pymysql.err.MySQLError) and code is not None:
            return Failure(False, QueryError, f"{operation} on {where} failed: {message}")
        if isinstance(exc, TypeError | ValueError | KeyError | pymysql.err.ProgrammingError):
            return Failure(
                False,
                QueryError,
                f"{operation}: the parameters do not match the statement's %s / %(name)s "
                f"placeholders ({message})",
            )
        return Failure(False, QueryError, f"{operation} on {where} failed: {message}")
