"""Redis backups: an RDB snapshot over the replication protocol, or a logical dump.

The RDB path speaks to the server as ``redis-cli --rdb`` does (``REPLCONF capa eof``,
``REPLCONF rdb-only 1``, ``SYNC``), so no access to the server's disk is needed. The logical path
(SCAN + DUMP + PEXPIRETIME or PTTL, pipelined) works where SYNC is blocked and can select keys by pattern; it is
restored with ``RESTORE key ttl value REPLACE ABSTTL``.
"""

from __future__ import annotations

import contextlib
import os
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
from ..cache import CacheClient, RedisCache
from ..cache._client import escape_glob
from ..cache._resp import pack_command
from ._errors import BackupError, BackupVerifyError, RestoreRefusedError

__all__ = [
    "LogicalDump",
    "RdbSnapshot",
    "redis_client",
    "restore_logical",
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


def _connection_kwargs(cache: RedisCache) -> dict[str, Any]:
    return dict(cache.redis.connection_pool.connection_kwargs)


def server_label(cache: RedisCache) -> str:
    """``redis://host:port`` (or ``unix:///path``) with no credentials."""
    kwargs = _connection_kwargs(cache)
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


# RDB snapshot ---------------------------------------------------------------------------------


class _Replica:
    """A bare socket speaking just enough of the replication protocol to receive one RDB."""

    def __init__(self, cache: RedisCache, timeout: float) -> None:
        kwargs = _connection_kwargs(cache)
        self.where = server_label(cache)
        try:
            if kwargs.get("path"):
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(kwargs["path"])
            else:
                self.sock = socket.create_connection(
                    (kwargs.get("host", "localhost"), kwargs.get("port", 6379)), timeout=timeout
                )
        except OSError as exc:
            raise BackupError(f"cannot connect to Redis at {self.where}: {exc}") from exc
        self.buffer = b""
        password = kwargs.get("password")
        if password:
            username = kwargs.get("username")
            args = [b"AUTH", *([username.encode()] if username else []), password.encode()]
            try:
                self.command(*args)
            except BaseException:
                self.close()
                raise

    def _fill(self) -> None:
        data = self.sock.recv(_CHUNK)
        if not data:
            raise BackupError(f"Redis at {self.where} closed the connection during the snapshot")
        self.buffer += data

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def command(self, *args: bytes, allow_error: bool = False) -> bytes:
        self.sock.sendall(pack_command(*args))
        reply = self.line()
        if reply.startswith(b"-") and not allow_error:
            name = args[0].decode()
            message = reply[1:].decode("utf-8", "replace")
            raise BackupError(
                f"Redis at {self.where} refused {name}: {message}"
                + (
                    "; check the password"
                    if "AUTH" in message.upper() or name == "AUTH"
                    else "; if SYNC is disabled (managed Redis), use the logical dump instead"
                ),
                tool_message=message,
            )
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class _Wire:
    """A connection of its own for bulk DUMP/PTTL and RESTORE: commands go out in one write per
    batch and hiredis parses the replies, several times faster than a redis-py pipeline."""

    def __init__(self, cache: RedisCache, timeout: float = 60.0) -> None:
        import hiredis

        self._replica = _Replica(cache, timeout)
        self.where = self._replica.where
        self._reader = hiredis.Reader()
        self._error_type = hiredis.ReplyError
        db = int(_connection_kwargs(cache).get("db", 0))
        if db:
            self.call(pack_command(b"SELECT", b"%d" % db), 1)

    def call(self, payload: bytes, count: int) -> list[Any]:
        """Send packed commands and return their ``count`` replies; an error reply raises."""
        sock = self._replica.sock
        try:
            sock.sendall(payload)
            replies: list[Any] = []
            if self._replica.buffer:
                self._reader.feed(self._replica.buffer)
                self._replica.buffer = b""
            gets = self._reader.gets
            while len(replies) < count:
                reply = gets()
                if reply is False:
                    data = sock.recv(_CHUNK)
                    if not data:
                        raise BackupError(f"Redis at {self.where} closed the connection")
                    self._reader.feed(data)
                    continue
                replies.append(reply)
        except OSError as exc:
            raise BackupError(f"the connection to Redis at {self.where} failed: {exc}") from exc
        for reply in replies:
            if isinstance(reply, self._error_type):
                raise BackupError(
                    f"Redis at {self.where} answered: {reply}", tool_message=str(reply)
                )
        return replies

    def close(self) -> None:
        self._replica.close()


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
        info = self.cache.redis.info()
        self.server_version = str(info.get("redis_version", ""))
        self.key_count = sum(
            int(value.get("keys", 0))
            for name, value in info.items()
            if name.startswith("db") and isinstance(value, dict)
        )
        replica = _Replica(self.cache, self.timeout)
        try:
            replica.command(b"REPLCONF", b"capa", b"eof")
            # Redis >= 7 then sends only the RDB, no replication stream after it.
            replica.command(b"REPLCONF", b"rdb-only", b"1", allow_error=True)
            replica.sock.sendall(pack_command(b"SYNC"))
            header = b""
            while not header:
                # The server sends bare newlines as keepalives while it prepares the snapshot.
                replica.buffer = replica.buffer.lstrip(b"\n")
                if not replica.buffer:
                    replica._fill()
                    continue
                header = replica.line()
            if header.startswith(b"-"):
                message = header[1:].decode("utf-8", "replace")
                raise BackupError(
                    f"Redis at {replica.where} refused SYNC: {message}; if replication is blocked "
                    "(managed Redis), use the logical dump instead",
                    tool_message=message,
                )
            if not header.startswith(b"$"):
                raise BackupError(
                    f"Redis at {replica.where} sent {header[:60]!r} instead of an RDB"
                )
            first = b""
            last = b""
            for chunk in self._body(replica, header):
                if len(first) < 9:
                    first += chunk[: 9 - len(first)]
                last = (last + chunk)[-9:]
                yield chunk
        finally:
            replica.close()
        if not first.startswith(_RDB_MAGIC) or len(last) < 9 or last[0] != _RDB_EOF_OPCODE:
            raise BackupError(f"the RDB from {replica.where} is malformed or truncated")

    def _body(self, replica: _Replica, header: bytes) -> Iterator[bytes]:
        if header.startswith(b"$EOF:"):
            mark = header[5:]
            if len(mark) != _EOF_MARK_LENGTH:
                raise BackupError(f"Redis at {replica.where} sent a bad EOF mark")
            pending = replica.buffer
            replica.buffer = b""
            while True:
                if pending.endswith(mark):
                    if len(pending) > _EOF_MARK_LENGTH:
                        yield pending[:-_EOF_MARK_LENGTH]
                    return
                if len(pending) > _CHUNK:
                    keep = len(pending) - _EOF_MARK_LENGTH
                    yield pending[:keep]
                    pending = pending[keep:]
                data = replica.sock.recv(_CHUNK)
                if not data:
                    raise BackupError(f"Redis at {replica.where} closed the connection mid-RDB")
                pending += data
        try:
            remaining = int(header[1:])
        except ValueError:
            raise BackupError(
                f"Redis at {replica.where} sent a bad RDB length {header!r}"
            ) from None
        data = replica.buffer[:remaining]
        replica.buffer = b""
        while True:
            if data:
                remaining -= len(data)
                yield data
            if remaining <= 0:
                return
            data = replica.sock.recv(min(_CHUNK, remaining))
            if not data:
                raise BackupError(f"Redis at {replica.where} closed the connection mid-RDB")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def verify_rdb_by_loading(chunks: Iterable[bytes], where: str) -> int:
    """Load an RDB into a private ``redis-server`` (which checks its CRC64) and return its key
    count; the server and the file are removed afterwards."""
    server = shutil.which("redis-server")
    if server is None:
        raise BackupVerifyError(
            "a test restore of an RDB needs redis-server; install the Debian package redis-server"
        )
    directory = Path(tempfile.mkdtemp(prefix="autoops-rdb-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        path = directory / "dump.rdb"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        port = _free_port()
        argv = [
            server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no",
            "--logfile", str(directory / "redis.log"),
        ]  # fmt: skip
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                log_text = (directory / "redis.log").read_text(errors="replace")
                tail = "\n".join(log_text.strip().splitlines()[-3:])
                raise BackupVerifyError(f"redis-server could not load {where}: {tail}")
            try:
                info = client.info("keyspace")
                break
            except redis.BusyLoadingError:
                pass
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise BackupVerifyError(f"redis-server did not start to load {where}") from None
            time.sleep(0.05)
        client.close()
        return sum(int(v.get("keys", 0)) for v in info.values() if isinstance(v, dict))
    finally:
        if process is not None:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


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

    def chunks(self) -> Iterator[bytes]:
        """The dump: a header, one record per key (absolute expiry in ms), and a trailer with the
        record count, so a truncated file is detected."""
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
            yield _MAGIC
            buffer = bytearray()
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
                        buffer += _RECORD + _RECORD_HEAD.pack(len(key)) + key
                        buffer += _EXPIRY.pack(expire_at) + _RECORD_HEAD.pack(len(payload))
                        buffer += payload
                        self.key_count += 1
                    if len(buffer) >= _CHUNK:
                        yield bytes(buffer)
                        buffer.clear()
                if cursor == 0:
                    break
        except redis.RedisError as exc:
            raise BackupError(
                f"the logical dump of {self.cache.location} failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            if wire is not None:
                wire.close()
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
    if not replace and any_key_matches(cache, pattern):
        raise RestoreRefusedError(
            f"{cache.location} already holds keys matching {pattern!r}; restore into an empty "
            "database or pass replace=True (--replace) to overwrite them"
        )
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
        for key, expire_at, payload in read_records(chunks, "the Redis dump"):
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
