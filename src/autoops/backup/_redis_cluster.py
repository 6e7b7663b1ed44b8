"""Logical backups of a Redis Cluster: one SCAN + DUMP pass per master, all at once, each
written as a data file of its own (a logical dump in the same format as a single server's), one
manifest listing them with each master's address, slot ranges and key count. Restored through
the target's own client, which routes every key to the master that owns its slot now, so the
dump restores onto a cluster of any shape or one server."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final, Protocol, TypeVar

import redis
from redis.crc import key_slot

from .._errors import AutoOpsError, ConnectError
from .._pipeline import read_ahead
from .._retry import RetryPolicy
from ..cache import CacheClient, ClusterCache, RedisCache
from ._engine import Part, SplitCapture
from ._errors import BackupError
from ._model import DataFile
from ._redis_logical import LogicalDump, read_records, refusal, restore_entries, restore_logical

__all__ = [
    "cluster_capture",
    "each_master_at_once",
    "interleave",
    "master_parts",
    "node_client",
    "refuse_if_cluster_holds",
    "restore_dumps_per_master",
    "restore_entries_into_cluster",
    "restore_into_cluster",
    "same_shape_owners",
    "slot_table",
]

log: Final = logging.getLogger("autoops.backup")
T = TypeVar("T")

_SCAN_COUNT: Final = 5000
_SLOTS: Final = 16384
# Replies that mean the slot is served elsewhere now (or for a moment not at all).
_REDIRECTIONS: Final = ("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN")


@dataclasses.dataclass
class _Master:
    node: str
    slots: list[tuple[int, int]]
    client: RedisCache
    dump: LogicalDump


def _failed(cluster: ClusterCache, what: str, exc: Exception) -> BackupError:
    return BackupError(
        f"{what} of the Redis Cluster at {cluster.location} failed "
        f"({type(exc).__name__}: {exc}); nothing was stored, run it again"
    )


def slot_table(cluster: ClusterCache) -> dict[tuple[str, int], list[tuple[int, int]]]:
    """Each master's ``(host, port)`` and the slot ranges it serves, as CLUSTER SLOTS says."""
    try:
        # redis-py's stubs say list; RedisCluster returns {(start, end): {"primary": ...}}.
        reply: dict[tuple[int, int], dict[str, Any]] = cluster.redis.cluster_slots()  # type: ignore[assignment]
    except redis.RedisError as exc:
        raise _failed(cluster, "reading the slot table", exc) from exc
    table: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for (start, end), owner in sorted(reply.items()):
        host, port = owner["primary"]
        host = host.decode() if isinstance(host, bytes) else str(host)
        table.setdefault((host, int(port)), []).append((int(start), int(end)))
    return table


def node_client(cluster: ClusterCache, host: str, port: int) -> RedisCache:
    settings = cluster.connection_settings
    client = CacheClient.from_connection_settings(
        settings.server(host, port),
        cluster.namespace,
        retry=RetryPolicy.none(),
    )
    assert isinstance(client, RedisCache)
    return client


def cluster_capture(cluster: ClusterCache, pattern: str | None) -> SplitCapture:
    """The keys matching ``pattern`` (default: the client's namespace) on every master of the
    cluster, one logical dump per master; the slot table is read once at the start and checked
    again at the end, so a resharding during the backup fails it instead of losing or doubling
    keys."""
    table = slot_table(cluster)
    masters: list[_Master] = []
    for (host, port), slots in table.items():
        client = node_client(cluster, host, port)
        masters.append(
            _Master(f"{host}:{port}", slots, client, LogicalDump.for_cache(client, pattern))
        )
    dump_pattern = masters[0].dump.pattern if masters else (pattern or "*")
    source = f"{cluster.location}/0?match={dump_pattern}"

    def pieces() -> Iterator[tuple[int, bytes]]:
        # Every master is scanned at once, each in a thread of its own, so the dumps cover the
        # same stretch of time and the backup takes as long as the largest master, not the sum.
        streams = [
            read_ahead(master.dump.chunks(), 4, name=f"autoops-dump-{master.node}",
                       join_timeout=None)
            for master in masters
        ]  # fmt: skip
        try:
            yield from interleave(streams)
        finally:
            for master in masters:
                master.client.close()
        if slot_table(cluster) != table:
            raise BackupError(
                f"the slots of the Redis Cluster at {cluster.location} moved during the backup; "
                "nothing was stored, run it again once the resharding is done"
            )

    def describe() -> dict[str, Any]:
        vanished = sum(master.dump.vanished for master in masters)
        warnings = [f"{vanished} keys expired or were deleted during the scan"] if vanished else []
        return {
            "tool": "autoops SCAN+DUMP+PTTL",
            "server_version": masters[0].dump.server_version if masters else "",
            "options": {
                "mode": "logical",
                "pattern": dump_pattern,
                "db": 0,
                "cluster": [
                    {
                        "node": master.node,
                        "slots": [list(slot_range) for slot_range in master.slots],
                        "key_count": master.dump.key_count,
                    }
                    for master in masters
                ],
            },
            "key_count": sum(master.dump.key_count for master in masters),
            "warnings": tuple(warnings),
        }

    return SplitCapture(
        kind="redis",
        source=source,
        data_format="redis",
        parts=master_parts(
            [(master.node, master.slots) for master in masters], [m.dump for m in masters]
        ),
        pieces=pieces,
        describe=describe,
        label=f"backup {source}",
    )


def interleave(streams: list[Iterator[bytes]]) -> Iterator[tuple[int, bytes]]:
    """``(stream number, chunk)`` from each stream in turn until all are done; closes the
    streams left when stopped early."""
    live = dict(enumerate(streams))
    try:
        while live:
            for index, stream in list(live.items()):
                chunk = next(stream, None)
                if chunk is None:
                    del live[index]
                else:
                    yield index, chunk
    finally:
        for stream in live.values():
            stream.close()  # type: ignore[attr-defined]


class _Counted(Protocol):
    key_count: int


def _counter(source: _Counted) -> Callable[[], int]:
    return lambda: source.key_count


def master_parts(
    nodes: list[tuple[str, list[tuple[int, int]]]], sources: Sequence[_Counted]
) -> tuple[Part, ...]:
    """The data files of a Cluster backup: ``master-1`` ... one per master, with its node, slot
    ranges and the key count its source (snapshot or dump) has once done."""
    return tuple(
        Part(f"master-{number}", node, tuple(slots), _counter(source))
        for number, ((node, slots), source) in enumerate(zip(nodes, sources, strict=True), 1)
    )


def same_shape_owners(
    files: Sequence[DataFile], target: ClusterCache
) -> list[tuple[str, int]] | None:
    """For each master's file, the target master that serves exactly the slots that master
    served (its address may have changed, e.g. after a failover); None unless every file has
    one and the target has no other master (another shape)."""
    if not files or not all(f.slots for f in files):
        return None
    by_slots = {tuple(slots): owner for owner, slots in slot_table(target).items()}
    owners = [by_slots.get(f.slots) for f in files]
    if any(owner is None for owner in owners) or len(by_slots) != len(owners):
        return None
    return [owner for owner in owners if owner is not None]


def each_master_at_once(
    work: Sequence[Callable[[RedisCache], T]],
    owners: Sequence[tuple[str, int]],
    target: ClusterCache,
) -> list[T]:
    """``work[n]`` given a client of master ``owners[n]``, all at once, a thread each (as the
    backup took them); the results in order."""
    log.info(
        "restoring each master's file into the master serving its slots in %s", target.location
    )

    def run(job: Callable[[RedisCache], T], owner: tuple[str, int]) -> T:
        client = node_client(target, *owner)
        try:
            return job(client)
        except (redis.RedisError, ConnectError) as exc:
            raise BackupError(
                f"the restore into master {owner[0]}:{owner[1]} of the Redis Cluster at "
                f"{target.location} failed ({type(exc).__name__}: {exc}); RESTORE ... REPLACE "
                "is idempotent: run it again with replace=True"
            ) from exc
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(
        max_workers=len(owners), thread_name_prefix="autoops-restore-master"
    ) as pool:
        futures = [pool.submit(run, job, owner) for job, owner in zip(work, owners, strict=True)]
        return [future.result() for future in futures]


def _restore_dump(
    chunks: Iterable[bytes], pattern: str, progress: Any, client: RedisCache
) -> list[bytes]:
    # The refusal was checked on the whole cluster; each master takes only its keys.
    return restore_logical(chunks, client, pattern, replace=True, progress=progress)


def restore_dumps_per_master(
    dumps: Sequence[Iterable[bytes]],
    owners: Sequence[tuple[str, int]],
    cluster: ClusterCache,
    pattern: str,
    *,
    replace: bool,
    progress: Any = None,
) -> list[bytes]:
    """Each master's logical dump into the master serving its slots, all at once; refuses first
    when keys matching ``pattern`` exist on any master, unless ``replace``. Returns the restored
    keys."""
    refuse_if_cluster_holds(cluster, pattern, replace=replace)
    work = [functools.partial(_restore_dump, chunks, pattern, progress) for chunks in dumps]
    return [key for keys in each_master_at_once(work, owners, cluster) for key in keys]


def _holds(cluster: ClusterCache, pattern: str) -> bool:
    client = cluster.redis
    for node in client.get_primaries():  # type: ignore[no-untyped-call]
        connection = client.get_redis_connection(node)
        cursor, keys = connection.scan(0, match=pattern, count=_SCAN_COUNT)
        while not keys and cursor != 0:
            cursor, keys = connection.scan(cursor, match=pattern, count=_SCAN_COUNT)
        if keys:
            return True
    return False


def refuse_if_cluster_holds(cluster: ClusterCache, pattern: str, *, replace: bool) -> None:
    """Raise :class:`RestoreRefusedError` when a master holds a key matching ``pattern``,
    unless ``replace``."""
    try:
        holds = not replace and _holds(cluster, pattern)
    except redis.RedisError as exc:
        raise BackupError(
            f"cannot read the Redis Cluster at {cluster.location}: {type(exc).__name__}: {exc}"
        ) from exc
    if holds:
        raise refusal(cluster.location, pattern, "an empty cluster")


def restore_into_cluster(
    chunks: Iterable[bytes],
    cluster: ClusterCache,
    pattern: str,
    *,
    replace: bool = False,
    progress: Any = None,
) -> list[bytes]:
    """RESTORE every record of a logical dump into the cluster (``REPLACE ABSTTL``), each key
    sent to the master that owns its slot now; keys already expired are skipped. Refuses when
    keys matching ``pattern`` exist on any master unless ``replace``. Returns the restored keys."""
    refuse_if_cluster_holds(cluster, pattern, replace=replace)
    return restore_entries_into_cluster(
        read_records(chunks, "the Redis dump"), cluster, progress=progress
    )


def restore_entries_into_cluster(
    entries: Iterable[tuple[bytes, int, bytes]],
    cluster: ClusterCache,
    *,
    batch: int = 5000,
    progress: Any = None,
) -> list[bytes]:
    """``RESTORE key ttl payload REPLACE ABSTTL`` for each ``(key, expire_at_ms or -1,
    payload)``, each key sent to the master serving its slot, ``batch`` keys of a master at a
    time; keys already expired are skipped. Returns the restored keys.

    The keys are routed here by the slot table read at the start and written as a single
    server's restore writes them (redis-py's cluster pipeline costs several times as much per
    key); a batch answered with a redirection (slots moved since) is sent again through the
    cluster client, which follows it."""
    table = slot_table(cluster)
    owners = list(table)
    owner_of = [0] * _SLOTS
    for number, ranges in enumerate(table.values()):
        for start, end in ranges:
            owner_of[start : end + 1] = [number] * (end - start + 1)
    clients = [node_client(cluster, host, port) for host, port in owners]
    pending: list[list[tuple[bytes, int, bytes]]] = [[] for _ in owners]
    restored: list[bytes] = []

    def flush(number: int) -> None:
        group, pending[number] = pending[number], []
        try:
            restored.extend(restore_entries(group, clients[number], batch=batch, progress=progress))
        except (redis.ResponseError, AutoOpsError) as exc:
            # The reply is a BackupError's tool_message on the hiredis path, else inside the
            # message of the error send_packed raised.
            reply = exc.tool_message if isinstance(exc, BackupError) else str(exc)
            if not any(mark in reply for mark in _REDIRECTIONS):
                raise
            restored.extend(_restore_through_client(group, cluster, batch, progress))

    try:
        for entry in entries:
            number = owner_of[key_slot(entry[0])]
            pending[number].append(entry)
            if len(pending[number]) >= batch:
                flush(number)
        for number in range(len(owners)):
            if pending[number]:
                flush(number)
    except (redis.RedisError, ConnectError) as exc:
        # A master lost mid-restore (its own client's error once retries are spent).
        raise _restore_failed(cluster, exc) from exc
    except BackupError as exc:
        raise BackupError(
            f"the restore into the Redis Cluster at {cluster.location} failed ({exc}); "
            "RESTORE ... REPLACE is idempotent: run it again with replace=True",
            tool_message=exc.tool_message,
        ) from exc
    finally:
        for client in clients:
            client.close()
    return restored


def _restore_failed(cluster: ClusterCache, exc: Exception) -> BackupError:
    return BackupError(
        f"the restore into the Redis Cluster at {cluster.location} failed "
        f"({type(exc).__name__}: {exc}); RESTORE ... REPLACE is idempotent: run it again "
        "with replace=True"
    )


def _restore_through_client(
    entries: Iterable[tuple[bytes, int, bytes]], cluster: ClusterCache, batch: int, progress: Any
) -> list[bytes]:
    """The entries through the cluster client's pipeline, which follows MOVED and ASK (and
    may resend a batch: RESTORE ... REPLACE is idempotent)."""
    restored: list[bytes] = []
    pipeline = cluster.redis.pipeline(transaction=False)  # type: ignore[no-untyped-call]
    pending = 0
    for key, expire_at, payload in entries:
        if 0 <= expire_at <= int(time.time() * 1000):
            continue
        pipeline.execute_command(
            "RESTORE", key, 0 if expire_at < 0 else expire_at, payload, "REPLACE", "ABSTTL"
        )
        restored.append(key)
        pending += 1
        if progress is not None:
            progress.advance(len(payload))
        if pending >= batch:
            pipeline.execute()
            pending = 0
    if pending:
        pipeline.execute()
    return restored
