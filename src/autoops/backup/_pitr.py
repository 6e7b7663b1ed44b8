"""Point-in-time recovery: a full MySQL/MariaDB backup, then the archived binary logs replayed
from its position up to a moment, a binlog position or a GTID.

Everything that can refuse does so before the target is touched: the chain of archived binlogs
from the backup's position to ``until`` is checked (a missing file, a copy that ends before the
backup's position or before ``until`` is named), every copy's size and SHA-256 is checked and
it is decompressed into a private temporary directory. Only then is the dump restored and the
binlogs replayed with ``mariadb-binlog ... | mariadb`` (credentials in an option file).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from .._errors import ConfigError
from ..db import MySQLClient
from ._binlogs import (
    ArchivedBinlog,
    check_stored,
    chunks_of,
    list_binlogs,
    numbered_file,
    private_directory,
    read_events,
    sequence_of,
    server_source,
)
from ._errors import BackupError
from ._mysql import _server_facts, dump_source, find_tools, option_file

if TYPE_CHECKING:
    from ._backuper import Backuper
    from ._model import Backup

__all__ = ["BinlogGapError", "BinlogPosition", "Until", "parse_until"]


class BinlogGapError(BackupError):
    """The archived binary logs do not reach from the backup's position to ``until``: a file is
    missing, or a copy ends too early. Nothing was written to the target."""


@dataclass(frozen=True, slots=True)
class BinlogPosition:
    """A place in a server's binary log: ``file`` (``binlog.000042``) and byte ``position``.
    As ``until``, replay stops before the event that starts there (as ``--stop-position``)."""

    file: str
    position: int

    def __str__(self) -> str:
        return f"{self.file}:{self.position}"


@dataclass(frozen=True, slots=True)
class _Gtid:
    domain: int
    server_id: int
    sequence: int

    def __str__(self) -> str:
        return f"{self.domain}-{self.server_id}-{self.sequence}"


Until = datetime | BinlogPosition | str
_POSITION_RE: Final = re.compile(r"(?P<file>[^:]+\.\d+):(?P<position>\d+)")
_GTID_RE: Final = re.compile(r"(\d+)-(\d+)-(\d+)")
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_until(value: Until) -> datetime | BinlogPosition | _Gtid:
    """``until`` as a moment (aware, UTC), a binlog position or a GTID. A string is
    ``'2026-11-30 10:15:00'`` (naive: this machine's local time zone, as mariadb-binlog reads
    it; or with an offset), ``binlog.000042:1234`` or a MariaDB GTID ``0-1-77``."""
    if isinstance(value, BinlogPosition):
        return value
    if isinstance(value, str):
        text = value.strip()
        if match := _POSITION_RE.fullmatch(text):
            return BinlogPosition(match.group("file"), int(match.group("position")))
        # 2026-11-30 is a day, not the GTID domain 2026, server 11, sequence 30.
        if (match := _GTID_RE.fullmatch(text)) and not _DATE_RE.fullmatch(text):
            return _Gtid(*(int(part) for part in match.groups()))
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError(
                f"until {value!r} is not a time ('2026-11-30 10:15:00', optionally with an offset "
                "like +02:00), a binlog position (binlog.000042:1234) or a GTID (0-1-77)"
            ) from None
    if not isinstance(value, datetime):
        raise ConfigError(f"until must be a datetime, a BinlogPosition or a string, not {value!r}")
    if value.microsecond:
        raise ConfigError(
            f"until {value.isoformat()} has a fraction of a second; binary log events carry whole "
            "seconds, so give a whole second"
        )
    # A naive datetime is local time, as mariadb-binlog would read it on this machine.
    return value.astimezone().astimezone(UTC) if value.tzinfo is None else value.astimezone(UTC)


def _before(backup: Backup, until: datetime | BinlogPosition | _Gtid) -> bool:
    """Whether ``backup`` is a starting point for recovery to ``until``."""
    position = backup.position
    if isinstance(until, datetime):
        # The dump's snapshot lies before it finished, so nothing after ``until`` is in it.
        return backup.finished_at <= until
    if isinstance(until, BinlogPosition):
        return (sequence_of(position["binlog_file"]), int(position["binlog_position"])) <= (
            sequence_of(until.file),
            until.position,
        )
    for part in position.get("gtid", "").split(","):
        if match := _GTID_RE.fullmatch(part.strip()):
            domain, _server, sequence = (int(x) for x in match.groups())
            if domain == until.domain:
                return sequence < until.sequence
    return False


def backup_before(backups: Sequence[Backup], until: Until) -> Backup:
    """The newest complete MySQL backup with a binlog position from which ``until`` can be
    reached; raises :class:`BackupError` when there is none."""
    moment = parse_until(until)
    usable = [
        backup
        for backup in backups
        if backup.kind == "mysql" and backup.status == "ok" and "binlog_file" in backup.position
    ]
    candidates = [backup for backup in usable if _before(backup, moment)]
    if not candidates:
        raise BackupError(
            f"no complete MySQL backup with a binlog position was taken before {_shown(moment)} "
            f"({len(usable)} with a position in the catalogue); choose a later --until"
        )
    return max(candidates, key=lambda backup: (backup.finished_at, backup.id))


def _shown(until: datetime | BinlogPosition | _Gtid) -> str:
    return until.isoformat() if isinstance(until, datetime) else str(until)


def _coverage(archive: ArchivedBinlog) -> datetime | None:
    """Until when the archive holds every commit of its server in this file and before: the
    copy time for the active file, the closing rotate event's time for a closed one."""
    return archive.last_event_at if archive.complete else archive.archived_at


@dataclass
class Replay:
    """A checked chain of binlog copies in a private directory, ready to replay."""

    backup: Backup
    until: datetime | BinlogPosition
    files: list[Path]
    start: int
    directory: str

    def apply(self, client: MySQLClient, source_database: str) -> None:
        """Replay the chain into the client's database with mariadb-binlog | mariadb."""
        tool = shutil.which("mariadb-binlog") or shutil.which("mysqlbinlog")
        if tool is None:
            raise BackupError(
                "mariadb-binlog is not installed; install the Debian package mariadb-client"
            )
        target = client.url.database
        # --database names the database as the binlog does, before any --rewrite-db.
        args = [tool, f"--start-position={self.start}", f"--database={source_database}"]
        if source_database != target:
            args.insert(2, f"--rewrite-db={source_database}->{target}")
        if isinstance(self.until, datetime):
            # Read in the child's time zone, which is made UTC to match.
            args.append(f"--stop-datetime={self.until.strftime('%Y-%m-%d %H:%M:%S')}")
        else:
            args.append(f"--stop-position={self.until.position}")
        args += ["--", *map(str, self.files)]
        tools = find_tools(str(_server_facts(client)["version"]))
        where = f"{target} on {dump_source(client)}"
        with (
            option_file(client) as config,
            tempfile.TemporaryFile() as reader_errors,
            tempfile.TemporaryFile() as client_errors,
        ):
            reader = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=reader_errors,
                env={**os.environ, "TZ": "UTC"},
            )
            assert reader.stdout is not None
            try:
                applier = subprocess.run(
                    [
                        tools.client,
                        f"--defaults-extra-file={config}",
                        "--binary-mode",
                        "--batch",
                        "--",
                        target,
                    ],
                    stdin=reader.stdout,
                    stdout=subprocess.DEVNULL,
                    stderr=client_errors,
                    check=False,
                )
            finally:
                reader.stdout.close()
                read_code = reader.wait()
            reader_errors.seek(0)
            client_errors.seek(0)
            reader_message = _last_lines(reader_errors.read())
            client_message = _last_lines(client_errors.read())
        if read_code != 0 or applier.returncode != 0:
            message = client_message or reader_message
            raise BackupError(
                f"replaying the binary logs of backup {self.backup.id} into {where} failed "
                f"({Path(tool).name} exit {read_code}, {Path(tools.client).name} exit "
                f"{applier.returncode}): {message}; the full backup is restored and the replay "
                "stopped part way: restore again with replace=True once the cause is fixed",
                tool_message=message,
            )

    def close(self) -> None:
        """Remove the private copies."""
        shutil.rmtree(self.directory, ignore_errors=True)


def _last_lines(data: bytes) -> str:
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return "\n".join(lines[-10:])


def prepare_replay(backuper: Backuper, backup: Backup, until: Until) -> Replay:
    """Check the chain from ``backup``'s position to ``until`` and copy it into a private
    directory; raises :class:`BinlogGapError` naming what is missing before anything is
    written anywhere."""
    moment = parse_until(until)
    position = backup.position
    if "binlog_file" not in position or "binlog_position" not in position:
        raise BackupError(
            f"backup {backup.id} records no binlog position (the server's binary log was off "
            "when it was taken), so no binary log can be replayed after it"
        )
    if not _before(backup, moment):
        raise BackupError(
            f"backup {backup.id} (finished {backup.finished_at.isoformat(timespec='seconds')}, "
            f"at {position['binlog_file']}:{position['binlog_position']}) is not before "
            f"until {_shown(moment)}; use an older backup, or let autoops pick the newest one "
            "before it"
        )
    source = server_source(backup.source)
    archives = {a.sequence: a for a in list_binlogs(backuper.storage, source)}
    first = sequence_of(position["binlog_file"])
    start = int(position["binlog_position"])
    template = position["binlog_file"]
    chain = _chain(archives, first, start, template, moment, source)
    for archive in chain:
        check_stored(backuper, archive)
    directory = private_directory("autoops-pitr-")
    try:
        files = []
        for archive in chain:
            path = Path(directory) / archive.server_file
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks_of(backuper, archive):
                    handle.write(chunk)
            files.append(path)
        stop: datetime | BinlogPosition
        if isinstance(moment, _Gtid):
            stop = _gtid_stop(files, moment, start)
            files = files[: [p.name for p in files].index(stop.file) + 1]
        else:
            stop = moment
        return Replay(backup, stop, files, start, directory)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _gap(name: str, source: str, why: str) -> BinlogGapError:
    return BinlogGapError(
        f"the binlog chain of {source} has a gap: {name} {why}; nothing was restored"
    )


def _chain(
    archives: dict[int, ArchivedBinlog],
    first: int,
    start: int,
    template: str,
    until: datetime | BinlogPosition | _Gtid,
    source: str,
) -> list[ArchivedBinlog]:
    """The archived files from the backup's one to the one holding ``until``, checked whole."""
    chain: list[ArchivedBinlog] = []
    sequence = first
    newest = max(archives, default=0)
    while True:
        name = numbered_file(template, sequence)
        archive = archives.get(sequence)
        if archive is None:
            if sequence <= newest:
                raise _gap(name, source, "is missing from the archive")
            if chain and isinstance(until, datetime):
                raise _gap(
                    name,
                    source,
                    f"is not archived yet, and {chain[-1].server_file} reaches only "
                    f"{_shown(_coverage(chain[-1]) or chain[-1].archived_at)}, before until "
                    f"{_shown(until)}: run autoops-backup binlogs, then restore again",
                )
            raise _gap(name, source, "is not archived: run autoops-backup binlogs first")
        if sequence == first and archive.end_position < start:
            raise _gap(
                name,
                source,
                f"is archived only up to position {archive.end_position}, before the backup's "
                f"position {start}: run autoops-backup binlogs, then restore again",
            )
        chain.append(archive)
        if isinstance(until, BinlogPosition) and sequence == sequence_of(until.file):
            if archive.end_position < until.position:
                raise _gap(
                    name,
                    source,
                    f"is archived only up to position {archive.end_position}, before until "
                    f"{until}: run autoops-backup binlogs, then restore again",
                )
            return chain
        if isinstance(until, _Gtid) and _holds(archive, until):
            return chain
        if isinstance(until, datetime):
            covered = _coverage(archive)
            if covered is not None and covered >= until:
                return chain
        if not archive.complete:
            reach = _shown(_coverage(archive) or archive.archived_at)
            raise BinlogGapError(
                f"the binlog archive of {source} reaches only {name} as copied at {reach}, "
                f"before until {_shown(until)}: run autoops-backup binlogs, then restore again; "
                "nothing was restored"
            )
        sequence += 1


def _holds(archive: ArchivedBinlog, gtid: _Gtid) -> bool:
    """Whether the GTID lies within the archive's first..last GTID of its domain."""
    bounds = []
    for text in (archive.first_gtid, archive.last_gtid):
        match = _GTID_RE.fullmatch(text or "")
        if match is None:
            return False
        bounds.append(tuple(int(x) for x in match.groups()))
    low, high = bounds
    return low[0] == gtid.domain == high[0] and low[2] <= gtid.sequence <= high[2]


def _gtid_stop(files: list[Path], gtid: _Gtid, start: int) -> BinlogPosition:
    """The position just after the transaction with ``gtid`` (replay includes it)."""
    wanted = str(gtid)
    for path in files:
        events = read_events(path, index_gtids=True)
        starts = events.gtid_starts or {}
        if wanted in starts:
            later = sorted(offset for offset in starts.values() if offset > starts[wanted])
            return BinlogPosition(path.name, later[0] if later else events.end_position)
    raise BinlogGapError(
        f"GTID {wanted} is not in the archived binary logs after position {start} of "
        f"{files[0].name if files else 'the backup'}; nothing was restored"
    )
