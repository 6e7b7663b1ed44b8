"""Connection settings a client hands out, so a second connection is made exactly like the first.

A backup's dump tool, its Redis replica link, a verify's restore target and the monitor's checks
each need a connection of their own to the server a client talks to. They build it from the
client's :class:`DbConnectionSettings` or :class:`CacheConnectionSettings` (host, port or socket,
TLS, timeouts, credentials), never from the URL alone nor from a driver's private arguments, so
TLS cannot be dropped on the way. Both values hide the password in their repr and str.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from ._config import REDACTED, Dialect, Secret
from ._errors import ConfigError, ConnectError

if TYPE_CHECKING:
    import pymysql.connections
    import redis.connection

__all__ = ["CacheConnectionSettings", "DbConnectionSettings", "TlsSettings"]

VerifyMode = Literal["none", "optional", "required"]

_VERIFY_MODES: Final = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
# pymysql's error when it was told to use TLS and the server's greeting offers none.
_SERVER_OFFERS_NO_TLS: Final = 2026
# The client's own error codes (CR_*): the server did not refuse anything. Servers use 1000 to
# 1999 and from 3000 on (MySQL refuses a connection without TLS it requires with 3159).
_CLIENT_ERRORS: Final = range(2000, 3000)
# Where a connection without TLS options found no TLS on offer (host:port or socket).
_SERVERS_WITHOUT_TLS: set[str] = set()


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS for a connection: the CA file that verifies the server, a client certificate and key
    (for servers that ask for one), and how strictly the server is checked.

    ``verify`` is ``"required"`` (the server's certificate must chain to ``ca_file``, or to the
    system's CAs when there is none), ``"optional"`` or ``"none"`` (encrypted, not
    authenticated). ``check_hostname`` also matches the certificate against the host connected
    to (the drivers check that name; there is no separate server name).
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: VerifyMode = "required"
    check_hostname: bool = True


@dataclass(frozen=True, slots=True)
class DbConnectionSettings:
    """How a :class:`~autoops.DbClient` reaches its database: everything a second connection
    needs. ``dialect`` is ``"mysql"`` (host and port, or ``unix_socket``) or ``"sqlite"``
    (``path``). Timeouts are in seconds (read and write: ``None`` means none). Its repr and str
    hide the password.
    """

    dialect: Dialect
    host: str = ""
    port: int = 0
    unix_socket: str | None = None
    user: str = ""
    password: Secret | None = None
    database: str = ""
    path: str = ""
    charset: str = "utf8mb4"
    connect_timeout: float = 10.0
    read_timeout: float | None = 300.0
    write_timeout: float | None = 300.0
    tls: TlsSettings | None = None

    @property
    def location(self) -> str:
        """Where the server is, for messages: ``host:port``, the socket or the SQLite file."""
        if self.dialect == "sqlite":
            return self.path
        return self.unix_socket or f"{self.host}:{self.port}"

    def redacted(self) -> str:
        """The settings as a URL with the password shown as ``***`` (TLS files not shown)."""
        if self.dialect == "sqlite":
            return f"sqlite:///{self.path}"
        auth = self.user + (f":{REDACTED}" if self.password is not None else "")
        auth = f"{auth}@" if auth else ""
        if self.unix_socket:
            return f"mysql://{auth}localhost/{self.database}?unix_socket={self.unix_socket}"
        tls = "?tls" if self.tls is not None else ""
        return f"mysql://{auth}{self.host}:{self.port}/{self.database}{tls}"

    def __str__(self) -> str:
        return self.redacted()

    def pymysql_arguments(self) -> dict[str, Any]:
        """Keyword arguments for ``pymysql.connect`` (autocommit on, ``LOAD DATA LOCAL`` off);
        they hold the password itself, so keep them out of logs. With ``tls`` they hold an
        ``ssl.SSLContext`` (TLS required); without, pymysql's own default (TLS if the server
        offers it), which :meth:`open_connection` does more cheaply."""
        if self.dialect != "mysql":
            raise ValueError(f"{self.redacted()} is not a MySQL connection")
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password.reveal() if self.password is not None else "",
            "database": self.database or None,
            "charset": self.charset,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "write_timeout": self.write_timeout,
            "unix_socket": self.unix_socket,
            "ssl": tls_context(self.tls, strict_x509=False) if self.tls is not None else None,
            "autocommit": True,
            "local_infile": False,
        }

    def open_connection(self) -> pymysql.connections.Connection[Any]:
        """A new pymysql connection with these settings (the caller closes it; not retried).

        Without ``tls`` the connection is encrypted if the server offers TLS and in the clear if
        it offers none (as pymysql does by default), the server's certificate unchecked.
        """
        # import autoops loads this module; the driver loads on first use.
        import pymysql  # noqa: PLC0415

        arguments = self.pymysql_arguments()
        if self.tls is not None:
            return pymysql.connect(**arguments)
        plaintext = {**arguments, "ssl": None, "ssl_disabled": True}
        if self.location in _SERVERS_WITHOUT_TLS:
            try:
                return pymysql.connect(**plaintext)
            except pymysql.err.OperationalError as exc:
                if exc.args[0] in _CLIENT_ERRORS:
                    raise  # the server never answered; TLS would not have helped
                # Refused: perhaps the server requires TLS now. Ask it again below.
                _SERVERS_WITHOUT_TLS.discard(self.location)
        # pymysql's default builds a context with the system's CAs on every connect (~40 ms CPU)
        # and then never checks the certificate; one shared context without CAs does the same.
        try:
            return pymysql.connect(**{**arguments, "ssl": _opportunistic_tls_context()})
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != _SERVER_OFFERS_NO_TLS:
                raise
        # That attempt ended after the server's greeting, which it counts in Aborted_connects;
        # remembering the answer keeps it to one per server and process.
        _SERVERS_WITHOUT_TLS.add(self.location)
        return pymysql.connect(**plaintext)


def tls_context(tls: TlsSettings, *, strict_x509: bool = True) -> ssl.SSLContext:
    """The client context for these settings, shared by every connection made with them while
    the files are unchanged: building one reads the CA store, which costs more CPU than the rest
    of a connect. A rewritten CA, certificate or key file (a rotation) gives a new context.
    ``strict_x509=False`` accepts the certificates MariaDB and MySQL make for themselves, which
    fail Python's strict X.509 checks (pymysql relaxes them too)."""
    return _build_tls_context(tls, _file_stamps(tls), strict_x509)


def _file_stamps(tls: TlsSettings) -> tuple[tuple[int, int] | None, ...]:
    stamps: list[tuple[int, int] | None] = []
    for path in (tls.ca_file, tls.cert_file, tls.key_file):
        try:
            status = os.stat(path) if path else None
        except OSError:
            status = None  # building the context reports the missing file
        stamps.append((status.st_mtime_ns, status.st_size) if status else None)
    return tuple(stamps)


@functools.lru_cache(maxsize=64)
def _build_tls_context(
    tls: TlsSettings, stamps: tuple[tuple[int, int] | None, ...], strict_x509: bool
) -> ssl.SSLContext:
    del stamps  # part of the cache key only
    context = ssl.create_default_context(cafile=tls.ca_file)
    if not strict_x509:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    context.check_hostname = tls.check_hostname and tls.verify != "none"
    context.verify_mode = _VERIFY_MODES[tls.verify]
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, keyfile=tls.key_file)
    return context


@functools.cache
def _opportunistic_tls_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@functools.cache
def _redis_version() -> str:
    from redis.utils import get_lib_version  # noqa: PLC0415  (the driver loads on first use)

    version: str = get_lib_version()  # type: ignore[no-untyped-call]
    return version


def _redis_driver_info() -> Any:
    """What redis-py reports in ``CLIENT SETINFO``, with its version looked up once: left to
    itself it reads the package metadata for every client and connection (~2 ms CPU each)."""
    from redis.driver_info import DriverInfo  # noqa: PLC0415  (the driver loads on first use)

    return DriverInfo(lib_version=_redis_version())


CacheScheme = Literal[
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
]


@dataclass(frozen=True, slots=True)
class CacheConnectionSettings:
    """How a Redis :class:`~autoops.CacheClient` reaches its server: everything a second
    connection needs. ``scheme`` is ``"redis"``, ``"rediss"`` (TLS) or ``"unix"``; or
    ``"redis+sentinel"``/``"rediss+sentinel"`` (``hosts`` are the sentinels, ``service`` the
    master's name) or ``"redis+cluster"``/``"rediss+cluster"`` (``hosts`` are seed nodes).
    Timeouts are in seconds. Its repr and str hide the password."""

    scheme: CacheScheme
    host: str = ""
    port: int = 6379
    unix_socket: str | None = None
    db: int = 0
    username: str | None = None
    password: Secret | None = None
    socket_timeout: float | None = 5.0
    connect_timeout: float | None = 5.0
    client_name: str | None = None
    tls: TlsSettings | None = None
    hosts: tuple[tuple[str, int], ...] = ()
    service: str | None = None

    @property
    def topology(self) -> Literal["single", "sentinel", "cluster"]:
        """``"sentinel"``, ``"cluster"`` or ``"single"`` (one server)."""
        if self.scheme.endswith("+sentinel"):
            return "sentinel"
        if self.scheme.endswith("+cluster"):
            return "cluster"
        return "single"

    @property
    def _hostlist(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in self.hosts or ((self.host, self.port),))

    @property
    def location(self) -> str:
        """Where the server is, for messages: ``host:port/db``, ``unix:path?db=n``,
        ``sentinel:name@s1:26379,s2:26379/db`` or ``cluster:n1:7000,n2:7001``."""
        if self.unix_socket:
            return f"unix:{self.unix_socket}?db={self.db}"
        if self.topology == "sentinel":
            return f"sentinel:{self.service}@{self._hostlist}/{self.db}"
        if self.topology == "cluster":
            return f"cluster:{self._hostlist}"
        return f"{self.host}:{self.port}/{self.db}"

    @property
    def server_label(self) -> str:
        """``redis://host:port`` (or ``unix:///path``, ``redis+sentinel://s1,s2/name``,
        ``redis+cluster://n1,n2``) with no credentials and no database."""
        if self.unix_socket:
            return f"unix://{self.unix_socket}"
        if self.topology == "sentinel":
            return f"{self.scheme}://{self._hostlist}/{self.service}"
        if self.topology == "cluster":
            return f"{self.scheme}://{self._hostlist}"
        return f"redis://{self.host}:{self.port}"

    def redacted(self) -> str:
        """The settings as a URL with the password shown as ``***``."""
        auth = self.username or ""
        if self.password is not None:
            auth += f":{REDACTED}"
        auth = f"{auth}@" if auth else ""
        if self.unix_socket:
            return f"unix://{auth}{self.unix_socket}?db={self.db}"
        if self.topology == "sentinel":
            return f"{self.scheme}://{auth}{self._hostlist}/{self.service}/{self.db}"
        if self.topology == "cluster":
            return f"{self.scheme}://{auth}{self._hostlist}"
        return f"{self.scheme}://{auth}{self.host}:{self.port}/{self.db}"

    def __str__(self) -> str:
        return self.redacted()

    def _common_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "db": self.db,
            "username": self.username or None,
            "password": self.password.reveal() if self.password is not None else None,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "socket_keepalive": True,
            "client_name": self.client_name,
            "driver_info": _redis_driver_info(),
        }
        if self.tls is not None:
            arguments.update(
                ssl_ca_certs=self.tls.ca_file,
                ssl_certfile=self.tls.cert_file,
                ssl_keyfile=self.tls.key_file,
                ssl_cert_reqs=self.tls.verify,
                ssl_check_hostname=self.tls.check_hostname and self.tls.verify != "none",
            )
        return arguments

    def sentinel_arguments(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis`` on one of the sentinels: the connect timeout
        for both timeouts, and the servers' TLS settings (a ``rediss+sentinel://`` URL means
        TLS to the sentinels too). No password: sentinels are asked without one."""
        arguments: dict[str, Any] = {
            "socket_timeout": self.connect_timeout,
            "socket_connect_timeout": self.connect_timeout,
        }
        if self.tls is not None:
            arguments.update(
                (name, value)
                for name, value in self._common_arguments().items()
                if name.startswith("ssl")
            )
            arguments["ssl"] = True
        return arguments

    def master_settings(self) -> CacheConnectionSettings:
        """Settings for the one server behind these: itself; for Sentinel the master the
        sentinels name now (asked of each in turn). A cluster has no one server: it raises
        :class:`~autoops.ConfigError` (open each node from ``CacheClient`` instead)."""
        if self.topology == "single":
            return self
        if self.topology == "cluster":
            raise ConfigError(
                f"{self.redacted()} is a Redis Cluster: there is no one server to connect to; "
                "use CacheClient.from_connection_settings() for a cluster client"
            )
        # import autoops loads this module; the driver loads on first use.
        from redis.sentinel import Sentinel  # noqa: PLC0415

        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(self.hosts), sentinel_kwargs=self.sentinel_arguments()
        )
        try:
            address = sentinel.discover_master(self.service)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ConnectError(
                f"no sentinel at {self._hostlist} named a master for {self.service!r} ({exc}); "
                "check the sentinels are up and the master name in the URL"
            ) from None
        finally:
            for client in sentinel.sentinels:
                client.close()
        return self.server(str(address[0]), int(address[1]))

    def server(self, host: str, port: int) -> CacheConnectionSettings:
        """These settings (credentials, timeouts, TLS) for the one server at ``host:port``: a
        Sentinel's master or replica, or a cluster node."""
        return dataclasses.replace(
            self,
            scheme="rediss" if self.tls is not None else "redis",
            host=host,
            port=port,
            hosts=(),
            service=None,
        )

    def redis_arguments(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis`` (the caller adds pool size and retry); they hold
        the password itself, so keep them out of logs."""
        arguments = self._common_arguments()
        if self.unix_socket:
            arguments["unix_socket_path"] = self.unix_socket
        else:
            arguments.update(host=self.host, port=self.port)
        if self.tls is not None:
            arguments["ssl"] = True
        return arguments

    def open_connection(self, *, protocol: int = 2) -> redis.connection.AbstractConnection:
        """A new redis-py connection with these settings, connected: TLS set up, ``AUTH`` and
        ``SELECT`` done. Not pooled and not retried; the caller disconnects it. RESP2 unless
        ``protocol=3``."""
        # import autoops loads this module; the driver loads on first use.
        import redis.connection  # noqa: PLC0415
        from redis.backoff import NoBackoff  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415

        if self.topology != "single":
            return self.master_settings().open_connection(protocol=protocol)
        arguments = self._common_arguments()
        arguments.update(retry=Retry(NoBackoff(), 0), protocol=protocol)
        connection: redis.connection.AbstractConnection
        if self.unix_socket:
            # TCP keepalive is a TCP socket option: redis-py's unix socket connection refuses it.
            del arguments["socket_keepalive"]
            # The stubs miss that a unix socket connection needs no host.
            connection = redis.connection.UnixDomainSocketConnection(  # type: ignore[abstract, no-untyped-call]
                path=self.unix_socket, **arguments
            )
        elif self.tls is not None:
            connection = redis.connection.SSLConnection(host=self.host, port=self.port, **arguments)
        else:
            connection = redis.connection.Connection(  # type: ignore[no-untyped-call]
                host=self.host, port=self.port, **arguments
            )
        connection.connect()  # type: ignore[no-untyped-call]
        return connection
