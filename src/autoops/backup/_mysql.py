"""MySQL/MariaDB backups through the server's own dump tool, restores through its client.

Credentials reach the tools only through a 0600 option file in a private temporary directory
(``--defaults-extra-file``, which must be the first argument), never argv or the environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .._errors import ConfigError
from ..db import DbClient, MySQLClient
from ..db._identifiers import quote_any_name
from ._engine import BackupEngine, Capture, RestoreJob
from ._errors import BackupError, BackupVerifyError, RestoreRefusedError
from ._model import Backup, TableStats
from ._mysql_load import load_dump, tool_message
from ._replica import dump_from_replica

__all__ = [
    "DUMP_OPTIONS",
    "DumpRun",
    "MySQLEngine",
    "MySQLTools",
    "dump_source",
    "find_tools",
    "mysql_client",
    "read_table_stats",
    "restore_stream",
]

log: Final = logging.getLogger("autoops.backup")

DUMP_OPTIONS: Final = (
    "--single-transaction",
    "--quick",
    "--routines",
    "--events",
    "--triggers",
    "--hex-blob",
    "--default-character-set=utf8mb4",
    "--skip-lock-tables",
)
_DUMP_COMPLETED: Final = b"-- Dump completed"
_READ_SIZE: Final = 1 << 20
_TAIL: Final = 512
_HEAD: Final = 64 * 1024
_PACKAGES: Final = "mariadb-client (for MariaDB) or default-mysql-client (for MySQL)"


@dataclass(frozen=True, slots=True)
class MySQLTools:
    """The dump and client programs chosen for a server, with the dump tool's version line."""

    dump: str
    client: str
    version: str


def _which(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def find_tools(server_version: str) -> MySQLTools:
    """``mariadb-dump``/``mariadb`` for a MariaDB server, ``mysqldump``/``mysql`` for MySQL, falling
    back to the other family's tools when only those are installed."""
    mariadb = "mariadb" in server_version.lower()
    dump_names = ("mariadb-dump", "mysqldump") if mariadb else ("mysqldump", "mariadb-dump")
    client_names = ("mariadb", "mysql") if mariadb else ("mysql", "mariadb")
    dump = _which(*dump_names)
    client = _which(*client_names)
    if dump is None or client is None:
        missing = dump_names[0] if dump is None else client_names[0]
        raise BackupError(
            f"{missing} is not installed (needed to back up or restore a "
            f"{'MariaDB' if mariadb else 'MySQL'} server); install the Debian package {_PACKAGES}"
        )
    if Path(dump).name != dump_names[0]:
        log.warning(
            "%s is not installed; using %s for a %s server", dump_names[0], dump, server_version
        )
    completed = subprocess.run([dump, "--version"], capture_output=True, text=True, check=False)
    return MySQLTools(dump=dump, client=client, version=completed.stdout.strip())


def _option_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


_OPTION_PREFIX: Final = "autoops-mysql-"
_OPTION_DIRECTORY_RE: Final = re.compile(rf"{_OPTION_PREFIX}(\d+)-[^/]+")


def remove_stale_option_files() -> list[str]:
    """Remove the option-file directories (they hold a password) of this user's autoops
    processes that died without cleaning up (SIGKILL, power loss); returns their paths."""
    return remove_dead_processes_directories(
        _OPTION_DIRECTORY_RE, "left by a backup process that died"
    )


def remove_dead_processes_directories(pattern: re.Pattern[str], why: str) -> list[str]:
    """Remove the directories in the temporary directory whose whole name matches ``pattern``
    (group 1: the pid that made it), owned by this user, whose process is gone; returns their
    paths. Directories of live processes, or of other users, are left alone."""
    removed = []
    with contextlib.suppress(OSError), os.scandir(tempfile.gettempdir()) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match is None or not entry.is_dir(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            try:
                os.kill(int(match.group(1)), 0)
                continue
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
            log.info("removed %s, %s", entry.path, why)
    return removed


@contextlib.contextmanager
def option_file(db: MySQLClient) -> Iterator[str]:
    """A ``[client]`` option file with the connection's credentials, 0600 in a 0700 temporary
    directory, removed afterwards (and by the next run if this process is killed)."""
    settings = db.connection_settings
    lines = ["[client]", f"user={_option_value(settings.user)}"]
    if settings.password is not None:
        lines.append(f"password={_option_value(settings.password.reveal())}")
    if settings.unix_socket:
        lines.append(f"socket={_option_value(settings.unix_socket)}")
    else:
        lines += [f"host={_option_value(settings.host)}", f"port={settings.port}", "protocol=TCP"]
    # The tools must use the client's TLS settings, or the password would cross in the clear.
    # (MariaDB's option names; a CA file alone makes MySQL's tools verify the CA too.)
    tls = settings.tls
    if tls is not None:
        files = (("ssl-ca", tls.ca_file), ("ssl-cert", tls.cert_file), ("ssl-key", tls.key_file))
        lines += [f"{option}={_option_value(path)}" for option, path in files if path]
        if not tls.ca_file and not tls.cert_file:
            lines.append("ssl")
        if tls.check_hostname and tls.verify != "none":
            lines.append("ssl-verify-server-cert")
    remove_stale_option_files()
    # The writer's pid in the name lets a later run remove what a killed one left.
    directory = tempfile.mkdtemp(prefix=f"{_OPTION_PREFIX}{os.getpid()}-")
    path = os.path.join(directory, "client.cnf")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def dump_source(db: MySQLClient, tables: Sequence[str] = ()) -> str:
    """The secret-free source label of a MySQL database (and of the tables, when only some)."""
    url = db.url
    socket_path = url.options.get("unix_socket")
    where = f"localhost{socket_path}" if socket_path else f"{url.host}:{url.port}"
    label = f"mysql://{where}/{url.database}"
    return f"{label}?tables={','.join(tables)}" if tables else label


def _server_facts(db: MySQLClient) -> dict[str, Any]:
    row = db.query_one(
        "SELECT VERSION() AS version, @@log_bin AS log_bin, @@GLOBAL.gtid_binlog_pos AS gtid"
        if _is_mariadb(db)
        else "SELECT VERSION() AS version, @@log_bin AS log_bin, @@GLOBAL.gtid_executed AS gtid"
    )
    assert row is not None
    return row


def _is_mariadb(db: MySQLClient) -> bool:
    row = db.query_one("SELECT VERSION() AS version")
    return row is not None and "mariadb" in str(row["version"]).lower()


def _non_transactional_tables(db: MySQLClient) -> list[tuple[str, str]]:
    """(table, engine) of every base table not on a transactional engine."""
    rows = db.query(
        "SELECT TABLE_NAME AS name, ENGINE AS engine FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' "
        "AND ENGINE NOT IN ('InnoDB', 'SEQUENCE') ORDER BY TABLE_NAME",
        (db.url.database,),
    )
    return [(str(row["name"]), str(row["engine"])) for row in rows]


def read_table_stats(
    db: MySQLClient, *, checksums: bool = True, only: Sequence[str] = ()
) -> dict[str, TableStats]:
    """Row counts (and ``CHECKSUM TABLE``) of every base table (or of ``only`` those), read in
    one snapshot."""
    stats: dict[str, TableStats] = {}
    with db.transaction() as tx:
        tables = [
            str(row["name"])
            for row in tx.query(
                "SELECT TABLE_NAME AS name FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME"
            )
        ]
        for table in tables:
            if only and table not in only:
                continue
            # A name the server reported is legal whatever it holds: quoted, never refused.
            quoted = quote_any_name(table)
            count_row = tx.query_one(f"SELECT COUNT(*) AS n FROM {quoted}")  # noqa: S608
            checksum = None
            if checksums:
                checksum_row = tx.query_one(f"CHECKSUM TABLE {quoted}")
                value = checksum_row["Checksum"] if checksum_row else None
                checksum = int(value) if value is not None else None
            stats[table] = TableStats(
                rows=int(count_row["n"]) if count_row else 0, checksum=checksum
            )
    return stats


_POSITION_RE: Final = re.compile(
    rb"CHANGE (?:MASTER|REPLICATION SOURCE) TO (?:MASTER|SOURCE)_LOG_FILE='(?P<file>[^']+)', "
    rb"(?:MASTER|SOURCE)_LOG_POS=(?P<pos>\d+)"
)


def _version_tuple(version: str) -> tuple[int, ...]:
    numbers = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    return tuple(int(part) for part in numbers.groups()) if numbers else (0, 0, 0)


_GTID_RE: Final = re.compile(rb"gtid_slave_pos='(?P<gtid>[^']*)'")


@dataclass
class DumpRun:
    """One run of the dump tool: what it was given and what it reported, filled as it streams."""

    db: MySQLClient
    tools: MySQLTools
    server_version: str
    binlog: bool
    warnings: list[str] = field(default_factory=list)
    position: dict[str, str] = field(default_factory=dict)
    tables: dict[str, TableStats] = field(default_factory=dict)
    checksums: bool = True
    only_tables: tuple[str, ...] = ()

    @classmethod
    def prepare(
        cls, db: MySQLClient, *, checksums: bool = True, tables: Sequence[str] = ()
    ) -> DumpRun:
        """Look at the server: its version, binary log, tools and non-InnoDB tables."""
        if not db.url.database:
            raise BackupError(
                f"the MySQL URL {db.url.redacted()} names no database; add /<database> to back "
                "one up"
            )
        facts = _server_facts(db)
        version = str(facts["version"])
        run = cls(
            db=db,
            tools=find_tools(version),
            server_version=version,
            binlog=bool(int(facts["log_bin"] or 0)),
            checksums=checksums,
            only_tables=tuple(tables),
        )
        if tables:
            existing = {
                str(row["name"])
                for row in db.query(
                    "SELECT TABLE_NAME AS name FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = DATABASE()"
                )
            }
            missing = sorted(set(tables) - existing)
            if missing:
                raise BackupError(
                    f"no table {', '.join(missing)} in {db.url.database} on {dump_source(db)}"
                )
        skipped = [
            f"{name} ({engine})"
            for name, engine in _non_transactional_tables(db)
            if not tables or name in tables
        ]
        if skipped:
            run.warnings.append(
                "tables not on a transactional engine are not dumped consistently with the rest: "
                + ", ".join(skipped)
            )
        return run

    @property
    def argv(self) -> list[str]:
        """The dump tool's arguments after ``--defaults-extra-file`` (no secrets)."""
        args = list(DUMP_OPTIONS)
        if self.binlog:
            # The binlog file and position (and GTID on MariaDB), as comments in the dump head.
            if "mariadb" in self.server_version.lower():
                args += ["--master-data=2", "--gtid"]
            elif _version_tuple(self.server_version) >= (8, 0, 26):
                args.append("--source-data=2")
            else:
                args.append("--master-data=2")
        return [*args, "--", self.db.url.database, *self.only_tables]

    def chunks(self) -> Iterator[bytes]:
        """The dump's bytes; raises :class:`BackupError` if the tool fails, prints errors, or the
        dump is empty or does not end with its completion line."""
        stats_thread: threading.Thread | None = None
        stats_error: list[BaseException] = []

        def take_stats() -> None:
            try:
                self.tables = read_table_stats(
                    self.db, checksums=self.checksums, only=self.only_tables
                )
            except BaseException as exc:
                stats_error.append(exc)

        with option_file(self.db) as config, tempfile.TemporaryFile() as stderr:
            argv = [self.tools.dump, f"--defaults-extra-file={config}", *self.argv]
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr)
            # The table stats are read in a snapshot opened beside the dump's own.
            stats_thread = threading.Thread(target=take_stats, name="autoops-backup-stats")
            stats_thread.start()
            assert process.stdout is not None
            head = b""
            tail = b""
            total = 0
            try:
                fd = process.stdout.fileno()
                while chunk := os.read(fd, _READ_SIZE):
                    total += len(chunk)
                    if len(head) < _HEAD:
                        head += chunk[: _HEAD - len(head)]
                    tail = (tail + chunk)[-_TAIL:]
                    yield chunk
                code = process.wait()
            except BaseException:
                process.kill()
                process.wait()
                raise
            finally:
                process.stdout.close()
                stats_thread.join()
            stderr.seek(0)
            message = tool_message(stderr.read().decode("utf-8", "replace"))
        where = f"{self.db.url.database} on {dump_source(self.db)}"
        if code != 0:
            raise BackupError(
                f"{Path(self.tools.dump).name} failed (exit {code}) dumping {where}: {message}",
                tool_message=message,
            )
        if message:
            self.warnings.append(f"{Path(self.tools.dump).name} said: {message}")
        if total == 0 or _DUMP_COMPLETED not in tail:
            raise BackupError(
                f"the dump of {where} is empty or truncated (no '-- Dump completed' line at its "
                "end); nothing was stored"
            )
        if stats_error:
            raise BackupError(
                f"reading row counts of {where} failed: {stats_error[0]}"
            ) from stats_error[0]
        self._read_position(head)

    def _read_position(self, head: bytes) -> None:
        match = _POSITION_RE.search(head)
        if match:
            self.position["binlog_file"] = match.group("file").decode()
            self.position["binlog_position"] = match.group("pos").decode()
        gtid = _GTID_RE.search(head)
        if gtid:
            self.position["gtid"] = gtid.group("gtid").decode()


_DEFINER_RE: Final = re.compile(rb"DEFINER=`(?:[^`]|``)*`@`(?:[^`]|``)*`")
_DATA_LINE: Final = b"INSERT INTO "
DEFINER_POLICIES: Final = ("keep", "strip")


def _quoted(name: str) -> bytes:
    return quote_any_name(name).encode("utf-8")


def rewrite_definitions(
    chunks: Iterable[bytes], *, strip_definer: bool = False, rename: tuple[str, str] | None = None
) -> Iterator[bytes]:
    """Rewrite object definitions in a dump on the fly; data lines (``INSERT INTO``) pass
    untouched. ``strip_definer`` removes ``DEFINER=`user`@`host``` so the restoring account owns
    views, triggers, routines and events (avoiding error 1449 where the original account does not
    exist); ``rename=(old, new)`` turns `old`. qualifiers into `new`., for a restore into a
    database of another name (MariaDB can qualify view columns with their database)."""
    old = _quoted(rename[0]) + b"." if rename else b""
    new = _quoted(rename[1]) + b"." if rename else b""

    in_data = False

    def rewrite(line: bytes) -> bytes:
        nonlocal in_data
        # mariadb-dump writes one row per line after "INSERT INTO `t` VALUES"; strings escape
        # their newlines, so the statement ends at the first line ending with ";".
        if in_data or line.startswith(_DATA_LINE):
            in_data = not line.rstrip(b"\r").endswith(b";")
            return line
        if strip_definer and b"DEFINER=" in line:
            line = _DEFINER_RE.sub(b"", line)
        if old and old in line:
            line = line.replace(old, new)
        return line

    def untouched(text: bytes) -> bool:
        """True (and the data state advanced) when no line of ``text`` needs rewriting."""
        nonlocal in_data
        if (strip_definer and b"DEFINER=" in text) or (old and old in text):
            return False
        last_end = text.rfind(b";\n")
        last_start = text.rfind(b"\n" + _DATA_LINE)
        if last_start == -1 and text.startswith(_DATA_LINE):
            last_start = 0
        if last_start > last_end:
            in_data = True
        elif last_end != -1:
            in_data = False
        return True

    carry = b""
    for chunk in chunks:
        text = carry + chunk
        end = text.rfind(b"\n") + 1
        carry = text[end:]
        if not end:
            continue
        block = text[:end]
        if untouched(block):
            yield block
        else:
            yield b"\n".join(rewrite(line) for line in block.split(b"\n")[:-1]) + b"\n"
    if carry:
        yield rewrite(carry)


def source_database(source: str) -> str:
    """The database name in a MySQL backup's source label."""
    return source.split("?", 1)[0].rsplit("/", 1)[-1]


def database_is_empty(db: MySQLClient) -> bool:
    """No tables, views, routines or events in the client's database."""
    row = db.query_one(
        "SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE())"
        " + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE())"
        " + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE())"
        " AS n"
    )
    return row is not None and int(row["n"]) == 0


def restore_stream(
    chunks: Iterable[bytes],
    db: MySQLClient,
    *,
    replace: bool = False,
    progress: Any = None,
) -> None:
    """Load an SQL dump into the client's database: definitions through the ``mariadb``/``mysql``
    client, table data on several connections (see :mod:`._mysql_load`)."""
    if not db.url.database:
        raise BackupError(f"the restore target {db.url.redacted()} names no database")
    if not replace and not database_is_empty(db):
        raise RestoreRefusedError(
            f"database {db.url.database} on {dump_source(db)} is not empty; restore into an empty "
            "database or pass replace=True (--replace) to overwrite what the dump contains"
        )
    version = str(_server_facts(db)["version"])
    tools = find_tools(version)
    with option_file(db) as config:
        argv = [
            tools.client,
            f"--defaults-extra-file={config}",
            "--default-character-set=utf8mb4",
            "--binary-mode",
            "--batch",
            "--",
            db.url.database,
        ]
        load_dump(
            chunks, db, argv, where=f"{db.url.database} on {dump_source(db)}", progress=progress
        )


def compare_stats(
    expected: dict[str, TableStats] | Any, actual: dict[str, TableStats], where: str
) -> None:
    """Raise :class:`BackupVerifyError` listing each table whose rows or checksum differ."""
    problems = []
    for table, stats in expected.items():
        got = actual.get(table)
        if got is None:
            problems.append(f"{table}: missing after restore")
        elif got.rows != stats.rows:
            problems.append(f"{table}: {got.rows} rows, expected {stats.rows}")
        elif stats.checksum is not None and got.checksum != stats.checksum:
            problems.append(f"{table}: CHECKSUM TABLE {got.checksum}, expected {stats.checksum}")
    extra = sorted(set(actual) - set(expected))
    problems += [f"{table}: not in the manifest" for table in extra]
    if problems:
        raise BackupVerifyError(f"the test restore of {where} differs: " + "; ".join(problems))


@contextlib.contextmanager
def mysql_client(db: MySQLClient | str) -> Iterator[MySQLClient]:
    """The client given, or one made from a URL and closed afterwards."""
    client = DbClient.from_url(db) if isinstance(db, str) else db
    try:
        if not isinstance(client, MySQLClient):
            raise ConfigError(f"expected a MySQL client or mysql:// URL, got {client!r}")
        yield client
    finally:
        if isinstance(db, str):
            client.close()


class MySQLEngine(BackupEngine):
    """MySQL/MariaDB dumps (kind ``mysql``, format ``sql``)."""

    kind = "mysql"
    data_format = "sql"

    def capture(
        self,
        client: MySQLClient,
        *,
        checksums: bool,
        tables: Sequence[str],
        from_replica: MySQLClient | None = None,
    ) -> Capture:
        """A dump of the client's database (or of ``tables``), with their checksums; read from
        ``from_replica``, a replica of it, with the primary's position it matches, if given."""
        run = DumpRun.prepare(from_replica or client, checksums=checksums, tables=tables)

        def describe() -> dict[str, Any]:
            return {
                "tool": run.tools.version,
                "server_version": run.server_version,
                "options": {"dump_options": list(DUMP_OPTIONS), "tables": list(tables)},
                "tables": run.tables,
                "position": run.position,
                "warnings": tuple(run.warnings),
            }

        source = dump_source(client, tables)
        return Capture(
            kind=self.kind,
            source=source,
            data_format=self.data_format,
            chunks=run.chunks if from_replica is None else lambda: dump_from_replica(run),
            describe=describe,
            label=f"backup {source}",
        )

    def check_content(
        self, backup: Backup, chunks: Callable[[], Iterable[bytes]], tail: bytes
    ) -> None:
        if b"-- Dump completed" not in tail:
            raise BackupVerifyError(
                f"{backup.data_file}: the dump does not end with its completion line"
            )

    def restore(self, job: RestoreJob) -> None:
        """Stream the dump through the ``mariadb``/``mysql`` client into ``job.target``."""
        if job.definer not in DEFINER_POLICIES:
            raise ConfigError(f"unknown definer policy {job.definer!r}; use 'keep' or 'strip'")
        with mysql_client(job.target) as client:
            job.check_stored()
            with job.progress() as progress:
                chunks = job.chunks()
                original = source_database(job.backup.source)
                rename = (original, client.url.database)
                if job.definer == "strip" or rename[0] != rename[1]:
                    chunks = rewrite_definitions(
                        chunks,
                        strip_definer=job.definer == "strip",
                        rename=rename if rename[0] != rename[1] else None,
                    )
                restore_stream(chunks, client, replace=job.replace, progress=progress)

    def test_restore(self, job: RestoreJob) -> None:
        """Restore into a scratch ``autoops_verify_*`` database of the server ``job.target``
        (made and dropped here) and compare its tables' checksums with the manifest's."""
        if job.target is True:
            raise BackupVerifyError(
                "a MySQL test restore needs a server: pass restore_test=<MySQL client or URL>"
            )
        with mysql_client(job.target) as admin:
            scratch = f"autoops_verify_{secrets.token_hex(6)}"
            admin.execute(f"CREATE DATABASE `{scratch}` CHARACTER SET utf8mb4")
            try:
                # The scratch client connects as the server's client does: same TLS, timeouts.
                settings = dataclasses.replace(admin.connection_settings, database=scratch)
                target = DbClient.from_connection_settings(settings, retry=admin.retry)
                assert isinstance(target, MySQLClient)
                try:
                    self.restore(dataclasses.replace(job, target=target))
                    compare_stats(job.backup.tables, read_table_stats(target), job.backup.id)
                finally:
                    target.close()
            finally:
                admin.execute(f"DROP DATABASE IF EXISTS `{scratch}`")
