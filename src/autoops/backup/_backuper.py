"""Backuper: take, list, verify, restore and prune backups in one storage."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Final

from .._display import format_bytes, format_seconds
from .._progress import Progress
from ._compress import Compressor, suffix_for
from ._errors import BackupError, BackupVerifyError
from ._model import MANIFEST_SUFFIX, Backup, utc_now
from ._storage import Storage

__all__ = ["Backuper"]

log: Final = logging.getLogger("autoops.backup")


def _slug(source: str) -> str:
    without_scheme = source.split("://", 1)[-1]
    return re.sub(r"[^A-Za-z0-9]+", "-", without_scheme).strip("-")[:60] or "source"


def new_backup_id(kind: str, source: str, started_at: datetime) -> str:
    """``<kind>-<source slug>-<UTC time>-<random>``: sortable by time, unique, file-name safe."""
    stamp = started_at.strftime("%Y%m%dT%H%M%S%fZ")
    return f"{kind}-{_slug(source)}-{stamp}-{secrets.token_hex(2)}"


class Backuper:
    """Backups of MySQL/MariaDB, Redis and SQLite kept in one :class:`Storage`.

    ``compression`` is ``"zstd"`` (default) or ``"gzip"``; ``progress`` shows bytes and rate on a
    terminal (None: only when stderr is a terminal). A backup exists only once its manifest is
    written, after its data is stored and read back with a matching SHA-256.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        compression: str = "zstd",
        compression_level: int | None = None,
        progress: bool | None = None,
    ) -> None:
        Compressor(compression, compression_level)  # validates the choice early
        self.storage = storage
        self.compression = compression
        self.compression_level = compression_level
        self.progress = progress

    # catalogue ------------------------------------------------------------------------------

    def list(self, source: str | None = None) -> list[Backup]:
        """Every backup in the storage (oldest first), or those of one ``source``. Reads only
        manifests; an unreadable manifest is logged and skipped."""
        backups = []
        for name in self.storage.names():
            if not name.endswith(MANIFEST_SUFFIX):
                continue
            try:
                backup = Backup.from_json(self.storage.read_bytes(name), name)
            except BackupError as exc:
                log.warning("skipping %s in %s: %s", name, self.storage.location, exc)
                continue
            if source is None or backup.source == source:
                backups.append(backup)
        backups.sort(key=lambda backup: (backup.started_at, backup.id))
        return backups

    def get(self, backup_id: str) -> Backup:
        """The backup with this id (or a unique id prefix)."""
        name = backup_id + MANIFEST_SUFFIX
        names = self.storage.names()
        if name not in names:
            matches = [n for n in names if n.startswith(backup_id) and n.endswith(MANIFEST_SUFFIX)]
            if len(matches) != 1:
                what = "matches several backups" if matches else "is not"
                raise BackupError(
                    f"backup {backup_id!r} {what} in {self.storage.location}; "
                    "see autoops-backups list"
                )
            name = matches[0]
        return Backup.from_json(self.storage.read_bytes(name), name)

    # storing --------------------------------------------------------------------------------

    def _progress(self, label: str) -> Progress:
        return Progress(label, unit="bytes", enabled=self.progress)

    def _store(
        self,
        *,
        kind: str,
        source: str,
        data_format: str,
        chunks: Callable[[], Iterator[bytes]],
        describe: Callable[[], dict[str, Any]],
        label: str,
    ) -> Backup:
        """Stream ``chunks()`` through the compressor into the storage, check it back, then write
        the manifest built from ``describe()`` (called after the data is complete)."""
        self.storage.clean_partials()
        started = utc_now()
        backup_id = new_backup_id(kind, source, started)
        data_file = f"{backup_id}.{data_format}{suffix_for(self.compression)}"
        compressor = Compressor(self.compression, self.compression_level)
        raw_size = 0
        upload = self.storage.create(data_file)
        try:
            with self._progress(label) as progress:
                for chunk in chunks():
                    raw_size += len(chunk)
                    upload.write(compressor.feed(chunk))
                    progress.advance(len(chunk))
                upload.write(compressor.finish())
            upload.commit()
        except BaseException:
            upload.abort()
            raise
        try:
            stored = self.storage.checksum(data_file)
            if stored != upload.sha256:
                raise BackupVerifyError(
                    f"{data_file} in {self.storage.location} reads back with SHA-256 {stored}, "
                    f"but {upload.sha256} was written; the storage is corrupting data"
                )
            finished = utc_now()
            details = describe()
            backup = Backup(
                id=backup_id,
                kind=kind,
                source=source,
                started_at=started,
                finished_at=finished,
                status="ok",
                size=upload.size,
                sha256=upload.sha256,
                data_file=data_file,
                format=data_format,
                compression=self.compression,
                raw_size=raw_size,
                verified_at=finished,
                options={"compression_level": compressor.level, **details.pop("options", {})},
                **details,
            )
            self.storage.write_bytes(backup.manifest_file, backup.to_json())
        except BaseException:
            self.storage.delete(data_file)
            raise
        log.info(
            "backup %s of %s stored in %s: %s (%s raw) in %s",
            backup.id,
            source,
            self.storage.location,
            format_bytes(backup.size),
            format_bytes(raw_size),
            format_seconds(backup.duration),
        )
        for warning in backup.warnings:
            log.warning("backup %s: %s", backup.id, warning)
        return backup

    def _update(self, backup: Backup) -> None:
        self.storage.write_bytes(backup.manifest_file, backup.to_json())

    def delete(self, backup: Backup) -> None:
        """Remove a backup: its manifest first (so it stops existing), then its data."""
        self.storage.delete(backup.manifest_file)
        self.storage.delete(backup.data_file)

    def _chunks_of(self, backup: Backup) -> Iterable[bytes]:
        from ._compress import decompressed_chunks

        handle = self.storage.open(backup.data_file)
        try:
            yield from decompressed_chunks(handle, backup.compression, backup.data_file)
        finally:
            handle.close()

    def __repr__(self) -> str:
        return f"Backuper({self.storage!r}, compression={self.compression!r})"
