"""Redis RDB backups: a point-in-time snapshot of the whole server over the replication
protocol, taken as ``redis-cli --rdb`` does (``REPLCONF capa eof``, ``REPLCONF rdb-only 1``,
``SYNC``), so no access to the server's disk is needed; restored through a private
``redis-server`` that loads it, or written out as a ``dump.rdb``."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import redis

from .._pipeline import read_ahead
from .._resp import pack_command
from ..cache import CacheClient, RedisCache
from ._engine import BackupEngine, Capture, RestoreJob
from ._errors import BackupError, BackupVerifyError, RestoreRefusedError
from ._model import Backup
from ._redis_link import CHUNK, Link, redis_client, refused, server_label
from ._redis_logical import LogicalDump, refuse_if_holding, restore_entries
from ._storage import disk_error

__all__ = ["RdbEngine", "RdbSnapshot", "restore_rdb", "verify_rdb_by_loading"]

_EOF_MARK_LENGTH: Final = 40
_RDB_MAGIC: Final = b"REDIS"
_RDB_EOF_OPCODE: Final = 0xFF
_LOG_PREFIX: Final = re.compile(r"^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ [#*.-] ")


@dataclass
class RdbSnapshot:
    """One RDB transfer; ``key_count`` is the server's key total just before it started."""

    cache: RedisCache
    timeout: float = 60.0
    key_count: int = 0
    server_version: str = ""

    def chunks(self) -> Iterator[bytes]:
        """The RDB file's bytes, checked for its header and end marker."""
        try:
            info = self.cache.redis.info()
        except redis.RedisError as exc:
            where = server_label(self.cache)
            if isinstance(exc, redis.AuthenticationError | redis.ResponseError):
                raise refused(where, "INFO", exc) from exc
            raise BackupError(f"cannot reach Redis at {where}: {exc}") from exc
        self.server_version = str(info.get("redis_version", ""))
        self.key_count = sum(
            int(value.get("keys", 0))
            for name, value in info.items()
            if name.startswith("db") and isinstance(value, dict)
        )
        # A replica link selects no database: SYNC sends the whole server.
        link = Link(self.cache, self.timeout, db=0)
        try:
            link.command("REPLCONF", "capa", "eof")
            # Redis >= 7 then sends only the RDB, no replication stream after it.
            link.command("REPLCONF", "rdb-only", "1", allow_error=True)
            # The server sends nothing unasked, so redis-py's parser holds no bytes now and the
            # raw reads below start exactly at SYNC's reply.
            link.send(pack_command(b"SYNC"))
            header = link.line()
            if header.startswith(b"-"):
                message = header[1:].decode("utf-8", "replace")
                raise BackupError(
                    f"Redis at {link.where} refused SYNC: {message}; if replication is blocked "
                    "(managed Redis), use the logical dump instead",
                    tool_message=message,
                )
            if not header.startswith(b"$"):
                raise BackupError(f"Redis at {link.where} sent {header[:60]!r} instead of an RDB")
            first = b""
            last = b""
            for chunk in self._body(link, header):
                if len(first) < 9:
                    first += chunk[: 9 - len(first)]
                last = (last + chunk)[-9:]
                yield chunk
        finally:
            link.close()
        if not first.startswith(_RDB_MAGIC) or len(last) < 9 or last[0] != _RDB_EOF_OPCODE:
            raise BackupError(f"the RDB from {link.where} is malformed or truncated")

    def _body(self, link: Link, header: bytes) -> Iterator[bytes]:
        buffer = link.buffer
        if header.startswith(b"$EOF:"):
            # Diskless: the RDB ends with the 40-byte mark announced in the header.
            mark = header[5:]
            if len(mark) != _EOF_MARK_LENGTH:
                raise BackupError(f"Redis at {link.where} sent a bad EOF mark")
            while not buffer.endswith(mark):
                if len(buffer) >= CHUNK + _EOF_MARK_LENGTH:
                    yield link.take(len(buffer) - _EOF_MARK_LENGTH)
                link.fill()
            if len(buffer) > _EOF_MARK_LENGTH:
                yield link.take(len(buffer) - _EOF_MARK_LENGTH)
            return
        try:
            remaining = int(header[1:])
        except ValueError:
            raise BackupError(f"Redis at {link.where} sent a bad RDB length {header!r}") from None
        while remaining > 0:
            if len(buffer) < min(remaining, CHUNK):
                link.fill(min(CHUNK, remaining - len(buffer)))
                continue
            data = link.take(min(len(buffer), remaining))
            remaining -= len(data)
            yield data


def _redis_server_program(error: type[BackupError]) -> str:
    program = shutil.which("redis-server")
    if program is None:
        raise error(
            "loading an RDB snapshot needs redis-server on PATH; install the Debian package "
            "redis-server (or Redis itself) on the machine that runs the restore"
        )
    return program


def _log_tail(directory: Path) -> str:
    try:
        text = (directory / "redis.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    # "1234:M 30 Nov 2026 13:36:43.086 # message": the message only, without the server's
    # warnings about the host (memory overcommit, THP), which say nothing about the snapshot.
    messages = [
        _LOG_PREFIX.sub("", line) for line in text.strip().splitlines() if "WARNING" not in line
    ]
    return " | ".join(messages[-2:]) or "(empty log)"


@contextlib.contextmanager
def _private_server(
    chunks: Iterable[bytes], where: str, error: type[BackupError], *, databases: int = 16
) -> Iterator[str]:
    """A throwaway ``redis-server`` that has loaded the RDB (checking its CRC64), reached only
    through a unix socket in a 0700 temporary directory; yields the socket's path. The server
    is killed by its PID and the directory (the decompressed RDB with it) removed on the way out,
    whatever happens inside."""
    program = _redis_server_program(error)
    directory = Path(tempfile.mkdtemp(prefix="autoops-rdb-"))
    # A unix socket path must fit in sun_path (108 bytes): a long TMPDIR falls back to /tmp.
    if len(str(directory / "redis.sock")) > 100:
        shutil.rmtree(directory, ignore_errors=True)
        directory = Path(tempfile.mkdtemp(prefix="autoops-rdb-", dir="/tmp"))
    process: subprocess.Popen[bytes] | None = None
    client: RedisCache | None = None
    try:
        try:
            fd = os.open(directory / "dump.rdb", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
        except OSError as exc:
            raise error(
                f"cannot write {where} to {directory} for a private redis-server to load: "
                f"{exc.strerror or exc}; free space there or point TMPDIR at a larger disk"
            ) from exc
        socket_path = directory / "redis.sock"
        # No TCP port, no persistence, and only this user may open the socket: nobody else on
        # the machine can read the snapshot's data while it is loaded.
        argv = [
            program, "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
            "--dir", str(directory), "--dbfilename", "dump.rdb", "--save", "",
            "--appendonly", "no", "--databases", str(databases), "--daemonize", "no",
            "--logfile", str(directory / "redis.log"),
        ]  # fmt: skip
        # A session of its own: a Ctrl-C at the terminal reaches this process, whose cleanup
        # below stops the server, rather than both at once.
        process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        client = RedisCache(unix_socket_path=str(socket_path), socket_timeout=60.0)
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise error(
                    f"redis-server could not load {where}: {_log_tail(directory)}; a snapshot "
                    "of a newer Redis needs a redis-server at least as new, one with module "
                    "types a redis-server that loads those modules"
                )
            try:
                # INFO is served while the RDB loads; other commands get -LOADING until done.
                if int(client.redis.info("persistence").get("loading", 1)) == 0:
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise error(
                        f"redis-server did not start to load {where}: {_log_tail(directory)}"
                    ) from None
            except redis.BusyLoadingError:
                pass
            time.sleep(0.05)
        client.close()
        yield str(socket_path)
    finally:
        if client is not None:
            client.close()
        if process is not None:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def verify_rdb_by_loading(chunks: Iterable[bytes], where: str) -> int:
    """Load an RDB into a private ``redis-server`` (which checks its CRC64) and return its key
    count; the server and the file are removed afterwards."""
    with _private_server(chunks, where, BackupVerifyError) as socket_path:
        server = redis.Redis(unix_socket_path=socket_path, socket_timeout=60)
        try:
            info = server.info("keyspace")
        finally:
            server.close()
    return sum(int(v.get("keys", 0)) for v in info.values() if isinstance(v, dict))


def restore_rdb(
    chunks: Iterable[bytes],
    cache: RedisCache,
    db: int,
    *,
    replace: bool = False,
    progress: Any = None,
) -> int:
    """Restore the keys of database ``db`` of an RDB snapshot into the client's database: a
    private ``redis-server`` loads the snapshot, then its keys are moved across as a logical dump
    (DUMP + PEXPIRETIME, then ``RESTORE ... REPLACE ABSTTL``), so expiries stay absolute and keys
    already expired are skipped. Refused before anything is loaded when the target database holds
    any key, unless ``replace``. Returns the number of keys restored."""
    # Checked first so a refusal costs no decompression and no load.
    refuse_if_holding(cache, "*", replace=replace)
    with _private_server(
        chunks, "the RDB snapshot", BackupError, databases=max(1024, db + 1)
    ) as socket_path:
        server = RedisCache(unix_socket_path=socket_path, db=db, socket_timeout=60.0)
        try:
            # Checked again: keys may have been written while the snapshot loaded.
            refuse_if_holding(cache, "*", replace=replace)
            dump = LogicalDump(cache=server, pattern="*")
            # The private server is dumped in a thread of its own, so that its DUMPs and the
            # target's RESTOREs (most of the time is spent waiting on them) overlap.
            batches = read_ahead(dump.entries(), depth=4)
            entries = (entry for batch in batches for entry in batch)
            restored = restore_entries(entries, cache, progress=progress)
        finally:
            server.close()
    return len(restored)


def _source_db(backup: Backup) -> int:
    """The database an RDB backup was taken from, as its manifest records it; manifests written
    before that was recorded fall back to the source URL's database, else 0."""
    recorded = backup.options.get("db")
    if isinstance(recorded, int):
        return recorded
    path = urlsplit(backup.source).path.strip("/")
    return int(path) if path.isdigit() else 0


def _write_plain(job: RestoreJob, path: Path) -> None:
    backup = job.backup
    if path.exists() and not job.replace:
        raise RestoreRefusedError(f"{path} exists; pass replace=True to overwrite it")
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise disk_error(exc, path.parent, backup.raw_size) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in job.chunks():
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise disk_error(exc, path.parent, backup.raw_size) from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


class RdbEngine(BackupEngine):
    """Redis RDB snapshots (kind ``redis``, format ``rdb``)."""

    kind = "redis"
    data_format = "rdb"

    def capture(self, client: RedisCache, *, timeout: float) -> Capture:
        """A point-in-time RDB snapshot of the whole server of ``client``."""
        server = server_label(client)
        snapshot = RdbSnapshot(client, timeout=timeout)
        # The snapshot holds every database; a restore takes the client's one from it.
        db = client.connection_settings.db
        return Capture(
            kind=self.kind,
            source=server,
            data_format=self.data_format,
            chunks=snapshot.chunks,
            describe=lambda: {
                "tool": "autoops SYNC (rdb-only)",
                "server_version": snapshot.server_version,
                "options": {"mode": "rdb", "db": db},
                "key_count": snapshot.key_count,
            },
            label=f"backup {server}",
        )

    def check_content(
        self, backup: Backup, chunks: Callable[[], Iterable[bytes]], tail: bytes
    ) -> None:
        if len(tail) < 9 or tail[-9] != _RDB_EOF_OPCODE:
            raise BackupVerifyError(f"{backup.data_file}: the RDB does not end with its EOF marker")

    def restore(self, job: RestoreJob) -> int:
        """Into a Redis client or URL: the keys of the database the snapshot was taken from;
        into a file path: the snapshot itself, as a ``dump.rdb`` (its key count returned)."""
        job.check_stored()
        target = job.target
        if isinstance(target, CacheClient) or (isinstance(target, str) and "://" in target):
            with redis_client(target) as client, job.progress() as progress:
                return restore_rdb(
                    job.chunks(),
                    client,
                    _source_db(job.backup),
                    replace=job.replace,
                    progress=progress,
                )
        _write_plain(job, Path(os.fspath(target)))
        return job.backup.key_count or 0

    def test_restore(self, job: RestoreJob) -> None:
        """A private redis-server loads the snapshot (checking its CRC64)."""
        verify_rdb_by_loading(job.chunks(), job.backup.data_file)
