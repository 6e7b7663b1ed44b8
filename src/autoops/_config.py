"""URLs, secrets and the settings file.

Precedence is explicit and the same everywhere: keyword arguments beat the environment
(``AUTOOPS_DB_URL``, ``AUTOOPS_CACHE_URL``), which beats the TOML file (``autoops.toml`` in the
working directory, or the path in ``AUTOOPS_CONFIG`` or passed as ``path=``). There is no silent
default server: a URL that is set nowhere is a :class:`ConfigError` that says how to set it.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ._errors import ConfigError

__all__ = [
    "CacheUrl",
    "DbUrl",
    "Secret",
    "Settings",
    "load_settings",
]

ENV_DB_URL: Final = "AUTOOPS_DB_URL"
ENV_CACHE_URL: Final = "AUTOOPS_CACHE_URL"
ENV_CONFIG: Final = "AUTOOPS_CONFIG"
DEFAULT_CONFIG_FILE: Final = "autoops.toml"
REDACTED: Final = "***"

log: Final = logging.getLogger("autoops.config")


class Secret:
    """A password or token that never shows itself in a repr, a str or a log line.

    Call :meth:`reveal` at the one place the real value is needed (handing it to a driver).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret itself; keep the result out of messages and logs."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


OptionValue = str | int | float | bool
Converter = Callable[[str], OptionValue]


def _to_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _to_positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"expected a number of seconds above 0, got {text!r}")
    return value


def _to_positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"expected a whole number above 0, got {text!r}")
    return value


# The options each scheme accepts in its URL query string, with how to read them.
MYSQL_OPTIONS: Final[Mapping[str, Converter]] = MappingProxyType(
    {
        "charset": str,
        "connect_timeout": _to_positive_float,
        "read_timeout": _to_positive_float,
        "write_timeout": _to_positive_float,
        "unix_socket": str,
        "ssl_ca": str,
        "ssl_cert": str,
        "ssl_key": str,
        "ssl_verify_identity": _to_bool,
    }
)
SQLITE_OPTIONS: Final[Mapping[str, Converter]] = MappingProxyType(
    {"timeout": _to_positive_float, "journal_mode": str}
)
REDIS_OPTIONS: Final[Mapping[str, Converter]] = MappingProxyType(
    {
        "db": int,
        "socket_timeout": _to_positive_float,
        "connect_timeout": _to_positive_float,
        "max_connections": _to_positive_int,
        "client_name": str,
        "ssl_ca_certs": str,
        "ssl_cert_reqs": str,
        "ssl_certfile": str,
        "ssl_keyfile": str,
        "ssl_check_hostname": _to_bool,
    }
)
MEMORY_OPTIONS: Final[Mapping[str, Converter]] = MappingProxyType({})

Dialect = Literal["mysql", "sqlite"]
DB_SCHEMES: Final[Mapping[str, Dialect]] = {
    "mysql": "mysql",
    "mysql+pymysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
}
CACHE_SCHEMES: Final = frozenset(
    {
        "redis",
        "rediss",
        "unix",
        "memory",
        "redis+sentinel",
        "rediss+sentinel",
        "redis+cluster",
        "rediss+cluster",
    }
)
# Schemes whose authority is a comma-separated list of host:port (sentinels, or cluster seeds).
MULTI_HOST_SCHEMES: Final = frozenset(
    {"redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"}
)
_SENTINEL_PORT: Final = 26379


def _where(url_label: str) -> str:
    return f" in {url_label}" if url_label else ""


def convert_options(
    raw: Mapping[str, Any], allowed: Mapping[str, Converter], where: str
) -> dict[str, Any]:
    """Check option names against ``allowed`` and convert string values; name any bad one."""
    converted: dict[str, Any] = {}
    for name, value in raw.items():
        converter = allowed.get(name)
        if converter is None:
            known = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(f"unknown option {name!r}{_where(where)}; known options: {known}")
        if value is None:
            # Only keyword options can be None (e.g. read_timeout=None: no timeout).
            converted[name] = None
        elif isinstance(value, str):
            try:
                converted[name] = converter(value)
            except ValueError as exc:
                raise ConfigError(f"bad value for option {name!r}{_where(where)}: {exc}") from None
        elif isinstance(value, bool | int | float):
            converted[name] = value
        else:
            raise ConfigError(
                f"bad value for option {name!r}{_where(where)}: expected text or a number, "
                f"got {type(value).__name__}"
            )
    return converted


def _query_options(query: str, where: str) -> dict[str, str]:
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        # Not the query itself: an unencoded password can end up in it.
        raise ConfigError(f"malformed query string{_where(where)}") from None
    for name, value in pairs:
        if name in options:
            raise ConfigError(f"option {name!r} is given twice{_where(where)}")
        options[name] = value
    return options


def _split(url: str, kind: str) -> tuple[str, Any]:
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"the {kind} URL is empty; expected something like scheme://host/...")
    if "://" not in url:
        raise ConfigError(
            f"malformed {kind} URL {redact_url(url)!r}: it has no scheme; "
            "expected something like scheme://host/..."
        )
    url = url.strip()
    if _misplaced_at(url) is not None:
        raise ConfigError(
            f"cannot parse the {kind} URL {redact_url(url)!r}: a '/', '?' or '#' in the password "
            "(or user name) must be percent-encoded as %2F, %3F, %23 (and an '@' after the host "
            "as %40), e.g. urllib.parse.quote(password, safe='')"
        )
    parts = urlsplit(url)
    return parts.scheme.lower(), parts


def _port(parts: Any, label: str, default: int) -> int:
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"bad port in {label}: expected a number from 1 to 65535") from None
    if port is None:
        return default
    if not 1 <= port <= 65535:
        raise ConfigError(f"bad port {port} in {label}: expected a number from 1 to 65535")
    return int(port)


_AUTHORITY_END: Final = re.compile(r"[/?#]")


def _misplaced_at(url: str) -> int | None:
    """Where the last ``@`` of ``url`` is, when it comes after the first ``/``, ``?`` or ``#`` of
    the authority: the credentials hold one of those unencoded, so a URL parser would cut the
    password there and read the rest of it as the path, query or fragment."""
    scheme, separator, rest = url.partition("://")
    if not separator or rest.startswith("/"):
        return None
    end = _AUTHORITY_END.search(rest)
    at = rest.rfind("@")
    if end is None or at < end.start():
        return None
    return len(scheme) + len(separator) + at


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``; safe for messages and logs.

    When the credentials cannot be told apart (a ``/``, ``?`` or ``#`` not percent-encoded in
    the password, or no scheme at all), everything between ``//`` and the last ``@`` goes.
    """
    if "://" not in url:
        return f"{REDACTED}@{url.rpartition('@')[2]}" if "@" in url else url
    at = _misplaced_at(url)
    if at is not None:
        scheme, _, rest = url.partition("://")
        user, colon, _ = rest.partition(":")
        shown = f"{user}:" if colon and not _AUTHORITY_END.search(user) else ""
        url = f"{scheme}://{shown}{REDACTED}@{url[at + 1 :]}"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None and "password=" not in parts.query:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{hostinfo}"
    query = "&".join(
        f"{name}={REDACTED}" if name == "password" else f"{name}={quote(value, safe='/')}"
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    rebuilt = f"{parts.scheme}://{netloc}{parts.path}"
    return f"{rebuilt}?{query}" if query else rebuilt


@dataclass(frozen=True, slots=True)
class DbUrl:
    """A parsed database URL: ``mysql://user:pass@host:3306/db?charset=utf8mb4`` or
    ``sqlite:///relative.db`` / ``sqlite:////absolute.db``. Its repr hides the password."""

    dialect: Dialect
    host: str = ""
    port: int = 0
    user: str = ""
    password: Secret | None = field(default=None, repr=False)
    database: str = ""
    path: str = ""
    options: Mapping[str, OptionValue] = field(default_factory=dict)

    @classmethod
    def parse(cls, url: str) -> DbUrl:
        """Parse and validate ``url``; a bad part raises :class:`ConfigError` naming it."""
        scheme, parts = _split(url, "database")
        label = redact_url(url)
        dialect = DB_SCHEMES.get(scheme)
        if dialect is None:
            known = ", ".join(f"{name}://" for name in DB_SCHEMES)
            raise ConfigError(f"unknown database URL scheme {scheme!r} in {label}; use {known}")
        options = _query_options(parts.query, label)
        if dialect == "sqlite":
            if parts.netloc:
                raise ConfigError(
                    f"malformed SQLite URL {label}: use sqlite:///relative.db or "
                    "sqlite:////absolute/path.db (three or four slashes, no host)"
                )
            path = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
            if not path:
                raise ConfigError(
                    f"SQLite URL {label} names no file; use sqlite:///app.db or sqlite:///:memory:"
                )
            return cls(
                dialect="sqlite",
                path=path,
                options=convert_options(options, SQLITE_OPTIONS, label),
            )
        if not parts.hostname and "unix_socket" not in options:
            raise ConfigError(
                f"MySQL URL {label} names no host; use mysql://user:password@host:3306/database"
            )
        database = unquote(parts.path.lstrip("/"))
        if "/" in database:
            raise ConfigError(f"bad database name {database!r} in {label}: it contains '/'")
        password = unquote(parts.password) if parts.password is not None else None
        return cls(
            dialect="mysql",
            host=parts.hostname or "localhost",
            port=_port(parts, label, 3306),
            user=unquote(parts.username or ""),
            password=Secret(password) if password is not None else None,
            database=database,
            options=convert_options(options, MYSQL_OPTIONS, label),
        )

    def redacted(self) -> str:
        """The URL as text with the password shown as ``***``."""
        if self.dialect == "sqlite":
            return f"sqlite:///{self.path}"
        userinfo = quote(self.user, safe="")
        if self.password is not None:
            userinfo += f":{REDACTED}"
        netloc = f"{userinfo}@{self.host}:{self.port}" if userinfo else f"{self.host}:{self.port}"
        return f"mysql://{netloc}/{self.database}"

    @property
    def location(self) -> str:
        """Where the server is, for messages: ``host:port`` or the SQLite file."""
        if self.dialect == "sqlite":
            return self.path
        socket_path = self.options.get("unix_socket")
        return str(socket_path) if socket_path else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.redacted()


@dataclass(frozen=True, slots=True)
class CacheUrl:
    """A parsed cache URL: ``redis://[user:pass@]host:6379/0``, ``rediss://...``,
    ``unix:///run/redis.sock?db=0``, ``memory://[name]``,
    ``redis+sentinel://[user:pass@]s1:26379,s2:26379/mymaster/0`` (``rediss+sentinel://``: TLS)
    or ``redis+cluster://[user:pass@]n1:7000,n2:7001`` (seed nodes; ``rediss+cluster://``).
    ``hosts`` holds every host of the last two (``host``/``port`` are the first); ``service`` is
    the Sentinel master's name. Its repr hides the password."""

    scheme: str
    host: str = ""
    port: int = 0
    db: int = 0
    user: str = ""
    password: Secret | None = field(default=None, repr=False)
    path: str = ""
    options: Mapping[str, OptionValue] = field(default_factory=dict)
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""

    @classmethod
    def parse(cls, url: str) -> CacheUrl:
        """Parse and validate ``url``; a bad part raises :class:`ConfigError` naming it."""
        scheme, parts = _split(url, "cache")
        label = redact_url(url)
        if scheme not in CACHE_SCHEMES:
            known = ", ".join(f"{name}://" for name in sorted(CACHE_SCHEMES))
            raise ConfigError(f"unknown cache URL scheme {scheme!r} in {label}; use {known}")
        raw = _query_options(parts.query, label)
        password_text = raw.pop("password", None)
        if parts.password is not None:
            password_text = unquote(parts.password)
        password = Secret(password_text) if password_text is not None else None
        user = unquote(parts.username or "")
        if scheme == "memory":
            name = (parts.netloc + parts.path).strip("/")
            return cls(
                scheme="memory", path=name, options=convert_options(raw, MEMORY_OPTIONS, label)
            )
        options = convert_options(raw, REDIS_OPTIONS, label)
        db = int(options.pop("db", 0))
        if scheme in MULTI_HOST_SCHEMES:
            return cls._parse_multi_host(scheme, parts, label, user, password, db, options)
        if scheme == "unix":
            if not parts.path:
                raise ConfigError(f"unix cache URL {label} names no socket path")
            return cls(
                scheme="unix",
                path=unquote(parts.path),
                db=db,
                user=user,
                password=password,
                options=options,
            )
        if not parts.hostname:
            raise ConfigError(f"Redis URL {label} names no host; use redis://host:6379/0")
        path_db = parts.path.strip("/")
        if path_db:
            if not path_db.isdigit():
                raise ConfigError(
                    f"bad database number {path_db!r} in {label}: use redis://host:6379/0"
                )
            db = int(path_db)
        return cls(
            scheme=scheme,
            host=parts.hostname,
            port=_port(parts, label, 6379),
            db=db,
            user=user,
            password=password,
            options=options,
        )

    @classmethod
    def _parse_multi_host(
        cls,
        scheme: str,
        parts: Any,
        label: str,
        user: str,
        password: Secret | None,
        db: int,
        options: dict[str, Any],
    ) -> CacheUrl:
        sentinel = scheme.endswith("+sentinel")
        example = (
            f"{scheme}://s1:26379,s2:26379/mymaster/0"
            if sentinel
            else f"{scheme}://n1:7000,n2:7001"
        )
        hostlist = parts.netloc.rpartition("@")[2]
        hosts: list[tuple[str, int]] = []
        for entry in hostlist.split(","):
            host, colon, port_text = entry.strip().rpartition(":")
            if not colon:
                host, port_text = entry.strip(), ""
            host = host.strip("[]")
            if not host:
                raise ConfigError(f"{label} names an empty host; use {example}")
            if port_text and not port_text.isdigit():
                raise ConfigError(f"bad port {port_text!r} in {label}: use {example}")
            port = int(port_text) if port_text else (_SENTINEL_PORT if sentinel else 6379)
            if not 1 <= port <= 65535:
                raise ConfigError(f"bad port {port} in {label}: expected a number from 1 to 65535")
            hosts.append((host, port))
        segments = [unquote(part) for part in parts.path.strip("/").split("/") if part]
        service = ""
        if sentinel:
            if not segments:
                raise ConfigError(
                    f"{label} names no Sentinel master; use {example} (the name the sentinels "
                    "monitor, as in 'sentinel monitor mymaster ...')"
                )
            service, *segments = segments
        if len(segments) > 1 or (segments and not segments[0].isdigit()):
            raise ConfigError(
                f"bad database number {'/'.join(segments)!r} in {label}: use {example}"
            )
        if segments:
            db = int(segments[0])
        if not sentinel and db != 0:
            raise ConfigError(f"{label} asks for database {db}; Redis Cluster has only database 0")
        return cls(
            scheme=scheme,
            host=hosts[0][0],
            port=hosts[0][1],
            db=db,
            user=user,
            password=password,
            options=options,
            hosts=tuple(hosts),
            service=service,
        )

    def redacted(self) -> str:
        """The URL as text with the password shown as ``***``."""
        if self.scheme == "memory":
            return f"memory://{self.path}"
        auth = quote(self.user, safe="")
        if self.password is not None:
            auth += f":{REDACTED}"
        auth = f"{auth}@" if auth else ""
        if self.scheme == "unix":
            return f"unix://{auth}{self.path}?db={self.db}"
        if self.hosts:
            hostlist = ",".join(f"{host}:{port}" for host, port in self.hosts)
            if self.service:
                return f"{self.scheme}://{auth}{hostlist}/{quote(self.service, safe='')}/{self.db}"
            return f"{self.scheme}://{auth}{hostlist}"
        return f"{self.scheme}://{auth}{self.host}:{self.port}/{self.db}"

    @property
    def location(self) -> str:
        """Where the server is, for messages."""
        if self.scheme in {"unix", "memory"}:
            return f"{self.scheme}:{self.path}"
        if self.hosts:
            return self.redacted().partition("://")[2].rpartition("@")[2]
        return f"{self.host}:{self.port}/{self.db}"

    def __str__(self) -> str:
        return self.redacted()


@dataclass(frozen=True)
class Settings:
    """What the environment and the settings file say, before keyword arguments are applied.

    ``sections`` holds each top-level TOML table (``db``, ``cache``, ``sync``, ``backup``,
    ``deploy``, ``monitor``, ...) as read; ``db_url_source`` and ``cache_url_source`` say where each
    URL came from, for messages such as "using the database from AUTOOPS_DB_URL".
    """

    db_url: str | None = None
    cache_url: str | None = None
    db_url_source: str = ""
    cache_url_source: str = ""
    path: Path | None = None
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def section(self, name: str) -> Mapping[str, Any]:
        """The ``[name]`` table of the settings file, or an empty mapping."""
        return self.sections.get(name, {})

    def require_db_url(self) -> str:
        """The database URL, or a :class:`ConfigError` that says how to set one."""
        if self.db_url is None:
            raise ConfigError(_missing("database", ENV_DB_URL, "db", "mysql://user@host/db"))
        return self.db_url

    def require_cache_url(self) -> str:
        """The cache URL, or a :class:`ConfigError` that says how to set one."""
        if self.cache_url is None:
            raise ConfigError(_missing("cache", ENV_CACHE_URL, "cache", "redis://host:6379/0"))
        return self.cache_url

    def __repr__(self) -> str:
        db = redact_url(self.db_url) if self.db_url else None
        cache = redact_url(self.cache_url) if self.cache_url else None
        return f"Settings(db_url={db!r}, cache_url={cache!r}, path={self.path!r})"


def _missing(what: str, env: str, table: str, example: str) -> str:
    return (
        f"no {what} URL is configured: pass url=..., set {env}, or add "
        f'[{table}] url = "{example}" to {DEFAULT_CONFIG_FILE}'
    )


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    db_url: str | None = None,
    cache_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the settings with the documented precedence: arguments > environment > file.

    ``path`` (or ``AUTOOPS_CONFIG``) names the TOML file and must exist when given; otherwise
    ``./autoops.toml`` is read if it is there.
    """
    env = os.environ if environ is None else environ
    file_path: Path | None
    if path is not None:
        file_path = Path(path)
    elif env.get(ENV_CONFIG):
        file_path = Path(env[ENV_CONFIG])
    else:
        default = Path(DEFAULT_CONFIG_FILE)
        file_path = default if default.is_file() else None
    sections: dict[str, Mapping[str, Any]] = {}
    if file_path is not None:
        sections = _read_toml(file_path)

    def pick(argument: str | None, env_name: str, table: str) -> tuple[str | None, str]:
        if argument is not None:
            return argument, "argument"
        if env.get(env_name):
            return env[env_name], f"environment variable {env_name}"
        value = sections.get(table, {}).get("url")
        if value is not None:
            if not isinstance(value, str):
                raise ConfigError(f"[{table}] url in {file_path} must be a string")
            return value, f"{file_path} [{table}] url"
        return None, ""

    resolved_db, db_source = pick(db_url, ENV_DB_URL, "db")
    resolved_cache, cache_source = pick(cache_url, ENV_CACHE_URL, "cache")
    return Settings(
        db_url=resolved_db,
        cache_url=resolved_cache,
        db_url_source=db_source,
        cache_url_source=cache_source,
        path=file_path,
        sections=sections,
    )


def _read_toml(path: Path) -> dict[str, Mapping[str, Any]]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"settings file {path} does not exist; create it, or fix the path given with --config "
            f"or {ENV_CONFIG}"
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            f"settings file {path} is a directory; give the path of a TOML file such as "
            f"{path / DEFAULT_CONFIG_FILE}"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"settings file {path} is not UTF-8: byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start} cannot be decoded; TOML files are UTF-8, so convert it (iconv -t UTF-8)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"settings file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc.strerror}") from None
    sections: dict[str, Mapping[str, Any]] = {}
    for name, value in data.items():
        if not isinstance(value, dict):
            raise ConfigError(
                f"settings file {path}: top-level key {name!r} must be a table such as [{name}]"
            )
        sections[name] = value
    _warn_if_exposed(path, sections)
    return sections


_SECRET_KEYS: Final = ("password", "passwd", "secret", "token")
# Files already warned about, so a command that reads its settings twice warns once.
_warned: set[tuple[str, int]] = set()


def _holds_password(value: Any, key: str = "") -> bool:
    if isinstance(value, Mapping):
        return any(_holds_password(item, str(name)) for name, item in value.items())
    if isinstance(value, list):
        return any(_holds_password(item, key) for item in value)
    if not isinstance(value, str) or not value:
        return False
    if any(word in key.lower() for word in _SECRET_KEYS):
        return True
    return "://" in value and redact_url(value) != value


def _warn_if_exposed(path: Path, sections: Mapping[str, Any]) -> None:
    """Warn, as ssh does for private keys, when a file holding a password is readable by the
    group or by others."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if not mode & 0o044 or not _holds_password(sections):
        return
    seen = (str(path.resolve()), mode)
    if seen in _warned:
        return
    _warned.add(seen)
    log.warning(
        "settings file %s holds a password and is readable by %s (mode %04o); "
        "make it private: chmod 600 %s",
        path,
        "group and others"
        if mode & 0o004 and mode & 0o040
        else ("others" if mode & 0o004 else "its group"),
        mode & 0o777,
        path,
    )


def renamed_setting(table: Mapping[str, Any], old: str, new: str, where: str) -> Any:
    """``table[new]``, or ``table[old]`` with a :class:`FutureWarning` (shown to whoever runs the
    command, unlike a DeprecationWarning) saying to rename it; both set is a :class:`ConfigError`.
    None when neither is set."""
    if old not in table:
        return table.get(new)
    if new in table:
        raise ConfigError(f"{where}: {old} and {new} are the same setting; keep only {new}")
    warnings.warn(
        f"{where}: the setting {old} is now called {new}; rename it (the old name will stop "
        "working in a future release)",
        FutureWarning,
        stacklevel=2,
    )
    return table[old]
