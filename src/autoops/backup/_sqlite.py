"""SQLite backups through the online backup API: consistent while the database is in use."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .._config import DbUrl
from .._errors import ConfigError
from ..db import SQLiteClient
from ._engine import BackupEngine, Capture, RestoreJob
from ._errors import BackupError, BackupVerifyError, RestoreRefusedError
from ._model import TableStats
from ._mysql import compare_stats
from ._storage import disk_error

__all__ = [
    "SQLiteEngine",
    "SQLiteSnapshot",
    "check_sqlite_copy",
    "restore_sqlite_file",
    "sqlite_path",
    "sqlite_stats",
]

_CHUNK: Final = 1 << 20


def sqlite_path(db: SQLiteClient | str) -> Path:
    """The database file of a client, a ``sqlite:///`` URL or a plain path."""
    if isinstance(db, SQLiteClient):
        text = db.url.path
    elif db.startswith("sqlite:"):
        text = DbUrl.parse(db).path
    else:
        text = db
    if text == ":memory:" or text.startswith("file:"):
        raise ConfigError("an in-memory SQLite database cannot be backed up by path")
    return Path(text).absolute()


def sqlite_stats(connection: sqlite3.Connection) -> dict[str, TableStats]:
    """Row counts of every table."""
    tables = [
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    stats = {}
    for table in tables:
        quoted = '"' + table.replace('"', '""') + '"'
        (count,) = connection.execute(f"SELECT COUNT(*) FROM {quoted}").fetchone()  # noqa: S608
        stats[table] = TableStats(rows=int(count))
    return stats


@contextlib.contextmanager
def _private_directory() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="autoops-sqlite-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class SQLiteSnapshot:
    """A copy made with ``sqlite3.Connection.backup`` into a private temporary file."""

    path: Path
    tables: dict[str, TableStats] = field(default_factory=dict)
    version: str = sqlite3.sqlite_version

    def chunks(self) -> Iterator[bytes]:
        """The copy's bytes, after ``PRAGMA quick_check`` passed on it."""
        if not self.path.is_file():
            raise BackupError(f"SQLite database {self.path} does not exist")
        with _private_directory() as directory:
            copy = directory / "copy.db"
            try:
                source = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
                target = sqlite3.connect(copy)
                try:
                    source.backup(target)
                    (check,) = target.execute("PRAGMA quick_check").fetchone()
                    if check != "ok":
                        raise BackupError(f"SQLite database {self.path} fails quick_check: {check}")
                    self.tables = sqlite_stats(target)
                finally:
                    target.close()
                    source.close()
            except sqlite3.Error as exc:
                raise BackupError(f"cannot back up SQLite database {self.path}: {exc}") from exc
            with copy.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    yield chunk


def _write(chunks: Iterable[bytes], path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)


def restore_sqlite_file(chunks: Iterable[bytes], target: Path, *, replace: bool = False) -> None:
    """Copy a backup into ``target`` through the backup API (so open readers of the target see
    the old or the new database, never a mix); refuses a target with tables unless ``replace``."""
    with _private_directory() as directory:
        copy = directory / "restore.db"
        _write(chunks, copy)
        # sqlite3 would create a new target with the umask's mode (0644): a restored copy of a
        # backup is as private as the backup. An existing target keeps its owner's choice.
        created = False
        with contextlib.suppress(FileExistsError):
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            created = True
        source = sqlite3.connect(copy)
        destination = sqlite3.connect(target, timeout=30)
        try:
            (tables,) = destination.execute(
                "SELECT COUNT(*) FROM sqlite_master WHERE type IN ('table', 'view')"
            ).fetchone()
            if tables and not replace:
                raise RestoreRefusedError(
                    f"SQLite database {target} is not empty; pass replace=True (--replace) to "
                    "overwrite it"
                )
            source.backup(destination)
        except sqlite3.Error as exc:
            destination.close()
            if created:
                # Half a new database is worse than none: nothing else can have used it yet.
                for leftover in (target, target.with_name(target.name + "-journal")):
                    leftover.unlink(missing_ok=True)
            if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
                needed = copy.stat().st_size
                raise disk_error(OSError(errno.ENOSPC, "full"), target.parent, needed) from exc
            raise BackupError(f"restoring into SQLite database {target} failed: {exc}") from exc
        finally:
            destination.close()
            source.close()


def check_sqlite_copy(chunks: Iterable[bytes], expected: dict[str, TableStats], where: str) -> None:
    """Open a decompressed copy, run ``PRAGMA integrity_check`` and compare row counts."""
    with _private_directory() as directory:
        copy = directory / "verify.db"
        _write(chunks, copy)
        connection = sqlite3.connect(copy)
        try:
            (check,) = connection.execute("PRAGMA integrity_check").fetchone()
            if check != "ok":
                raise BackupVerifyError(f"{where} fails integrity_check: {check}")
            compare_stats(expected, sqlite_stats(connection), where)
        except sqlite3.DatabaseError as exc:
            raise BackupVerifyError(f"{where} is not a valid SQLite database: {exc}") from exc
        finally:
            connection.close()


class SQLiteEngine(BackupEngine):
    """SQLite database copies (kind ``sqlite``, format ``sqlite``)."""

    kind = "sqlite"
    data_format = "sqlite"

    def capture(self, db: SQLiteClient | str | os.PathLike[str]) -> Capture:
        """A consistent copy of the database, taken with the online backup API."""
        path = sqlite_path(db if isinstance(db, SQLiteClient | str) else os.fspath(db))
        snapshot = SQLiteSnapshot(path)
        return Capture(
            kind=self.kind,
            source=f"sqlite:///{path}",
            data_format=self.data_format,
            chunks=snapshot.chunks,
            describe=lambda: {
                "tool": "sqlite3 backup API",
                "server_version": snapshot.version,
                "tables": snapshot.tables,
            },
            label=f"backup {path}",
        )

    def restore(self, job: RestoreJob) -> None:
        """Copy the backup into the database file ``job.target`` (empty unless replacing)."""
        job.check_stored()
        target = job.target
        path = sqlite_path(target if isinstance(target, SQLiteClient | str) else os.fspath(target))
        restore_sqlite_file(job.chunks(), path, replace=job.replace)

    def test_restore(self, job: RestoreJob) -> None:
        """Open the copy and compare its tables with the manifest's."""
        backup = job.backup
        check_sqlite_copy(job.chunks(), dict(backup.tables), backup.data_file)
