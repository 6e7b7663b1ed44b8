"""Backuper: take, list, verify, restore and prune backups in one storage."""

from __future__ import annotations

import base64
import builtins
import contextlib
import dataclasses
import functools
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Final, Literal

from .._config import Settings
from .._display import format_bytes, format_seconds
from .._errors import ConfigError
from .._pipeline import read_ahead
from .._progress import Progress
from .._time import utc_now
from ..cache import CacheClient, ClusterCache
from ..db import DbClient, MySQLClient, SQLiteClient
from ._binlogs import (
    ArchivedBinlog,
    archive_binlogs,
    binlog_list,
    list_binlogs,
    unneeded,
    verify_archive,
)
from ._compress import Compressor, decompressed_chunks, suffix_for
from ._encryption import ENCRYPTED_SUFFIX, Encryption
from ._engine import BackupEngine, Capture, RestoreJob, SplitCapture
from ._errors import BackupError, BackupVerifyError, EncryptionKeyError
from ._model import MANIFEST_SUFFIX, Backup, DataFile, Definer, backup_list, files_digest
from ._mysql import MySQLEngine, mysql_client, source_database
from ._pitr import BinlogPosition, backup_before, prepare_replay
from ._redis_cluster import cluster_capture
from ._redis_cluster_rdb import ClusterRdbEngine
from ._redis_link import cache_client, redis_client
from ._redis_logical import LogicalEngine
from ._redis_rdb import RdbEngine
from ._redis_replica import backup_source
from ._replica import replica_client
from ._retention import RetentionPlan, RetentionPolicy
from ._settings import (
    backup_section,
    encryption_from_settings,
    retention_from_settings,
    storage_from_settings,
)
from ._sqlite import SQLiteEngine
from ._storage import Storage, Upload

__all__ = ["Backuper"]

log: Final = logging.getLogger("autoops.backup")


def _is_encrypted(backup: Backup) -> bool:
    return backup.data_files[0].name.endswith(ENCRYPTED_SUFFIX)


def _as_pieces(chunks: Callable[[], Iterable[bytes]]) -> Iterator[tuple[int, bytes]]:
    """A single-file capture's chunks as the pieces of file 0."""
    for chunk in chunks():
        yield 0, chunk


def _one_file(backup: Backup, data_file: DataFile) -> Backup:
    """One file of a backup of several, as a backup of that file alone: how an engine's
    per-file checks see it."""
    if not backup.files:
        return backup
    return dataclasses.replace(
        backup,
        data_file=data_file.name,
        size=data_file.size,
        sha256=data_file.sha256,
        raw_size=data_file.raw_size,
        key_count=data_file.key_count,
        files=(),
    )


def _expect_kind(backup: Backup, kind: str) -> None:
    if backup.kind != kind:
        raise ConfigError(f"backup {backup.id} is a {backup.kind} backup, not {kind}")


def _slug(source: str) -> str:
    without_scheme = source.split("://", 1)[-1]
    return re.sub(r"[^A-Za-z0-9]+", "-", without_scheme).strip("-")[:60] or "source"


def new_backup_id(kind: str, source: str, started_at: datetime) -> str:
    """``<kind>-<source slug>-<UTC time>-<random>``: sortable by time, unique, file-name safe."""
    stamp = started_at.strftime("%Y%m%dT%H%M%S%fZ")
    return f"{kind}-{_slug(source)}-{stamp}-{secrets.token_hex(2)}"


_MYSQL: Final = MySQLEngine()
_RDB: Final = RdbEngine()
_LOGICAL: Final = LogicalEngine()
_CLUSTER_RDB: Final = ClusterRdbEngine()
_SQLITE: Final = SQLiteEngine()
# The engine of a backup is the first here that handles it (the RDB engine before the logical
# one, which takes every other Redis backup).
ENGINES: Final[tuple[BackupEngine, ...]] = (_MYSQL, _RDB, _CLUSTER_RDB, _LOGICAL, _SQLITE)


def _find_engine(backup: Backup) -> BackupEngine | None:
    return next((engine for engine in ENGINES if engine.handles(backup)), None)


def _engine_for(backup: Backup) -> BackupEngine:
    engine = _find_engine(backup)
    if engine is None:
        raise BackupError(f"backup {backup.id} is of an unknown format {backup.format!r}")
    return engine


class Backuper:
    """Backups of MySQL/MariaDB, Redis and SQLite kept in one :class:`Storage`.

    ``compression`` is ``"zstd"`` (default) or ``"gzip"``; ``progress`` shows bytes and rate on a
    terminal (None: only when stderr is a terminal). A backup exists only once its manifest is
    written, after its data is stored and read back with a matching SHA-256.

    With ``encryption`` (an :class:`Encryption`) every data file is stored as an age file and the
    manifest's tables, options, position and warnings are sealed into it; ids, times, sizes,
    source and checksums of the stored bytes stay readable, so listing, pruning and freshness
    checks need no key, while restoring and verifying do.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        compression: str = "zstd",
        compression_level: int | None = None,
        progress: bool | None = None,
        encryption: Encryption | None = None,
        retention: RetentionPolicy | None = None,
    ) -> None:
        Compressor(compression, compression_level)  # validates the choice early
        self.storage = storage
        self.encryption = encryption
        self.compression = compression
        self.compression_level = compression_level
        self.progress = progress
        self.retention = retention

    @classmethod
    def from_settings(
        cls, settings: Settings, *, create: bool = True, **overrides: Any
    ) -> Backuper:
        """The Backuper ``autoops-backup`` builds from ``[backup]``: its ``storage`` (a
        directory, ``sftp://`` with ``key_filename`` and ``known_hosts``, or ``s3://`` with the
        S3 keys), ``encryption_key`` or ``encryption_passphrase_env``, ``compression``, and the
        ``keep_*`` rules as :attr:`retention`; keyword arguments that are not None win over the
        table's keys. ``create`` makes a missing local directory (a backup does; a command that
        only reads must not). Close ``backuper.storage`` when done."""
        section = backup_section(settings)
        section.update({key: value for key, value in overrides.items() if value is not None})
        retention = retention_from_settings(section)  # checked before anything is opened
        encryption = encryption_from_settings(section)
        storage = storage_from_settings(section, create=create)
        try:
            return cls(
                storage,
                compression=section.get("compression", "zstd"),
                encryption=encryption,
                retention=retention,
            )
        except BaseException:
            storage.close()
            raise

    # catalogue ------------------------------------------------------------------------------

    def list(self, source: str | None = None) -> list[Backup]:
        """Every backup in the storage (oldest first), or those of one ``source``. Reads only
        manifests; an unreadable manifest is logged and skipped."""
        backups = []
        for name in self.storage.names():
            if not name.endswith(MANIFEST_SUFFIX):
                continue
            try:
                backup = self._read_manifest(name)
            except BackupError as exc:
                log.warning("skipping %s in %s: %s", name, self.storage.location, exc)
                continue
            if source is None or backup.source == source:
                backups.append(backup)
        backups.sort(key=lambda backup: (backup.started_at, backup.id))
        return backup_list(backups)

    def get(self, backup_id: str) -> Backup:
        """The backup with this id (or a unique id prefix)."""
        if not backup_id.strip():
            # As a prefix, "" would match the only backup there is and act on it.
            raise ConfigError("empty backup id: give a backup id (see autoops-backups list)")
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
        return self._read_manifest(name)

    def _read_manifest(self, name: str) -> Backup:
        backup = Backup.from_json(self.storage.read_bytes(name), name)
        # The manifest is rewritten under its id (verify): a copy under another name would
        # make two catalogue entries of one backup.
        if backup.manifest_file != name:
            raise BackupError(f"manifest {name} describes backup {backup.id}, not its own name")
        return backup

    # storing --------------------------------------------------------------------------------

    def _progress(self, label: str) -> Progress:
        return Progress(label, unit="bytes", enabled=self.progress)

    def _store(self, capture: Capture | SplitCapture) -> Backup:
        """Stream the capture's data through the compressor into the storage (one data file,
        or one per part of a :class:`SplitCapture`), check it back, then write the manifest
        built from its ``describe()`` (called after the data is complete)."""
        kind, source, data_format = capture.kind, capture.source, capture.data_format
        self.storage.clean_partials()
        started = utc_now()
        backup_id = new_backup_id(kind, source, started)
        suffix = suffix_for(self.compression)
        sealed_options: dict[str, Any] = {}
        if self.encryption is not None:
            suffix += ENCRYPTED_SUFFIX
            sealed_options = {"encryption": "age", "encrypted_for": self.encryption.recipient}
        if isinstance(capture, SplitCapture):
            parts = capture.parts
            names = [f"{backup_id}.{part.name}.{data_format}{suffix}" for part in parts]
            pieces = capture.pieces
        else:
            parts = ()
            names = [f"{backup_id}.{data_format}{suffix}"]
            pieces = functools.partial(_as_pieces, capture.chunks)
        written, level = self._write_files(names, pieces, capture.label)
        try:
            finished = utc_now()
            details = capture.describe()
            files = (
                tuple(
                    dataclasses.replace(
                        data_file, node=part.node, slots=part.slots, key_count=part.key_count()
                    )
                    for data_file, part in zip(written, parts, strict=True)
                )
                if parts
                else ()
            )
            backup = Backup(
                id=backup_id,
                kind=kind,
                source=source,
                started_at=started,
                finished_at=finished,
                status="ok",
                size=sum(f.size for f in written),
                sha256=files_digest(files) if files else written[0].sha256,
                data_file="" if files else written[0].name,
                format=data_format,
                compression=self.compression,
                raw_size=sum(f.raw_size for f in written),
                verified_at=finished,
                options={
                    "compression_level": level,
                    **sealed_options,
                    **details.pop("options", {}),
                },
                files=files,
                **details,
            )
            self._update(backup)
        except BaseException:
            for name in names:
                self.storage.delete(name)
            raise
        log.info(
            "backup %s of %s stored in %s: %s (%s raw) in %d file(s) in %s",
            backup.id,
            source,
            self.storage.location,
            format_bytes(backup.size),
            format_bytes(backup.raw_size),
            len(names),
            format_seconds(backup.duration_seconds),
        )
        for warning in backup.warnings:
            log.warning("backup %s: %s", backup.id, warning)
        return backup

    def _write_files(
        self, names: Sequence[str], pieces: Callable[[], Iterable[tuple[int, bytes]]], label: str
    ) -> tuple[builtins.list[DataFile], int]:
        """Compress (and encrypt) each ``(file number, bytes)`` of ``pieces()`` into its file of
        ``names``, commit them all once every one is complete and read each back; returns the
        files and the compression level. On any failure nothing is left under a final name."""
        compressors = [Compressor(self.compression, self.compression_level) for _ in names]
        encoders: builtins.list[Any] = list(compressors)
        if self.encryption is not None:
            encoders = [self.encryption.encoder(compressor) for compressor in compressors]
        raw_sizes = [0] * len(names)
        uploads: builtins.list[Upload] = []
        committed: builtins.list[str] = []
        try:
            for name in names:
                uploads.append(self.storage.create(name))
            with self._progress(label) as progress:
                # The sources are read in their own thread while this one compresses, hashes
                # and writes, as a shell pipeline's separate processes would.
                for index, chunk in read_ahead(pieces()):
                    raw_sizes[index] += len(chunk)
                    uploads[index].write(encoders[index].feed(chunk))
                    progress.advance(len(chunk))
                for upload, encoder in zip(uploads, encoders, strict=True):
                    upload.write(encoder.finish())
            # Committed only once every file is complete: a source that fails late leaves
            # no file of this backup under its final name.
            for upload in uploads:
                upload.commit()
                committed.append(upload.name)
            written = []
            for upload, raw_size in zip(uploads, raw_sizes, strict=True):
                stored = self.storage.checksum(upload.name)
                if stored != upload.sha256:
                    raise BackupVerifyError(
                        f"{upload.name} in {self.storage.location} reads back with SHA-256 "
                        f"{stored}, but {upload.sha256} was written; the storage is corrupting "
                        "data"
                    )
                written.append(DataFile(upload.name, upload.size, upload.sha256, raw_size))
        except BaseException:
            for upload in uploads:
                upload.abort()
            for name in committed:
                self.storage.delete(name)
            raise
        return written, compressors[0].level

    # restoring ------------------------------------------------------------------------------

    def _job(self, backup: Backup, target: Any, **choices: Any) -> RestoreJob:
        return RestoreJob(
            backup,
            target,
            chunks=lambda: self._chunks_of(backup, backup.data_files[0]),
            file_chunks=lambda data_file: self._chunks_of(backup, data_file),
            check_stored=lambda: self._check_stored(backup),
            progress=lambda: self._progress(f"restore {backup.id}"),
            **choices,
        )

    def _restore(self, backup: Backup, kind: str, target: Any, **choices: Any) -> int | None:
        _expect_kind(backup, kind)
        backup = self._unsealed(backup)
        return _engine_for(backup).restore(self._job(backup, target, **choices))

    # MySQL ----------------------------------------------------------------------------------

    def backup_mysql(
        self,
        db: MySQLClient | str,
        *,
        checksums: bool = True,
        tables: Sequence[str] = (),
        from_replica: DbClient | str | None = None,
    ) -> Backup:
        """Dump the client's database with ``mariadb-dump``/``mysqldump`` (consistent for InnoDB,
        with routines, events, triggers, binary-safe, utf8mb4) and store it. ``checksums`` records
        ``CHECKSUM TABLE`` of each table (read in a snapshot opened beside the dump's) for verify
        to compare against; ``tables`` limits the dump to those tables. ``from_replica`` (a URL
        or client) reads everything from that replica of ``db`` instead, its SQL thread stopped
        meanwhile, and records the primary's binlog position it matches."""
        with contextlib.ExitStack() as stack:
            client = stack.enter_context(mysql_client(db))
            replica = None
            if from_replica is not None:
                replica = stack.enter_context(replica_client(client, from_replica))
            return self._store(
                _MYSQL.capture(client, checksums=checksums, tables=tables, from_replica=replica)
            )

    def restore_mysql(
        self,
        backup: Backup,
        db: MySQLClient | str,
        *,
        replace: bool = False,
        definer: Definer = "keep",
        until: datetime | BinlogPosition | str | None = None,
    ) -> None:
        """Load a MySQL backup into the client's database (which must be empty unless
        ``replace``), streaming through the ``mariadb``/``mysql`` client. ``definer="strip"``
        drops the ``DEFINER`` of views, triggers, routines and events so the restoring account
        owns them (for a server where the original accounts do not exist). With ``until`` (a
        datetime, a :class:`BinlogPosition` or a GTID) the archived binary logs are then replayed
        from the backup's position up to it (see :meth:`archive_binlogs`)."""
        if until is None:
            self._restore(backup, "mysql", db, replace=replace, definer=definer)
            return
        _expect_kind(backup, "mysql")
        backup = self._unsealed(backup)
        with mysql_client(db) as client:
            # The chain is checked and copied out before the target is touched.
            replay = prepare_replay(self, backup, until)
            try:
                _MYSQL.restore(self._job(backup, client, replace=replace, definer=definer))
                replay.apply(client, source_database(backup.source))
            finally:
                replay.close()

    def archive_binlogs(self, db: MySQLClient | str) -> builtins.list[ArchivedBinlog]:
        """Copy the server's binary logs that are new or have grown since the last run into the
        storage (the active one up to its current end, replaced by later runs until the server
        closes it); returns what this run wrote. Point-in-time recovery reaches as far as the
        last run."""
        with mysql_client(db) as client:
            return archive_binlogs(self, client)

    def binlogs(self, source: str | None = None) -> builtins.list[ArchivedBinlog]:
        """The archived binary logs (of one server, ``mysql://host:port``), oldest first."""
        return binlog_list(list_binlogs(self.storage, source))

    def verify_binlogs(self, source: str | None = None) -> builtins.list[ArchivedBinlog]:
        """Check every archived binlog (of one server) whole: size, SHA-256, decompression and
        its events' end; returns them, or raises :class:`BackupVerifyError` naming the first
        that fails."""
        archives = list_binlogs(self.storage, source)
        for archive in archives:
            verify_archive(self, archive)
        return archives

    def backup_before(
        self, until: datetime | BinlogPosition | str, source: str | None = None
    ) -> Backup:
        """The newest complete MySQL backup (of ``source``) from which the archived binary logs
        can reach ``until``: the starting point of a point-in-time restore."""
        backups = [self._readable(b) for b in self.list(source)]
        mysql_sources = {b.source for b in backups if b.kind == "mysql"}
        if source is None and len(mysql_sources) > 1:
            raise ConfigError(
                "backups of several MySQL databases are stored here: name the one to restore "
                f"(source=, --source): {', '.join(sorted(mysql_sources))}"
            )
        sealed = [b for b in backups if b.kind == "mysql" and "sealed" in b.options]
        if sealed:
            raise EncryptionKeyError(
                f"{len(sealed)} MySQL backups here are encrypted, so their binlog positions are "
                "sealed: pass encryption=Encryption.from_keyfile(...) (--encryption-key)"
            )
        return backup_before(backups, until)

    # Redis ----------------------------------------------------------------------------------

    def backup_redis(
        self,
        cache: CacheClient | str,
        *,
        mode: Literal["rdb", "logical"] = "rdb",
        pattern: str | None = None,
        timeout: float = 60.0,
        prefer: str = "master",
    ) -> Backup:
        """Back up Redis: ``mode="rdb"`` fetches a point-in-time RDB snapshot of the whole server
        over the replication protocol; ``mode="logical"`` dumps the keys matching ``pattern``
        (default: the client's namespace, else all) of the client's database with SCAN + DUMP +
        PTTL, for servers that block SYNC or to take part of a database. On a
        ``redis+sentinel://`` cache, ``prefer="replica"`` reads from a healthy replica the
        sentinels name (recorded as that replica's address), never the master. On a
        ``redis+cluster://`` cache every master is backed up at once into one backup (one data
        file per master, one manifest; ``files`` and ``options["cluster"]``: each master's
        node, slots, key count)."""
        if mode not in ("rdb", "logical"):
            raise ConfigError(f"unknown Redis backup mode {mode!r}; use 'rdb' or 'logical'")
        if mode == "rdb" and pattern is not None:
            raise ConfigError("pattern= selects keys of a logical dump; use mode='logical'")
        with cache_client(cache) as any_client:
            if isinstance(any_client, ClusterCache):
                if prefer != "master":
                    raise ConfigError(
                        f"{any_client.location} is a Redis Cluster: use prefer='master'"
                    )
                if mode == "rdb":
                    return self._store(_CLUSTER_RDB.capture(any_client, timeout=timeout))
                return self._store(cluster_capture(any_client, pattern))
            with redis_client(any_client) as given, backup_source(given, prefer) as client:
                if mode == "rdb":
                    return self._store(_RDB.capture(client, timeout=timeout))
                return self._store(_LOGICAL.capture(client, pattern))

    def restore_redis(
        self,
        backup: Backup,
        target: CacheClient | str | os.PathLike[str],
        *,
        replace: bool = False,
    ) -> int:
        """Restore a Redis backup into a Redis client or URL; returns the number of keys restored.

        A logical dump is RESTOREd into the target client's database (refused when keys matching
        the dump's pattern exist there, unless ``replace``); into a ``redis+cluster://`` target
        each key goes to the master owning its slot, so it restores onto any shape. An RDB
        snapshot is loaded into a private ``redis-server`` and the keys of the database it was
        taken from are RESTOREd into the target client's database (refused when that database
        holds any key, unless ``replace``, which overwrites colliding keys and leaves the others).
        With a file path as ``target`` an RDB snapshot is written there instead, as the
        ``dump.rdb`` to start a stopped server from (returns the snapshot's key count). A Redis
        Cluster backup (RDB or logical) restores onto a cluster of the same shape master by
        master (each file to the master serving its slots, all at once), onto another shape or
        one Redis through the target's client; a Cluster RDB backup never to a file."""
        return self._restore(backup, "redis", target, replace=replace) or 0

    # SQLite ---------------------------------------------------------------------------------

    def backup_sqlite(self, db: SQLiteClient | str | os.PathLike[str]) -> Backup:
        """Copy an SQLite database with the online backup API (consistent while in use)."""
        return self._store(_SQLITE.capture(db))

    def restore_sqlite(
        self, backup: Backup, db: SQLiteClient | str | os.PathLike[str], *, replace: bool = False
    ) -> None:
        """Copy an SQLite backup into the target database (empty unless ``replace``)."""
        self._restore(backup, "sqlite", db, replace=replace)

    # verify -----------------------------------------------------------------------------------

    def _check_stored(self, backup: Backup) -> None:
        """Every data file is there with the manifest's size and SHA-256."""
        names = set(self.storage.names())
        for data_file in backup.data_files:
            self._check_file(backup, data_file, names)

    def _check_file(self, backup: Backup, data_file: DataFile, names: set[str]) -> None:
        where = data_file.name
        if backup.files:
            master = f", master {data_file.node}" if data_file.node else ""
            where += f" (file {backup.files.index(data_file) + 1} of {len(backup.files)}{master})"
        where += f" in {self.storage.location}"
        if data_file.name not in names:
            raise BackupVerifyError(f"{where} is missing")
        size = self.storage.size(data_file.name)
        if size != data_file.size:
            raise BackupVerifyError(f"{where} is {size} bytes; the manifest says {data_file.size}")
        digest = self.storage.checksum(data_file.name)
        if digest != data_file.sha256:
            raise BackupVerifyError(
                f"{where} has SHA-256 {digest}; the manifest says {data_file.sha256}"
            )
        if _is_encrypted(backup):
            # Every chunk is authenticated before a restore writes its first byte, so a
            # tampered file (even one whose manifest checksum was forged too) restores nothing.
            self._encryption_for(backup).authenticate(
                self.storage.open(data_file.name), data_file.name
            )

    def verify(
        self, backup: Backup, *, restore_test: MySQLClient | CacheClient | str | bool | None = False
    ) -> Backup:
        """Check a backup's size and SHA-256 and that it decompresses whole; with
        ``restore_test`` also restore it into scratch space and compare with the manifest:
        a MySQL client or URL (a scratch ``autoops_verify_*`` database is made and dropped), a
        Redis cache for a logical dump (restored keys are removed after), or True for an RDB
        snapshot (a private redis-server loads it) or an SQLite backup.

        Success records ``verified_at`` and returns the updated backup; a mismatch marks the
        backup ``corrupt`` and raises :class:`BackupVerifyError`."""
        backup = self._unsealed(backup)
        try:
            self._check_stored(backup)
            self._check_content(backup)
            if restore_test is not False and restore_test is not None:
                self._restore_test(backup, restore_test)
        except BackupVerifyError:
            self._update(backup.with_status("corrupt", backup.verified_at))
            raise
        verified = backup.with_status("ok", utc_now())
        self._update(verified)
        return verified

    def _check_content(self, backup: Backup) -> None:
        engine = _find_engine(backup)
        for data_file in backup.data_files:
            tail = b""
            for chunk in self._chunks_of(backup, data_file):
                tail = (tail + chunk)[-512:]
            if engine is not None:
                engine.check_content(
                    _one_file(backup, data_file),
                    functools.partial(self._chunks_of, backup, data_file),
                    tail,
                )

    def _restore_test(self, backup: Backup, target: Any) -> None:
        engine = _find_engine(backup)
        if engine is None:
            raise BackupVerifyError(f"no test restore for a {backup.kind} backup")
        engine.test_restore(self._job(backup, target))

    # retention ------------------------------------------------------------------------------

    def prune(
        self,
        policy: RetentionPolicy | None = None,
        *,
        source: str | None = None,
        dry_run: bool = False,
    ) -> RetentionPlan:
        """Apply ``policy`` (default: :attr:`retention`) per source (or to one ``source``) and
        remove what it does not keep, manifest first; with ``dry_run`` only return the plan. A
        source whose newest backup is not verified keeps everything (see
        :class:`RetentionPolicy`). Archived binlogs older than every kept MySQL backup's position
        are removed too (``plan.binlogs``)."""
        policy = policy if policy is not None else self.retention
        if policy is None:
            raise ConfigError(
                "prune needs a retention policy: pass one, or set keep_* keys in [backup]"
            )
        everything = self.list()
        plan = policy.plan(b for b in everything if source is None or b.source == source)
        removed = {b.id for b in plan.remove}
        kept = [self._readable(b) for b in everything if b.id not in removed]
        plan = dataclasses.replace(plan, binlogs=unneeded(list_binlogs(self.storage), kept))
        if not dry_run:
            self.storage.clean_partials()
            for backup in plan.remove:
                self.delete(backup)
                log.info("pruned backup %s of %s", backup.id, backup.source)
            for archive in plan.binlogs:
                self.storage.delete(archive.manifest_file)
                self.storage.delete(archive.data_file)
                log.info("pruned binlog %s of %s", archive.server_file, archive.source)
        return plan

    def _readable(self, backup: Backup) -> Backup:
        """The backup unsealed when the key is at hand, else as listed (its position hidden)."""
        if "sealed" in backup.options and self.encryption is not None:
            with contextlib.suppress(EncryptionKeyError):
                return self._unsealed(backup)
        return backup

    def _update(self, backup: Backup) -> None:
        self.storage.write_bytes(backup.manifest_file, self._sealed(backup))

    # encryption -------------------------------------------------------------------------------

    def _encryption_for(self, backup: Backup) -> Encryption:
        if self.encryption is None:
            recipient = backup.options.get("encrypted_for", "a key")
            raise EncryptionKeyError(
                f"backup {backup.id} is encrypted (for {recipient}); pass "
                "encryption=Encryption.from_keyfile(...) (--encryption-key) to read it"
            )
        return self.encryption

    def _sealed(self, backup: Backup) -> bytes:
        """The manifest as stored: an encrypted backup's tables, options, position and warnings
        travel inside an age blob, the rest stays readable."""
        if not _is_encrypted(backup) or "sealed" in backup.options:
            return backup.to_json()
        encryption = self._encryption_for(backup)
        sealed = encryption.encrypt_bytes(backup.to_json())
        readable = {key: backup.options[key] for key in ("encryption", "encrypted_for")}
        readable["sealed"] = base64.b64encode(sealed).decode("ascii")
        return dataclasses.replace(
            backup,
            options=readable,
            tables={},
            position={},
            warnings=(),
            files=tuple(data_file.public() for data_file in backup.files),
        ).to_json()

    def _unsealed(self, backup: Backup) -> Backup:
        """The backup with its sealed manifest fields decrypted (as is when none are)."""
        if "sealed" not in backup.options:
            return backup
        encryption = self._encryption_for(backup)
        where = f"the manifest of {backup.id}"
        try:
            blob = base64.b64decode(str(backup.options["sealed"]), validate=True)
        except ValueError:
            raise BackupVerifyError(f"{where}: its sealed fields are not base64") from None
        inner = Backup.from_json(encryption.decrypt_bytes(blob, where), where)
        if (inner.id, inner.data_file, inner.sha256) != (
            backup.id,
            backup.data_file,
            backup.sha256,
        ):
            raise BackupVerifyError(f"{where}: its sealed fields belong to another backup")
        return dataclasses.replace(
            backup,
            options=inner.options,
            tables=inner.tables,
            position=inner.position,
            warnings=inner.warnings,
            files=inner.files,
        )

    def delete(self, backup: Backup) -> None:
        """Remove a backup: its manifest first (so it stops existing), then its data files."""
        self.storage.delete(backup.manifest_file)
        for data_file in backup.data_files:
            self.storage.delete(data_file.name)

    def _chunks_of(self, backup: Backup, data_file: DataFile) -> Iterable[bytes]:
        handle = self.storage.open(data_file.name)
        if _is_encrypted(backup):
            handle = self._encryption_for(backup).open(handle, data_file.name)
        try:
            yield from decompressed_chunks(handle, backup.compression, data_file.name)
        finally:
            handle.close()

    def __repr__(self) -> str:
        return f"Backuper({self.storage!r}, compression={self.compression!r})"
