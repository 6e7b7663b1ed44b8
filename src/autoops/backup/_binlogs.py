"""The binary log archive: a MySQL/MariaDB server's binlog files kept beside its full backups.

Each binlog file is copied whole with ``mariadb-binlog --read-from-remote-server --raw``
(credentials in an option file, never argv), compressed (and encrypted when the Backuper is),
stored under a name carrying its end position, read back, and only then described by a manifest
``binlog-<server>-<file>.binlog.json``. The active file is copied up to its current end and
marked incomplete; later runs replace that copy until the server closes the file. So a reader
sees either the old copy or the new one, never half of one, and a killed run leaves at most a
partial file the next run removes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .._display import Numeric, ResultList, format_bytes
from .._progress import Progress
from .._time import utc_now
from ..db import MySQLClient
from ._compress import Compressor, decompressed_chunks, suffix_for
from ._encryption import ENCRYPTED_SUFFIX
from ._errors import BackupError, BackupVerifyError, EncryptionKeyError
from ._mysql import dump_source, option_file, remove_dead_processes_directories
from ._storage import PARTIAL_SUFFIX

if TYPE_CHECKING:
    from ._backuper import Backuper
    from ._model import Backup

__all__ = [
    "BINLOG_MANIFEST_SUFFIX",
    "ArchivedBinlog",
    "BinlogEvents",
    "archive_binlogs",
    "binlog_list",
    "check_stored",
    "chunks_of",
    "list_binlogs",
    "numbered_file",
    "private_directory",
    "read_events",
    "sequence_of",
    "server_source",
    "unneeded",
    "verify_archive",
]

log: Final = logging.getLogger("autoops.backup")

BINLOG_MANIFEST_SUFFIX: Final = ".binlog.json"
_MANIFEST_VERSION: Final = 1
_MAGIC: Final = b"\xfebin"
_HEADER: Final = struct.Struct("<IBIIIH")  # timestamp, type, server_id, size, next position, flags
_FORMAT_DESCRIPTION: Final = 15
_MARIADB_GTID: Final = 162
_SEQUENCE_RE: Final = re.compile(r"\.(\d+)$")


def sequence_of(server_file: str) -> int:
    """The number a binlog file name ends with (``binlog.000042`` -> 42)."""
    match = _SEQUENCE_RE.search(server_file)
    if match is None:
        raise BackupError(f"{server_file!r} is not a binary log file name (base.NNNNNN)")
    return int(match.group(1))


def numbered_file(template: str, sequence: int) -> str:
    """``template``'s file name with another number (``binlog.000042``, 7 -> ``binlog.000007``)."""
    base, _, digits = template.rpartition(".")
    return f"{base}.{sequence:0{len(digits)}d}"


def server_source(source: str) -> str:
    """The server part of a MySQL source label (``mysql://db1:3306/shop`` -> ``mysql://db1:3306``):
    binary logs belong to the server, not to one of its databases."""
    without_query = source.split("?", 1)[0]
    scheme, _, rest = without_query.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _slug(source: str) -> str:
    without_scheme = source.split("://", 1)[-1]
    return re.sub(r"[^A-Za-z0-9]+", "-", without_scheme).strip("-")[:60] or "server"


def _time(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _parse_time(value: Any, where: str, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise BackupError(f"binlog manifest {where}: {name} is not a timestamp") from None
    if parsed.tzinfo is None:
        raise BackupError(f"binlog manifest {where}: {name} has no time zone")
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ArchivedBinlog:
    """One binary log file of a server as archived: the server's file name, the byte range
    copied (``start_position`` 4 to ``end_position``), whether the server had closed the file
    (``complete``), and when the copy was taken (``archived_at``: everything the server had
    written to that file before this instant is in it)."""

    source: str
    server_file: str
    start_position: int
    end_position: int
    complete: bool
    archived_at: datetime
    data_file: str
    size: int
    sha256: str
    raw_size: int
    compression: str
    first_event_at: datetime | None = None
    last_event_at: datetime | None = None
    first_gtid: str | None = None
    last_gtid: str | None = None
    server_id: int | None = None

    @property
    def sequence(self) -> int:
        """The file's number (``binlog.000042`` -> 42)."""
        return sequence_of(self.server_file)

    @property
    def manifest_file(self) -> str:
        """The manifest's name in the storage."""
        return manifest_name(self.source, self.server_file)

    @property
    def encrypted(self) -> bool:
        """True when the stored copy is an age file."""
        return self.data_file.endswith(ENCRYPTED_SUFFIX)

    def to_json(self) -> bytes:
        """The manifest as stored."""
        document = {
            "manifest_version": _MANIFEST_VERSION,
            "kind": "binlog",
            "source": self.source,
            "server_file": self.server_file,
            "start_position": self.start_position,
            "end_position": self.end_position,
            "complete": self.complete,
            "archived_at": _time(self.archived_at),
            "data_file": self.data_file,
            "size": self.size,
            "sha256": self.sha256,
            "raw_size": self.raw_size,
            "compression": self.compression,
            "first_event_at": _time(self.first_event_at),
            "last_event_at": _time(self.last_event_at),
            "first_gtid": self.first_gtid,
            "last_gtid": self.last_gtid,
            "server_id": self.server_id,
        }
        return json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> ArchivedBinlog:
        """Read a binlog manifest; a malformed one raises :class:`BackupError` naming it."""
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise BackupError(f"binlog manifest {where} is not valid JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("manifest_version") != _MANIFEST_VERSION:
            raise BackupError(f"binlog manifest {where} is not a version 1 binlog manifest")

        def field(name: str, kind: type, optional: bool = False) -> Any:
            value = document.get(name)
            if value is None and optional:
                return None
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise BackupError(
                    f"binlog manifest {where}: {name} should be a {kind.__name__}; the file is "
                    "damaged or was not written by autoops"
                )
            return value

        archived_at = _parse_time(field("archived_at", str), where, "archived_at")
        assert archived_at is not None
        archived = cls(
            source=field("source", str),
            server_file=field("server_file", str),
            start_position=field("start_position", int),
            end_position=field("end_position", int),
            complete=field("complete", bool),
            archived_at=archived_at,
            data_file=field("data_file", str),
            size=field("size", int),
            sha256=field("sha256", str),
            raw_size=field("raw_size", int),
            compression=field("compression", str),
            first_event_at=_parse_time(document.get("first_event_at"), where, "first_event_at"),
            last_event_at=_parse_time(document.get("last_event_at"), where, "last_event_at"),
            first_gtid=field("first_gtid", str, optional=True),
            last_gtid=field("last_gtid", str, optional=True),
            server_id=field("server_id", int, optional=True),
        )
        prefix = f"binlog-{_slug(archived.source)}-{archived.server_file}-"
        if archived.manifest_file != where or not archived.data_file.startswith(prefix):
            raise BackupError(f"binlog manifest {where} describes another file")
        sequence_of(archived.server_file)
        return archived

    def __repr__(self) -> str:
        state = "complete" if self.complete else "active"
        return (
            f"ArchivedBinlog({self.server_file!r}, source={self.source!r}, "
            f"{self.start_position}..{self.end_position}, {state}, "
            f"size={format_bytes(self.size)})"
        )


def manifest_name(source: str, server_file: str) -> str:
    """``binlog-<server slug>-<server file>.binlog.json``."""
    return f"binlog-{_slug(source)}-{server_file}{BINLOG_MANIFEST_SUFFIX}"


def binlog_list(archives: Iterable[ArchivedBinlog]) -> ResultList[ArchivedBinlog]:
    """Archived binlogs as a list that shows as one table."""
    return ResultList(
        archives,
        title="archived binary logs",
        columns=["file", "source", "positions", "state", "first event", "last event", "size"],
        row=lambda archived: (
            archived.server_file,
            archived.source,
            f"{archived.start_position}..{archived.end_position}",
            "complete" if archived.complete else "active",
            _time(archived.first_event_at) or "",
            _time(archived.last_event_at) or "",
            Numeric(format_bytes(archived.size)),
        ),
    )


def list_binlogs(storage: Any, source: str | None = None) -> list[ArchivedBinlog]:
    """Every archived binlog in ``storage`` (of one server ``source``), by source and file number;
    an unreadable manifest is logged and skipped."""
    archives = []
    for name in storage.names():
        if not name.endswith(BINLOG_MANIFEST_SUFFIX):
            continue
        try:
            archived = ArchivedBinlog.from_json(storage.read_bytes(name), name)
        except BackupError as exc:
            log.warning("skipping %s in %s: %s", name, storage.location, exc)
            continue
        if source is None or archived.source == source:
            archives.append(archived)
    archives.sort(key=lambda archived: (archived.source, archived.sequence))
    return archives


# reading events ---------------------------------------------------------------------------------


@dataclass
class BinlogEvents:
    """What a walk over a binlog file's events found."""

    end_position: int = 4
    first_event_at: datetime | None = None
    last_event_at: datetime | None = None
    first_gtid: str | None = None
    last_gtid: str | None = None
    server_id: int | None = None
    gtid_starts: dict[str, int] | None = None


def read_events(path: Path, *, index_gtids: bool = False) -> BinlogEvents:
    """Walk a binlog file's event headers: its end (the end of the last whole event), first and
    last event times and GTIDs; ``index_gtids`` also maps each GTID to its event's offset."""
    found = BinlogEvents(gtid_starts={} if index_gtids else None)
    with path.open("rb") as handle:
        if handle.read(4) != _MAGIC:
            raise BackupVerifyError(f"{path.name} is not a binary log (no magic number)")
        offset = 4
        while True:
            header = handle.read(_HEADER.size)
            if len(header) < _HEADER.size:
                break
            timestamp, kind, server_id, size, _next, _flags = _HEADER.unpack(header)
            if size < _HEADER.size:
                raise BackupVerifyError(f"{path.name}: a damaged event at {offset}")
            body = handle.read(size - _HEADER.size)
            if len(body) < size - _HEADER.size:
                break
            moment = datetime.fromtimestamp(timestamp, UTC)
            if found.first_event_at is None:
                found.first_event_at = moment
            found.last_event_at = moment
            if kind == _FORMAT_DESCRIPTION:
                found.server_id = server_id
            if kind == _MARIADB_GTID and len(body) >= 12:
                sequence, domain = struct.unpack_from("<QI", body)
                gtid = f"{domain}-{server_id}-{sequence}"
                found.first_gtid = found.first_gtid or gtid
                found.last_gtid = gtid
                if found.gtid_starts is not None:
                    found.gtid_starts[gtid] = offset
            offset += size
            found.end_position = offset
    return found


# archiving --------------------------------------------------------------------------------------

_COPY_PREFIXES: Final = ("autoops-binlog-", "autoops-pitr-")
_COPY_DIRECTORY_RE: Final = re.compile(r"autoops-(?:binlog|pitr)-(\d+)-[^/]+")


def private_directory(prefix: str) -> str:
    """A 0700 temporary directory for binlog copies (table data), named with this process's id so
    a later run removes what a killed one left (see :func:`remove_stale_copies`)."""
    assert prefix in _COPY_PREFIXES
    remove_stale_copies()
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")


def remove_stale_copies() -> list[str]:
    """Remove the binlog copy directories of this user's autoops processes that died (SIGKILL,
    power loss) before removing them; returns their paths."""
    return remove_dead_processes_directories(
        _COPY_DIRECTORY_RE, "left by a binlog archive or restore that died"
    )


def _binlog_tool() -> str:
    for name in ("mariadb-binlog", "mysqlbinlog"):
        path = shutil.which(name)
        if path:
            return path
    raise BackupError(
        "mariadb-binlog is not installed (needed to archive binary logs); install the Debian "
        "package mariadb-client"
    )


def _server_files(db: MySQLClient, where: str) -> list[tuple[str, int]]:
    row = db.query_one("SELECT @@log_bin AS log_bin")
    if row is None or not int(row["log_bin"] or 0):
        raise BackupError(
            f"the binary log is off on {where}: start the server with log_bin (--log-bin) to "
            "archive it for point-in-time recovery"
        )
    try:
        rows = db.query("SHOW BINARY LOGS")
    except Exception as exc:
        raise BackupError(
            f"SHOW BINARY LOGS failed on {where} ({exc}); the archiving account needs the "
            "REPLICATION CLIENT (BINLOG MONITOR) and REPLICATION SLAVE privileges"
        ) from exc
    return [(str(row["Log_name"]), int(row["File_size"])) for row in rows]


def _fetch(db: MySQLClient, server_file: str, directory: Path, where: str) -> Path:
    """Copy one binlog file from the server with mariadb-binlog, as it is now, into
    ``directory``."""
    tool = _binlog_tool()
    with option_file(db) as config, tempfile.TemporaryFile() as stderr:
        argv = [
            tool,
            f"--defaults-extra-file={config}",
            "--read-from-remote-server",
            "--raw",
            f"--result-file={directory}/",
            "--",
            server_file,
        ]
        code = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=stderr, check=False)
        stderr.seek(0)
        lines = stderr.read().decode("utf-8", "replace").strip().splitlines()
    message = "\n".join(lines[-10:])
    if code.returncode != 0:
        raise BackupError(
            f"{Path(tool).name} failed (exit {code.returncode}) copying {server_file} from "
            f"{where}: {message}",
            tool_message=message,
        )
    path = directory / server_file
    if not path.is_file():
        raise BackupError(f"{Path(tool).name} wrote no {server_file} copying from {where}")
    return path


def _store_file(backuper: Backuper, path: Path, data_file: str) -> tuple[int, str, int]:
    """Compress (and encrypt) ``path`` into ``data_file``, read it back; (size, sha256, raw)."""
    storage = backuper.storage
    compressor: Any = Compressor(backuper.compression, backuper.compression_level)
    if backuper.encryption is not None:
        compressor = backuper.encryption.encoder(compressor)
    upload = storage.create(data_file)
    raw = 0
    try:
        with (
            path.open("rb") as handle,
            Progress(f"archive {path.name}", unit="bytes", enabled=backuper.progress) as progress,
        ):
            while chunk := handle.read(1 << 20):
                raw += len(chunk)
                upload.write(compressor.feed(chunk))
                progress.advance(len(chunk))
        upload.write(compressor.finish())
        upload.commit()
    except BaseException:
        upload.abort()
        raise
    stored = storage.checksum(data_file)
    if stored != upload.sha256:
        storage.delete(data_file)
        raise BackupVerifyError(
            f"{data_file} in {storage.location} reads back with SHA-256 {stored}, but "
            f"{upload.sha256} was written; the storage is corrupting data"
        )
    return upload.size, upload.sha256, raw


def archive_binlogs(backuper: Backuper, db: MySQLClient) -> list[ArchivedBinlog]:
    """Copy the server's binary logs that are new or have grown since the last run into the
    backuper's storage; returns the archives written by this run."""
    storage = backuper.storage
    source = server_source(dump_source(db))
    storage.clean_partials()
    # What the server had written before this instant is in the files listed after it.
    run_started = utc_now()
    files = _server_files(db, source)
    names = set(storage.names())
    prefix = f"binlog-{_slug(source)}-"
    archived_files = [
        name[len(prefix) : -len(BINLOG_MANIFEST_SUFFIX)]
        for name in names
        if name.startswith(prefix) and name.endswith(BINLOG_MANIFEST_SUFFIX)
    ]
    # Only the manifests of files the server still has are read: one request each on S3.
    archived: dict[str, ArchivedBinlog] = {}
    for server_file, _size in files:
        name = manifest_name(source, server_file)
        if name in names:
            try:
                archived[server_file] = ArchivedBinlog.from_json(storage.read_bytes(name), name)
            except BackupError as exc:
                log.warning("copying %s again: %s", server_file, exc)
    numbers = [sequence_of(f) for f in archived_files if _SEQUENCE_RE.search(f)]
    if numbers and files:
        newest = max(numbers)
        oldest_on_server = sequence_of(files[0][0])
        if oldest_on_server > newest + 1:
            first, last = (
                numbered_file(files[0][0], n) for n in (newest + 1, oldest_on_server - 1)
            )
            log.warning(
                "%s of %s %s purged from the server before %s archived: point-in-time "
                "recovery cannot cross %s; take a full backup",
                first if first == last else f"{first} to {last}",
                source,
                "was" if first == last else "were",
                "it was" if first == last else "they were",
                "it" if first == last else "them",
            )
    written = []
    for index, (server_file, server_size) in enumerate(files):
        active = index == len(files) - 1
        previous = archived.get(server_file)
        if previous is not None:
            shrunk = previous.end_position > server_size
            if shrunk or (previous.complete and previous.end_position != server_size):
                raise BackupError(
                    f"{server_file} on {source} is {server_size} bytes, but its archived copy "
                    f"is {previous.end_position}: the server's binary log was reset "
                    "(RESET MASTER) or this is another server; archive it into a new storage"
                )
            if previous.complete:
                continue
            if not active and previous.end_position == server_size:
                closed = replace(previous, complete=True)
                storage.write_bytes(closed.manifest_file, closed.to_json())
                written.append(closed)
                continue
            if active and previous.end_position >= server_size:
                # Unchanged, but the archive now reaches this run: the recovery point moves.
                touched = replace(previous, archived_at=run_started)
                storage.write_bytes(touched.manifest_file, touched.to_json())
                continue
        written.append(_archive_one(backuper, db, source, server_file, complete=not active))
    for archive in written:
        log.info(
            "archived %s of %s (%d..%d%s) in %s",
            archive.server_file,
            source,
            archive.start_position,
            archive.end_position,
            "" if archive.complete else ", active",
            storage.location,
        )
    return written


def _archive_one(
    backuper: Backuper, db: MySQLClient, source: str, server_file: str, *, complete: bool
) -> ArchivedBinlog:
    storage = backuper.storage
    previous_name = manifest_name(source, server_file)
    directory = private_directory("autoops-binlog-")
    try:
        # Everything written to the file before this instant is in the copy taken after it.
        archived_at = utc_now()
        path = _fetch(db, server_file, Path(directory), source)
        events = read_events(path)
        size = path.stat().st_size
        if events.end_position != size:
            raise BackupError(
                f"the copy of {server_file} from {source} ends inside an event (at "
                f"{events.end_position} of {size} bytes); nothing was stored, run it again"
            )
        data_file = (
            f"binlog-{_slug(source)}-{server_file}-{events.end_position}.binlog"
            f"{suffix_for(backuper.compression)}"
            f"{ENCRYPTED_SUFFIX if backuper.encryption is not None else ''}"
        )
        stored_size, sha256, raw = _store_file(backuper, path, data_file)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    old = None
    if previous_name in storage.names():
        try:
            old = ArchivedBinlog.from_json(storage.read_bytes(previous_name), previous_name)
        except BackupError:
            old = None
    archive = ArchivedBinlog(
        source=source,
        server_file=server_file,
        start_position=4,
        end_position=events.end_position,
        complete=complete,
        archived_at=archived_at,
        data_file=data_file,
        size=stored_size,
        sha256=sha256,
        raw_size=raw,
        compression=backuper.compression,
        first_event_at=events.first_event_at,
        last_event_at=events.last_event_at,
        first_gtid=events.first_gtid,
        last_gtid=events.last_gtid,
        server_id=events.server_id,
    )
    try:
        storage.write_bytes(archive.manifest_file, archive.to_json())
    except BaseException:
        if old is None or old.data_file != data_file:
            storage.delete(data_file)
        raise
    # The manifest now names the new copy. The shorter copies of the same file are superseded:
    # the one it replaced, and any a killed run stored without reaching its manifest.
    prefix = f"binlog-{_slug(source)}-{server_file}-"
    for name in storage.names():
        end = name[len(prefix) :].split(".", 1)[0]
        if name.endswith(PARTIAL_SUFFIX) or not name.startswith(prefix):
            continue
        if end.isdigit() and int(end) < events.end_position:
            storage.delete(name)
    if old is not None and old.data_file != data_file:
        storage.delete(old.data_file)
    return archive


# reading back -----------------------------------------------------------------------------------


def check_stored(backuper: Backuper, archive: ArchivedBinlog) -> None:
    """The archived copy is there with its manifest's size and SHA-256 (and authenticates)."""
    storage = backuper.storage
    where = f"{archive.data_file} in {storage.location}"
    if archive.data_file not in storage.names():
        raise BackupVerifyError(f"{where} is missing (the copy of {archive.server_file})")
    size = storage.size(archive.data_file)
    if size != archive.size:
        raise BackupVerifyError(f"{where} is {size} bytes; its manifest says {archive.size}")
    digest = storage.checksum(archive.data_file)
    if digest != archive.sha256:
        raise BackupVerifyError(f"{where} has SHA-256 {digest}; its manifest says {archive.sha256}")
    if archive.encrypted:
        encryption = _encryption(backuper, archive)
        encryption.authenticate(storage.open(archive.data_file), archive.data_file)


def _encryption(backuper: Backuper, archive: ArchivedBinlog) -> Any:
    if backuper.encryption is None:
        raise EncryptionKeyError(
            f"the archived {archive.server_file} is encrypted; pass "
            "encryption=Encryption.from_keyfile(...) (--encryption-key) to read it"
        )
    return backuper.encryption


def chunks_of(backuper: Backuper, archive: ArchivedBinlog) -> Iterator[bytes]:
    """The archived binlog file's bytes, decrypted and decompressed."""
    handle = backuper.storage.open(archive.data_file)
    if archive.encrypted:
        handle = _encryption(backuper, archive).open(handle, archive.data_file)
    try:
        yield from decompressed_chunks(handle, archive.compression, archive.data_file)
    finally:
        handle.close()


def verify_archive(backuper: Backuper, archive: ArchivedBinlog) -> None:
    """Check an archived copy whole: size, SHA-256 (and authenticity), that it decompresses,
    and that its events end exactly at the manifest's end position."""
    check_stored(backuper, archive)
    directory = private_directory("autoops-pitr-")
    try:
        path = Path(directory) / archive.server_file
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks_of(backuper, archive):
                handle.write(chunk)
        events = read_events(path)
        size = path.stat().st_size
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if (events.end_position, size) != (archive.end_position, archive.end_position):
        raise BackupVerifyError(
            f"the archived {archive.server_file} of {archive.source} holds {size} bytes of "
            f"events ending at {events.end_position}; its manifest says {archive.end_position}"
        )


# retention --------------------------------------------------------------------------------------


def needed_from(backups: Sequence[Backup]) -> dict[str, int]:
    """Per server source, the number of the oldest binlog file a kept full backup starts from."""
    oldest: dict[str, int] = {}
    unknown = set()
    for backup in backups:
        if backup.kind != "mysql":
            continue
        server = server_source(backup.source)
        if "binlog_file" not in backup.position:
            if "sealed" in backup.options:
                # Its position is encrypted and no key was given: it may need any binlog.
                unknown.add(server)
            continue
        number = sequence_of(backup.position["binlog_file"])
        oldest[server] = min(number, oldest.get(server, number))
    return {server: number for server, number in oldest.items() if server not in unknown}


def unneeded(archives: Sequence[ArchivedBinlog], kept: Sequence[Backup]) -> list[ArchivedBinlog]:
    """Archived binlogs older than the file the oldest kept full backup of their server starts
    from. A server none of whose kept backups records a position keeps all of its binlogs (there
    is nothing to measure "needed" against)."""
    oldest = needed_from(kept)
    return [a for a in archives if a.source in oldest and a.sequence < oldest[a.source]]
