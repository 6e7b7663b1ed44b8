"""Redis logical backups: SCAN + DUMP + PEXPIRETIME or PTTL of the keys matching a pattern,
pipelined, for servers that block SYNC or to take part of a database; restored with
``RESTORE key ttl value REPLACE ABSTTL``."""

from __future__ import annotations

import functools
import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import redis

from .._errors import ConfigError
from .._resp import pack_per_key
from ..cache import CacheClient, ClusterCache, RedisCache
from ..cache._client import escape_glob
from ._engine import BackupEngine, Capture, RestoreJob
from ._errors import BackupError, BackupVerifyError, RestoreRefusedError
from ._model import Backup
from ._redis_link import CHUNK, Link, cache_client, redis_client, server_label

__all__ = [
    "LogicalDump",
    "LogicalEngine",
    "any_key_matches",
    "dump_chunks",
    "read_records",
    "refusal",
    "refuse_if_holding",
    "restore_entries",
    "restore_logical",
]

_MAGIC: Final = b"AUTOOPS-REDIS-DUMP 1\n"
_RECORD: Final = b"K"
_END: Final = b"E"
_RECORD_HEAD: Final = struct.Struct(">I")
_EXPIRY: Final = struct.Struct(">q")
_COUNT: Final = struct.Struct(">Q")
_SCAN_COUNT: Final = 5000


class _Wire:
    """Bulk DUMP/PTTL and RESTORE on a connection of its own: commands go out in one write per
    batch and hiredis parses the replies, several times faster than a redis-py pipeline."""

    def __init__(self, cache: RedisCache, timeout: float = 60.0) -> None:
        # hiredis is optional (speed): only this fast path needs it, after _has_hiredis().
        import hiredis  # noqa: PLC0415

        self._link = Link(cache, timeout)
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
        import hiredis  # noqa: F401, PLC0415  (optional: the fast path is taken only with it)
    except ImportError:
        return False
    return True


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
            commands = (b"DUMP", b"PEXPIRETIME" if absolute else b"PTTL")
            seconds, micros = client.time()
            clock_offset_ms = seconds * 1000 + micros // 1000 - int(time.time() * 1000)
            cursor = 0
            while True:
                cursor, scanned = client.scan(cursor, match=self.pattern, count=_SCAN_COUNT)
                if scanned:
                    keys: list[bytes] = [
                        k.encode() if isinstance(k, str) else bytes(k) for k in scanned
                    ]
                    payload = pack_per_key(commands, keys)
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
        """The dump of :meth:`entries` (see :func:`dump_chunks`)."""
        return dump_chunks(self.entries(), lambda: self.key_count)


def dump_chunks(
    batches: Iterable[list[tuple[bytes, int, bytes]]], count: Callable[[], int]
) -> Iterator[bytes]:
    """A dump: a header, one record per key (absolute expiry in ms), and a trailer with the
    record count (``count()`` once the batches are done), so a truncated file is detected."""
    yield _MAGIC
    buffer = bytearray()
    for batch in batches:
        for key, expire_at, payload in batch:
            buffer += _RECORD + _RECORD_HEAD.pack(len(key)) + key
            buffer += _EXPIRY.pack(expire_at) + _RECORD_HEAD.pack(len(payload))
            buffer += payload
        if len(buffer) >= CHUNK:
            yield bytes(buffer)
            buffer.clear()
    yield bytes(buffer) + _END + _COUNT.pack(count())


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


def refuse_if_holding(cache: RedisCache, pattern: str, *, replace: bool) -> None:
    if replace or not any_key_matches(cache, pattern):
        return
    raise refusal(cache.location, pattern, "an empty database")


def refusal(location: str, pattern: str, empty: str) -> RestoreRefusedError:
    """The error for a restore target at ``location`` already holding keys of ``pattern``;
    ``empty`` names what to restore into instead."""
    what = "keys" if pattern == "*" else f"keys matching {pattern!r}"
    return RestoreRefusedError(
        f"{location} already holds {what}; restore into {empty} or pass "
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
    refuse_if_holding(cache, pattern, replace=replace)
    return restore_entries(
        read_records(chunks, "the Redis dump"), cache, batch=batch, progress=progress
    )


def restore_entries(
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
    # Through the client's retry policy, so a lost server is its clear error, not redis-py's.
    server_seconds, micros = cache._call("redis TIME", cache.redis.time)
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
            # Written as one template with three slots: pack_command takes about 7 times as
            # long per key, and a restore sends one command per key.
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


class LogicalEngine(BackupEngine):
    """Redis logical dumps (kind ``redis``, format ``redis``): one file, or one per Redis
    Cluster master, each a whole dump."""

    kind = "redis"
    data_format = "redis"
    several_files = True

    def handles(self, backup: Backup) -> bool:
        return backup.kind == self.kind and backup.format != "rdb"

    def capture(self, client: RedisCache, pattern: str | None) -> Capture:
        """The keys of ``client``'s database matching ``pattern`` (default: its namespace)."""
        server = server_label(client)
        dump = LogicalDump.for_cache(client, pattern)
        db = client.connection_settings.db
        source = f"{server}/{db}?match={dump.pattern}"

        def describe() -> dict[str, Any]:
            warnings = []
            if dump.vanished:
                warnings.append(f"{dump.vanished} keys expired or were deleted during the scan")
            return {
                "tool": "autoops SCAN+DUMP+PTTL",
                "server_version": dump.server_version,
                "options": {"mode": "logical", "pattern": dump.pattern, "db": db},
                "key_count": dump.key_count,
                "warnings": tuple(warnings),
            }

        return Capture(
            kind=self.kind,
            source=source,
            data_format=self.data_format,
            chunks=dump.chunks,
            describe=describe,
            label=f"backup {source}",
        )

    def check_content(
        self, backup: Backup, chunks: Callable[[], Iterable[bytes]], tail: bytes
    ) -> None:
        for _ in read_records(chunks(), backup.data_file):
            pass

    @staticmethod
    def _restore_into(
        target: CacheClient, job: RestoreJob, pattern: str, *, replace: bool, progress: Any
    ) -> list[bytes]:
        """Every data file's keys into ``target``; the refusal is checked before the first (the
        later files' keys would trip it). A Cluster backup onto a cluster of the same shape
        goes master by master, all at once, each file to the master serving its slots."""
        if isinstance(target, ClusterCache) and job.backup.files:
            # Imported here: the cluster module is built on this one.
            from ._redis_cluster import restore_dumps_per_master, same_shape_owners  # noqa: PLC0415

            owners = same_shape_owners(job.backup.files, target)
            if owners is not None:
                dumps = [job.file_chunks(data_file) for data_file in job.backup.files]
                return restore_dumps_per_master(
                    dumps, owners, target, pattern, replace=replace, progress=progress
                )
        restored: list[bytes] = []
        for number, data_file in enumerate(job.backup.data_files):
            chunks = job.file_chunks(data_file)
            replacing = replace or number > 0
            if isinstance(target, ClusterCache):
                # Imported here: the cluster module is built on this one.
                from ._redis_cluster import restore_into_cluster  # noqa: PLC0415

                restored += restore_into_cluster(
                    chunks, target, pattern, replace=replacing, progress=progress
                )
            else:
                with redis_client(target) as client:
                    restored += restore_logical(
                        chunks, client, pattern, replace=replacing, progress=progress
                    )
        return restored

    def restore(self, job: RestoreJob) -> int:
        """RESTORE the dump's keys into a Redis client or URL's database, or into a Redis
        Cluster (each key to the master owning its slot)."""
        job.check_stored()
        if isinstance(job.target, os.PathLike):
            raise ConfigError("a logical Redis dump is restored into a Redis client or URL")
        pattern = str(job.backup.options.get("pattern", "*"))
        with cache_client(job.target) as target, job.progress() as progress:
            return len(
                self._restore_into(target, job, pattern, replace=job.replace, progress=progress)
            )

    def test_restore(self, job: RestoreJob) -> None:
        """RESTORE into the empty database (or cluster) ``job.target``, check every key
        arrived, then remove them."""
        backup = job.backup
        if job.target is True:
            raise BackupVerifyError(
                "a test restore of a logical Redis dump needs a target: pass restore_test=<Redis "
                "client or URL of an empty database>"
            )
        with cache_client(job.target) as client:
            pattern = str(backup.options.get("pattern", "*"))
            restored = self._restore_into(client, job, pattern, replace=False, progress=None)
            assert isinstance(client, (RedisCache, ClusterCache))
            try:
                for data_file in backup.data_files:
                    expected = sum(
                        1 for _ in read_records(job.file_chunks(data_file), data_file.name)
                    )
                    should = backup.key_count if not backup.files else data_file.key_count
                    if expected != should:
                        raise BackupVerifyError(
                            f"{data_file.name} holds {expected} keys; the manifest says {should}"
                        )
                present = 0
                for start in range(0, len(restored), 1000):
                    batch = restored[start : start + 1000]
                    exists = functools.partial(client.redis.exists, *batch)
                    present += int(client._call("redis EXISTS", exists))
                if present != len(restored):
                    raise BackupVerifyError(
                        f"only {present} of {len(restored)} restored keys are in {client.location}"
                    )
            finally:
                for start in range(0, len(restored), 1000):
                    batch = restored[start : start + 1000]
                    client._call("redis UNLINK", functools.partial(client.redis.unlink, *batch))
