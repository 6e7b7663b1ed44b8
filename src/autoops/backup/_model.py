"""The manifest: what a backup is, as a typed value and as the JSON stored beside its data."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from .._display import Numeric, ResultList, format_bytes, html_table
from ._errors import BackupError

__all__ = ["MANIFEST_SUFFIX", "Backup", "TableStats", "backup_list"]

MANIFEST_SUFFIX: Final = ".manifest.json"
MANIFEST_VERSION: Final = 1


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
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise BackupError(f"manifest {where}: {name} has no time zone")
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Backup:
    """One stored backup, as its manifest describes it.

    ``source`` is a secret-free label of what was backed up (the retention grouping key);
    ``status`` is ``"ok"`` for a complete backup and ``"corrupt"`` once verify found a mismatch;
    ``size`` and ``sha256`` describe the stored (compressed) file ``data_file``.
    """

    id: str
    kind: str
    source: str
    started_at: datetime
    finished_at: datetime
    status: str
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

    @property
    def manifest_file(self) -> str:
        """The manifest's name in the storage."""
        return self.id + MANIFEST_SUFFIX

    @property
    def duration(self) -> float:
        """Seconds from start to finish."""
        return (self.finished_at - self.started_at).total_seconds()

    def with_status(self, status: str, verified_at: datetime | None) -> Backup:
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
        return json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Backup:
        """Read a manifest; a malformed one raises :class:`BackupError` naming ``where``."""
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise BackupError(f"manifest {where} is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise BackupError(f"manifest {where} is not a JSON object")
        version = document.get("manifest_version")
        if version != MANIFEST_VERSION:
            raise BackupError(
                f"manifest {where} has version {version!r}; this autoops reads version "
                f"{MANIFEST_VERSION}: upgrade autoops"
            )
        try:
            verified = document.get("verified_at")
            return cls(
                id=str(document["id"]),
                kind=str(document["kind"]),
                source=str(document["source"]),
                started_at=_parse_time(document["started_at"], "started_at", where),
                finished_at=_parse_time(document["finished_at"], "finished_at", where),
                status=str(document["status"]),
                size=int(document["size"]),
                sha256=str(document["sha256"]),
                data_file=str(document["data_file"]),
                format=str(document["format"]),
                compression=str(document["compression"]),
                raw_size=int(document["raw_size"]),
                verified_at=_parse_time(verified, "verified_at", where) if verified else None,
                tool=str(document.get("tool", "")),
                server_version=str(document.get("server_version", "")),
                options=dict(document.get("options") or {}),
                tables={
                    str(name): TableStats(int(stats["rows"]), stats.get("checksum"))
                    for name, stats in (document.get("tables") or {}).items()
                },
                position={str(k): str(v) for k, v in (document.get("position") or {}).items()},
                key_count=document.get("key_count"),
                warnings=tuple(str(text) for text in document.get("warnings") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupError(f"manifest {where} is incomplete or malformed: {exc!r}") from None

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
            ("duration", Numeric(f"{self.duration:.1f} s")),
            ("size", Numeric(format_bytes(self.size))),
            ("sha256", self.sha256),
            (
                "verified",
                self.verified_at.isoformat(timespec="seconds") if self.verified_at else "never",
            ),
        ]
        if self.key_count is not None:
            rows.append(("keys", self.key_count))
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


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)
