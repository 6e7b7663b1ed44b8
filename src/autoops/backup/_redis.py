"""Redis backups: an RDB snapshot over the replication protocol, or a logical dump.

The RDB path speaks to the server as ``redis-cli --rdb`` does (``REPLCONF capa eof``,
``REPLCONF rdb-only 1``, ``SYNC``), so no access to the server's disk is needed. The logical
path (SCAN + DUMP + PEXPIRETIME or PTTL, pipelined) works where SYNC is blocked and can select
keys by pattern; it is restored with ``RESTORE key ttl value REPLACE ABSTTL``.

Both open connections of their own through redis-py, from the client's connection settings, so
TLS, AUTH and SELECT are exactly the client's; only the bytes after that handshake (the RDB
stream, bulk replies for hiredis) are read straight from the connection's socket.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import redis

from .._errors import ConfigError
from .._pipeline import read_ahead
from ..cache import CacheClient, RedisCache
from ..cache._client import escape_glob
from ..cache._resp import pack_command
from ._errors import BackupError, BackupVerifyError, RestoreRefusedError

__all__ = [
    "LogicalDump",
    "RdbSnapshot",
    "redis_client",
    "restore_logical",
    "restore_rdb",
    "verify_rdb_by_loading",
]

_MAGIC: Final = b"AUTOOPS-REDIS-DUMP 1\n"
_RECORD: Final = b"K"
_END: Final = b"E"
_RECORD_HEAD: Final = struct.Struct(">I")
_EXPIRY: Final = struct.Struct(">q")
_COUNT: Final = struct.Struct(">Q")
_CHUNK: Final = 1 << 20
_SCAN_COUNT: Final = 5000
_EOF_MARK_LENGTH: Final = 40
_RDB_MAGIC: Final = b"REDIS"
_RDB_EOF_OPCODE: Final = 0xFF
_LOG_PREFIX: Final = re.compile(r"^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ [#*.-] ")


@contextlib.contextmanager
def redis_client(cache: CacheClient | str) -> Iterator[RedisCache]:
    """The :class:`RedisCache` given, or one made from a redis:// URL and closed afterwards."""
    client = CacheClient.from_url(cache) if isinstance(cache, str) else cache
    try:
        if not isinstance(client, RedisCache):
            raise ConfigError(f"expected a Redis cache client or redis:// URL, got {client!r}")
        yield client
    finally:
        if isinstance(cache, str):
            client.close()


def server_label(cache: RedisCache) -> str:
    """``redis://host:port`` (or ``unix:///path``) with no credentials."""
    return cache.connection_settings.server_label


def _refused(where: str, command: str, exc: redis.RedisError) -> BackupError:
    message = str(exc)
    if isinstance(exc, redis.AuthenticationError) or message.startswith(
        ("NOAUTH", "WRONGPASS", "NOPERM")
    ):
        advice = "check the user name, password and ACL permissions"
    else:
        advice = "if SYNC is disabled (managed Redis), use the logical dump instead"
    return BackupError(
        f"Redis at {where} refused {command}: {message}; {advice}", tool_message=message
    )


class _Link:
    """A connection of its own to the cache's server, opened by redis-py from the client's
    connection settings: TLS, AUTH (or ACL user) and SELECT exactly as the client does them."""

    def __init__(self, cache: RedisCache, timeout: float, *, db: int | None = None) -> None:
        settings = cache.connection_settings
        settings = dataclasses.replace(
            settings,
            db=settings.db if db is None else db,
            socket_timeout=timeout,
            connect_timeout=min(timeout, settings.connect_timeout or timeout),
        )
        self.where = settings.server_label
        try:
            self.connection = settings.open_connection()
        except (redis.ResponseError, redis.AuthenticationError) as exc:
            raise _refused(self.where, "the connection", exc) from exc
        except (redis.RedisError, OSError) as exc:
            raise BackupError(f"cannot connect to Redis at {self.where}: {exc}") from exc
        # Once the handshake is done every byte is read here, straight from redis-py's own
        # (TLS-wrapped) socket: the RDB stream is not RESP, and bulk replies go to hiredis.
        sock = self.connection._get_socket()
        assert sock is not None
        self.sock: socket.socket = sock
        self.buffer = bytearray()

    def command(self, *args: str, allow_error: bool = False) -> Any:
        """Send one command and read its reply through redis-py (no raw bytes pending)."""
        try:
            self.connection.send_command(*args)  # type: ignore[no-untyped-call]
            return self.connection.read_response()
        except redis.ResponseError as exc:
            if allow_error:
                return exc
            raise _refused(self.where, args[0], exc) from exc
        except redis.AuthenticationError as exc:
            raise _refused(self.where, args[0], exc) from exc
        except (redis.RedisError, OSError) as exc:
            raise BackupError(f"the connection to Redis at {self.where} failed: {exc}") from exc

    def send(self, payload: bytes) -> None:
        try:
            self.sock.sendall(payload)
        except OSError as exc:
            raise BackupError(f"the connection to Redis at {self.where} failed: {exc}") from exc

    def receive(self, limit: int = _CHUNK) -> bytes:
        """Up to ``limit`` bytes from the socket; the server closing it is an error."""
        try:
            data = self.sock.recv(limit)
        except OSError as exc:
            raise BackupError(f"the connection to Redis at {self.where} failed: {exc}") from exc
        if not data:
            raise BackupError(f"Redis at {self.where} closed the connection mid-transfer")
        return data

    def fill(self, limit: int = _CHUNK) -> None:
        self.buffer += self.receive(limit)

    def take(self, size: int) -> bytes:
        """The first ``size`` buffered bytes, removed from the buffer (one copy)."""
        with memoryview(self.buffer) as view:
            data = bytes(view[:size])
        del self.buffer[:size]
        return data

    def line(self) -> bytes:
        """The next line, skipping the bare newlines a server sends as keepalives."""
        while True:
            while self.buffer[:1] == b"\n":
                del self.buffer[:1]
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = self.take(end)
                del self.buffer[:2]
                return line
            self.fill()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.disconnect()  # type: ignore[no-untyped-call]


class _Wire:
    """Bulk DUMP/PTTL and RESTORE on a connection of its own: commands go out in one write per
    batch and hiredis parses the replies, several times faster than a redis-py pipeline."""

    def __init__(self, cache: RedisCache, timeout: float = 60.0) -> None:
        import hiredis

        self._link = _Link(cache, timeout)
        self.where = self._link.where
        self._reader = hiredis.Reader()
        self._error_type = hiredis.ReplyError

    def call(self, payload: bytes, count: int) -> list[Any]:
        """Send packed commands and return their ``count`` replies; an error reply raises."""
        link = self._link
        link.send(payload)
        replies: list[Any] = []
        gets = self._reader.gets
        while len(replies) < count:
            reply = gets()
            if reply is False:
                self._reader.feed(link.receive())
                continue
            replies.append(reply)
        for reply in replies:
            if isinstance(reply, self._error_type):
                raise BackupError(
                    f"Redis at {self.where} answered: {reply}", tool_message=str(reply)
                )
        return replies

    def close(self) -> None:
        self._link.close()


def _has_hiredis() -> bool:
    try:
        import hiredis  # noqa: F401
    except ImportError:
        return False
    return True


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
                raise _refused(where, "INFO", exc) from exc
            raise BackupError(f"cannot reach Redis at {where}: {exc}") from exc
        self.server_version = str(info.get("redis_version", ""))
        self.key_count = sum(
            int(value.get("keys", 0))
            for name, value in info.items()
            if name.startswith("db") and isinstance(value, dict)
        )
        # A replica link selects no database: SYNC sends the whole server.
        link = _Link(self.cache, self.timeout, db=0)
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

    def _body(self, link: _Link, header: bytes) -> Iterator[bytes]:
        buffer = link.buffer
        if header.startswith(b"$EOF:"):
            # Diskless: the RDB ends with the 40-byte mark announced in the header.
            mark = header[5:]
            if len(mark) != _EOF_MARK_LENGTH:
                raise BackupError(f"Redis at {link.where} sent a bad EOF mark")
            while not buffer.endswith(mark):
                if len(buffer) >= _CHUNK + _EOF_MARK_LENGTH:
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
            if len(buffer) < min(remaining, _CHUNK):
                link.fill(min(_CHUNK, remaining - len(buffer)))
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
    _refuse_if_holding(cache, "*", replace=replace)
    with _private_server(
        chunks, "the RDB snapshot", BackupError, databases=max(1024, db + 1)
    ) as socket_path:
        server = RedisCache(unix_socket_path=socket_path, db=db, socket_timeout=60.0)
        try:
            # Checked again: keys may have been written while the snapshot loaded.
            _refuse_if_holding(cache, "*", replace=replace)
            dump = LogicalDump(cache=server, pattern="*")
            # The private server is dumped in a thread of its own, so that its DUMPs and the
            # target's RESTOREs (most of the time is spent waiting on them) overlap.
            batches = read_ahead(dump.entries(), depth=4)
            entries = (entry for batch in batches for entry in batch)
            restored = _restore_entries(entries, cache, progress=progress)
        finally:
            server.close()
    return len(restored)


# logical dump ---------------------------------------------------------------------------------


@dataclass
class LogicalDump:
    """SCAN + DUMP + PTTL of the keys matching ``pattern`` in the client's database."""

    cache: RedisCache
    pattern: str
    key_count: int = 0
    vanished: int = 0
    server_version: str = ""
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def for_cache(cls, cache: RedisCache, pattern: str | None) -> LogicalDump:
        """``pattern`` defaults to the client's namespace (``ns:*``), else every key."""
        if pattern is None:
            pattern = f"{escape_glob(cache.namespace)}:*" if cache.namespace else "*"
        return cls(cache=cache, pattern=pattern)

    def entries(self) -> Iterator[list[tuple[bytes, int, bytes]]]:
        """``(key, expire_at_ms or -1, DUMP payload)`` of every key, a batch per SCAN step;
        keys that vanish between SCAN and DUMP are counted in ``vanished``."""
        client = self.cache.redis
        wire = _Wire(self.cache) if _has_hiredis() else None

        def send(payload: bytes, count: int) -> list[Any]:
            if wire is not None:
                return wire.call(payload, count)
            # Reads only, so the batch may be retried whole on a lost connection.
            return self.cache.send_packed([payload] + [b""] * (count - 1), operation="redis DUMP")

        try:
            self.server_version = str(client.info("server").get("redis_version", ""))
            # PEXPIRETIME (Redis >= 7) gives the absolute expiry, exact however slow the reply;
            # older servers get PTTL added to the time the reply arrived.
            absolute = int(self.server_version.split(".", 1)[0] or 0) >= 7
            expiry_command = b"$11\r\nPEXPIRETIME" if absolute else b"$4\r\nPTTL"
            seconds, micros = client.time()
            clock_offset_ms = seconds * 1000 + micros // 1000 - int(time.time() * 1000)
            cursor = 0
            while True:
                cursor, scanned = client.scan(cursor, match=self.pattern, count=_SCAN_COUNT)
                if scanned:
                    keys: list[bytes] = [
                        k.encode() if isinstance(k, str) else bytes(k) for k in scanned
                    ]
                    payload = b"".join(
                        b"*2\r\n$4\r\nDUMP\r\n$%d\r\n%b\r\n*2\r\n%b\r\n$%d\r\n%b\r\n"
                        % (len(key), key, expiry_command, len(key), key)
                        for key in keys
                    )
                    replies = send(payload, 2 * len(keys))
                    now_ms = int(time.time() * 1000) + clock_offset_ms
                    batch: list[tuple[bytes, int, bytes]] = []
                    for index, key in enumerate(keys):
                        payload, ttl = replies[2 * index], replies[2 * index + 1]
                        if payload is None or ttl == -2:
                            # Expired or deleted between SCAN and DUMP.
                            self.vanished += 1
                            continue
                        if ttl < 0:
                            expire_at = -1
                        elif absolute:
                            expire_at = int(ttl)
                        else:
                            expire_at = now_ms + int(ttl)
                        batch.append((key, expire_at, payload))
                    self.key_count += len(batch)
                    yield batch
                if cursor == 0:
                    break
        except redis.RedisError as exc:
            raise BackupError(
                f"the logical dump of Redis at {self.cache.location} failed "
                f"({type(exc).__name__}: {exc}); nothing was stored, run it again"
            ) from exc
        finally:
            if wire is not None:
                wire.close()

    def chunks(self) -> Iterator[bytes]:
        """The dump: a header, one record per key (absolute expiry in ms), and a trailer with the
        record count, so a truncated file is detected."""
        yield _MAGIC
        buffer = bytearray()
        for batch in self.entries():
            for key, expire_at, payload in batch:
                buffer += _RECORD + _RECORD_HEAD.pack(len(key)) + key
                buffer += _EXPIRY.pack(expire_at) + _RECORD_HEAD.pack(len(payload))
                buffer += payload
            if len(buffer) >= _CHUNK:
                yield bytes(buffer)
                buffer.clear()
        yield bytes(buffer) + _END + _COUNT.pack(self.key_count)


class _Reader:
    def __init__(self, chunks: Iterable[bytes], where: str) -> None:
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self._offset = 0
        self.where = where

    def take(self, size: int) -> bytes:
        while len(self._buffer) - self._offset < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                raise BackupVerifyError(f"{self.where}: the dump is truncated")
            del self._buffer[: self._offset]
            self._offset = 0
            self._buffer += chunk
        data = bytes(self._buffer[self._offset : self._offset + size])
        self._offset += size
        return data

    def at_end(self) -> bool:
        if len(self._buffer) > self._offset:
            return False
        return all(not chunk for chunk in self._chunks)


def read_records(chunks: Iterable[bytes], where: str) -> Iterator[tuple[bytes, int, bytes]]:
    """``(key, expire_at_ms or -1, DUMP payload)`` for each record of a logical dump; checks
    the header, the trailer's count and that nothing follows it."""
    reader = _Reader(chunks, where)
    if reader.take(len(_MAGIC)) != _MAGIC:
        raise BackupVerifyError(f"{where}: not an autoops Redis dump")
    count = 0
    while True:
        kind = reader.take(1)
        if kind == _END:
            (expected,) = _COUNT.unpack(reader.take(_COUNT.size))
            if expected != count:
                raise BackupVerifyError(f"{where}: {count} records, the trailer says {expected}")
            if not reader.at_end():
                raise BackupVerifyError(f"{where}: data follows the end of the dump")
            return
        if kind != _RECORD:
            raise BackupVerifyError(f"{where}: damaged record at number {count + 1}")
        (key_length,) = _RECORD_HEAD.unpack(reader.take(_RECORD_HEAD.size))
        key = reader.take(key_length)
        (expire_at,) = _EXPIRY.unpack(reader.take(_EXPIRY.size))
        (payload_length,) = _RECORD_HEAD.unpack(reader.take(_RECORD_HEAD.size))
        yield key, expire_at, reader.take(payload_length)
        count += 1


def any_key_matches(cache: RedisCache, pattern: str) -> bool:
    """Whether the client's database holds a key matching ``pattern``."""
    client = cache.redis
    if pattern == "*":
        return int(client.dbsize()) > 0
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, match=pattern, count=_SCAN_COUNT)
        if keys:
            return True
        if cursor == 0:
            return False


def _refuse_if_holding(cache: RedisCache, pattern: str, *, replace: bool) -> None:
    if replace or not any_key_matches(cache, pattern):
        return
    what = "keys" if pattern == "*" else f"keys matching {pattern!r}"
    raise RestoreRefusedError(
        f"{cache.location} already holds {what}; restore into an empty database or pass "
        "replace=True (--replace) to overwrite the keys the backup also has"
    )


def restore_logical(
    chunks: Iterable[bytes],
    cache: RedisCache,
    pattern: str,
    *,
    replace: bool = False,
    batch: int = 5000,
    progress: Any = None,
) -> list[bytes]:
    """RESTORE every record into the client's database (``REPLACE ABSTTL``); keys already expired
    are skipped. Refuses when keys matching ``pattern`` exist unless ``replace``. Returns the
    restored key names."""
    _refuse_if_holding(cache, pattern, replace=replace)
    return _restore_entries(
        read_records(chunks, "the Redis dump"), cache, batch=batch, progress=progress
    )


def _restore_entries(
    entries: Iterable[tuple[bytes, int, bytes]],
    cache: RedisCache,
    *,
    batch: int = 5000,
    progress: Any = None,
) -> list[bytes]:
    """``RESTORE key ttl payload REPLACE ABSTTL`` for each ``(key, expire_at_ms or -1,
    payload)``, pipelined ``batch`` at a time; keys already expired on the target's clock are
    skipped. Returns the restored key names."""
    restored: list[bytes] = []
    commands: list[bytes] = []
    server_seconds, micros = cache.redis.time()
    clock_offset_ms = server_seconds * 1000 + micros // 1000 - int(time.time() * 1000)
    wire = _Wire(cache) if _has_hiredis() else None

    def flush() -> None:
        if not commands:
            return
        if wire is not None:
            wire.call(b"".join(commands), len(commands))
        else:
            # RESTORE ... REPLACE is idempotent, so the batch may be retried whole.
            cache.send_packed(commands, operation="redis RESTORE")
        commands.clear()

    try:
        for key, expire_at, payload in entries:
            now_ms = int(time.time() * 1000) + clock_offset_ms
            if 0 <= expire_at <= now_ms:
                continue
            ttl = b"0" if expire_at < 0 else b"%d" % expire_at
            commands.append(
                b"*6\r\n$7\r\nRESTORE\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
                b"$7\r\nREPLACE\r\n$6\r\nABSTTL\r\n"
                % (len(key), key, len(ttl), ttl, len(payload), payload)
            )
            restored.append(key)
            if progress is not None:
                progress.advance(len(payload))
            if len(commands) >= batch:
                flush()
        flush()
    finally:
        if wire is not None:
            wire.close()
    return restored
