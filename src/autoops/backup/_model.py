"""The manifest: what a backup is, as a typed value and as the JSON stored beside its data."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar, cast, get_args

from .._deprecation import renamed
from .._display import Numeric, ResultList, format_bytes, html_table
from ._errors import BackupError

__all__ = [
    "MANIFEST_SUFFIX",
    "Backup",
    "BackupKind",
    "BackupStatus",
    "DataFile",
    "Definer",
    "TableStats",
    "backup_list",
]

BackupKind = Literal["mysql", "redis", "sqlite"]
BackupStatus = Literal["ok", "corrupt"]
# Who owns restored views, triggers and routines: their original DEFINER, or the restoring account.
Definer = Literal["keep", "strip"]

MANIFEST_SUFFIX: Final = ".manifest.json"
# Version 1: one data file (data_file, size, sha256). Version 2, written only for a backup of
# several data files, adds "files"; a single-file backup is still written as version 1, so an
# older autoops keeps reading it.
MANIFEST_VERSION: Final = 1
FILES_MANIFEST_VERSION: Final = 2
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TableStats:
    """A table's row count and ``CHECKSUM TABLE`` value (None for a view or when not taken)."""

    rows: int
    checksum: int | None = None


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _parse_time(value: Any, name: str, where: str) -> datetime:
    if not isinstance(value, str):
        raise BackupError(f"manifest {where}: {name} is missing or not a timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BackupError(f"manifest {where}: {name} {value!r} is not a timestamp") from None
    if parsed.tzinfo is None:
        raise BackupError(f"manifest {where}: {name} has no time zone")
    return parsed.astimezone(UTC)


_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_MISSING: Final = object()


class _Fields:
    """Typed reads of a manifest's fields; a missing or mistyped one raises :class:`BackupError`
    naming the manifest and the field."""

    def __init__(self, document: dict[str, Any], where: str) -> None:
        self.document = document
        self.where = where

    def expect(self, value: Any, kind: type[T], name: str) -> T:
        # bool is an int to Python, never a count or a text in a manifest.
        if not isinstance(value, kind) or isinstance(value, bool):
            shown = "missing" if value is _MISSING else f"a {type(value).__name__}"
            raise BackupError(
                f"manifest {self.where}: {name} should be a {kind.__name__}, is {shown}; the "
                "file is damaged or was not written by autoops"
            )
        return value

    def text(self, name: str, default: Any = _MISSING) -> str:
        return self.expect(self.document.get(name, default), str, name)

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.text(name)
        if value not in choices:
            raise BackupError(
                f"manifest {self.where}: {name} is {value!r}, not one of {', '.join(choices)}; "
                "the file is damaged or was written by a newer autoops"
            )
        return value

    def count(self, name: str) -> int:
        value = self.expect(self.document.get(name, _MISSING), int, name)
        if value < 0:
            raise BackupError(f"manifest {self.where}: {name} is negative ({value})")
        return value

    def mapping(self, name: str) -> dict[str, Any]:
        return self.expect(self.document.get(name, {}), dict, name)

    def own_file(self, name: str, backup_id: str, field_name: str) -> str:
        # Prune and delete remove the data files: each must be this backup's own file.
        if not name.startswith(backup_id + ".") or "/" in name or "\\" in name:
            raise BackupError(
                f"manifest {self.where}: {field_name} {name!r} is not a file of backup "
                f"{backup_id!r}"
            )
        return name

    def files(self, backup_id: str) -> tuple[DataFile, ...]:
        entries = self.expect(self.document.get("files", _MISSING), list, "files")
        if not entries:
            raise BackupError(f"manifest {self.where}: files is empty")
        files = []
        for number, item in enumerate(entries):
            at = f"files[{number}]"
            entry = _Fields(self.expect(item, dict, at), f"{self.where} {at}")
            slots = []
            for value in entry.expect(entry.document.get("slots", []), list, "slots"):
                pair = entry.expect(value, list, "slots[]")
                if len(pair) != 2:
                    raise BackupError(f"manifest {self.where}: {at}.slots[] is not a pair")
                slots.append((entry.expect(pair[0], int, "slots[][0]"),
                              entry.expect(pair[1], int, "slots[][1]")))  # fmt: skip
            sha256 = entry.text("sha256")
            if not _SHA256.fullmatch(sha256):
                raise BackupError(f"manifest {self.where}: {at}.sha256 is not 64 hex digits")
            key_count = entry.document.get("key_count")
            files.append(
                DataFile(
                    name=self.own_file(entry.text("name"), backup_id, f"{at}.name"),
                    size=entry.count("size"),
                    sha256=sha256,
                    raw_size=entry.count("raw_size"),
                    node=entry.text("node", ""),
                    slots=tuple(slots),
                    key_count=entry.count("key_count") if key_count is not None else None,
                )
            )
        if len({f.name for f in files}) != len(files):
            raise BackupError(f"manifest {self.where}: files names one file twice")
        return tuple(files)

    def tables(self) -> dict[str, TableStats]:
        tables = {}
        for table, stats in self.mapping("tables").items():
            entry = self.expect(stats, dict, f"tables.{table}")
            rows = self.expect(entry.get("rows", _MISSING), int, f"tables.{table}.rows")
            checksum = entry.get("checksum")
            if checksum is not None:
                checksum = self.expect(checksum, int, f"tables.{table}.checksum")
            tables[table] = TableStats(rows, checksum)
        return tables


@dataclass(frozen=True, slots=True)
class DataFile:
    """One stored data file of a backup: its name, size and SHA-256 as stored, its size before
    compression, and for a Redis Cluster master's file the master's ``node`` (host:port), the
    slot ranges it served and its key count."""

    name: str
    size: int
    sha256: str
    raw_size: int
    node: str = ""
    slots: tuple[tuple[int, int], ...] = ()
    key_count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The file's entry in the manifest's ``files``."""
        entry: dict[str, Any] = {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "raw_size": self.raw_size,
        }
        if self.node:
            entry["node"] = self.node
            entry["slots"] = [list(slot_range) for slot_range in self.slots]
        if self.key_count is not None:
            entry["key_count"] = self.key_count
        return entry

    def public(self) -> DataFile:
        """The entry without the master it holds (what an encrypted backup's manifest shows
        outside its sealed fields)."""
        return DataFile(self.name, self.size, self.sha256, self.raw_size)


def files_digest(files: Iterable[DataFile]) -> str:
    """The SHA-256 of a backup of several files: over each file's name, size and SHA-256, so
    the manifest's ``sha256`` still names exactly the bytes stored."""
    listing = "".join(f"{f.name}\t{f.size}\t{f.sha256}\n" for f in files)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Backup:
    """One stored backup, as its manifest describes it.

    ``source`` is a secret-free label of what was backed up (the retention grouping key);
    ``status`` is ``"ok"`` for a complete backup and ``"corrupt"`` once verify found a mismatch;
    ``size`` and ``sha256`` describe the stored (compressed) file ``data_file``.

    A backup of several data files (a Redis Cluster's, one per master) lists them in ``files``;
    then ``data_file`` is empty, ``size`` and ``raw_size`` are the files' totals and ``sha256``
    is :func:`files_digest` of them. :attr:`data_files` is every backup's files either way.
    """

    id: str
    kind: BackupKind
    source: str
    started_at: datetime
    finished_at: datetime
    status: BackupStatus
    size: int
    sha256: str
    data_file: str
    format: str
    compression: str
    raw_size: int
    verified_at: datetime | None = None
    tool: str = ""
    server_version: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    tables: Mapping[str, TableStats] = field(default_factory=dict)
    position: Mapping[str, str] = field(default_factory=dict)
    key_count: int | None = None
    warnings: tuple[str, ...] = ()
    files: tuple[DataFile, ...] = ()

    @property
    def data_files(self) -> tuple[DataFile, ...]:
        """The stored data files: ``files``, or the one ``data_file`` of a single-file backup."""
        if self.files:
            return self.files
        return (DataFile(self.data_file, self.size, self.sha256, self.raw_size),)

    @property
    def manifest_file(self) -> str:
        """The manifest's name in the storage."""
        return self.id + MANIFEST_SUFFIX

    @property
    def ok(self) -> bool:
        """True for a complete backup (status ``"ok"``), False once verify found it corrupt."""
        return self.status == "ok"

    @property
    def duration_seconds(self) -> float:
        """Seconds from start to finish."""
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def duration(self) -> float:
        """Deprecated: :attr:`duration_seconds`."""
        renamed("Backup.duration", "Backup.duration_seconds")
        return self.duration_seconds

    def with_status(self, status: BackupStatus, verified_at: datetime | None) -> Backup:
        """A copy with a new status and verification time."""
        return replace(self, status=status, verified_at=verified_at)

    def to_json(self) -> bytes:
        """The manifest as stored: UTF-8 JSON, keys sorted."""
        document: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "id": self.id,
            "kind": self.kind,
            "source": self.source,
            "started_at": _time(self.started_at),
            "finished_at": _time(self.finished_at),
            "status": self.status,
            "size": self.size,
            "sha256": self.sha256,
            "data_file": self.data_file,
            "format": self.format,
            "compression": self.compression,
            "raw_size": self.raw_size,
            "verified_at": _time(self.verified_at) if self.verified_at else None,
            "tool": self.tool,
            "server_version": self.server_version,
            "options": dict(self.options),
            "tables": {
                name: {"rows": stats.rows, "checksum": stats.checksum}
                for name, stats in self.tables.items()
            },
            "position": dict(self.position),
            "key_count": self.key_count,
            "warnings": list(self.warnings),
        }
        if self.files:
            document["manifest_version"] = FILES_MANIFEST_VERSION
            document["files"] = [data_file.to_dict() for data_file in self.files]
        return json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Backup:
        """Read a manifest, checking every field's type; a malformed one raises
        :class:`BackupError` naming ``where``."""
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise BackupError(f"manifest {where} is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise BackupError(f"manifest {where} is not a JSON object")
        version = document.get("manifest_version")
        if version not in (MANIFEST_VERSION, FILES_MANIFEST_VERSION):
            raise BackupError(
                f"manifest {where} has version {version!r}; this autoops reads versions "
                f"{MANIFEST_VERSION} and {FILES_MANIFEST_VERSION}: upgrade autoops"
            )
        fields = _Fields(document, where)
        backup_id = fields.text("id")
        sha256 = fields.text("sha256")
        if not _SHA256.fullmatch(sha256):
            raise BackupError(f"manifest {where}: sha256 is not 64 hex digits")
        files: tuple[DataFile, ...] = ()
        if version == FILES_MANIFEST_VERSION:
            files = fields.files(backup_id)
            data_file = fields.text("data_file", "")
            if data_file:
                raise BackupError(f"manifest {where}: a backup with files has no data_file")
            if fields.count("size") != sum(f.size for f in files) or sha256 != files_digest(files):
                raise BackupError(
                    f"manifest {where}: its size and sha256 do not match its files; the file "
                    "is damaged or was not written by autoops"
                )
        else:
            data_file = fields.own_file(fields.text("data_file"), backup_id, "data_file")
        verified = document.get("verified_at")
        return cls(
            id=backup_id,
            kind=cast(BackupKind, fields.choice("kind", get_args(BackupKind))),
            source=fields.text("source"),
            started_at=_parse_time(document.get("started_at"), "started_at", where),
            finished_at=_parse_time(document.get("finished_at"), "finished_at", where),
            status=cast(BackupStatus, fields.choice("status", get_args(BackupStatus))),
            size=fields.count("size"),
            sha256=sha256,
            data_file=data_file,
            format=fields.text("format"),
            compression=fields.text("compression"),
            raw_size=fields.count("raw_size"),
            verified_at=_parse_time(verified, "verified_at", where) if verified else None,
            tool=fields.text("tool", ""),
            server_version=fields.text("server_version", ""),
            options=fields.mapping("options"),
            tables=fields.tables(),
            position={
                k: fields.expect(v, str, f"position.{k}")
                for k, v in fields.mapping("position").items()
            },
            key_count=fields.count("key_count") if document.get("key_count") is not None else None,
            warnings=tuple(
                fields.expect(text, str, "warnings[]")
                for text in fields.expect(document.get("warnings", []), list, "warnings")
            ),
            files=files,
        )

    def __repr__(self) -> str:
        verified = self.verified_at.isoformat(timespec="seconds") if self.verified_at else "never"
        return (
            f"Backup(id={self.id!r}, kind={self.kind!r}, source={self.source!r}, "
            f"status={self.status!r}, size={format_bytes(self.size)}, verified={verified})"
        )

    def _repr_html_(self) -> str:
        rows: list[tuple[str, object]] = [
            ("id", self.id),
            ("kind", self.kind),
            ("source", self.source),
            ("status", self.status),
            ("started", self.started_at.isoformat(timespec="seconds")),
            ("duration", Numeric(f"{self.duration_seconds:.1f} s")),
            ("size", Numeric(format_bytes(self.size))),
            ("sha256", self.sha256),
            (
                "verified",
                self.verified_at.isoformat(timespec="seconds") if self.verified_at else "never",
            ),
        ]
        if self.key_count is not None:
            rows.append(("keys", self.key_count))
        for data_file in self.files:
            holds = f" ({data_file.node}, {data_file.key_count} keys)" if data_file.node else ""
            rows.append(("file", f"{data_file.name}{holds}: {format_bytes(data_file.size)}"))
        return html_table(
            f"Backup {self.id}",
            rows,
            columns=["table", "rows", "checksum"] if self.tables else None,
            body=[[name, s.rows, s.checksum] for name, s in self.tables.items()],
        )


def backup_list(backups: Iterable[Backup]) -> ResultList[Backup]:
    """``backups`` as a list that shows as one table (id, kind, source, status, size, ...)."""
    return ResultList(
        backups,
        title="backups",
        columns=["id", "kind", "source", "status", "started", "size", "verified"],
        row=lambda backup: (
            backup.id,
            backup.kind,
            backup.source,
            backup.status,
            backup.started_at.isoformat(timespec="seconds"),
            Numeric(format_bytes(backup.size)),
            backup.verified_at.isoformat(timespec="seconds") if backup.verified_at else "never",
        ),
    )
