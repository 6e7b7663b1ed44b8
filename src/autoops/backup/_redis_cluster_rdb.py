"""RDB backups of a Redis Cluster: every master's RDB snapshot, taken at once (SYNC on each,
each in a thread of its own), stored as one data file per master (a plain RDB, compressed and
encrypted as any) and one manifest listing them with each master's node, slots and key count.

A restore onto a cluster whose masters serve the same slot ranges (the same shape) takes each
master's file straight to the master serving its slots now, all masters at once; onto any other
shape, or one Redis, each snapshot's keys go through the target's client, which routes them.
Either way a private ``redis-server`` loads the snapshot and its keys are RESTOREd, since a
running server takes no RDB over the network. Backups written before one file per master (one
``cluster-rdb`` file of frames tagged with the master's number) are still read."""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from .._errors import ConfigError
from .._pipeline import read_ahead
from ..cache import CacheClient, ClusterCache, RedisCache
from ._engine import BackupEngine, RestoreJob, SplitCapture
from ._errors import BackupError, BackupVerifyError
from ._model import Backup
from ._redis_cluster import (
    each_master_at_once,
    interleave,
    master_parts,
    node_client,
    refuse_if_cluster_holds,
    restore_entries_into_cluster,
    same_shape_owners,
    slot_table,
)
from ._redis_link import cache_client, redis_client
from ._redis_logical import LogicalDump, _Reader, refuse_if_holding
from ._redis_rdb import RdbSnapshot, _private_server, restore_rdb, verify_rdb_by_loading

__all__ = ["ClusterRdbEngine"]

# The older format: one file of frames, every master's RDB in it.
_FRAMED: Final = "cluster-rdb"
_MAGIC: Final = b"AUTOOPS-CLUSTER-RDB 1\n"
# kind (F: a piece of a master's RDB, D: that master's RDB is complete, E: end), master
# number, length of the piece that follows.
_FRAME: Final = struct.Struct(">cHI")
_RDB_EOF_OPCODE: Final = 0xFF


def _frames(chunks: Iterable[bytes], where: str) -> Iterator[tuple[bytes, int, bytes]]:
    """``(kind, master number, data)`` of each frame; checks the header, that every master's
    RDB was completed and that nothing follows the end."""
    reader = _Reader(chunks, where)
    if reader.take(len(_MAGIC)) != _MAGIC:
        raise BackupVerifyError(f"{where}: not an autoops Redis Cluster RDB backup")
    done: set[int] = set()
    while True:
        kind, index, length = _FRAME.unpack(reader.take(_FRAME.size))
        if kind == b"E":
            if index != len(done):
                raise BackupVerifyError(f"{where}: {len(done)} complete RDBs of {index}")
            if not reader.at_end():
                raise BackupVerifyError(f"{where}: data follows the end of the backup")
            return
        if kind not in (b"F", b"D"):
            raise BackupVerifyError(f"{where}: damaged frame")
        if kind == b"D":
            done.add(index)
        yield kind, index, reader.take(length)


def _master_rdb(chunks: Callable[[], Iterable[bytes]], index: int, where: str) -> Iterator[bytes]:
    """One master's RDB out of an older framed file."""
    for kind, number, data in _frames(chunks(), where):
        if kind == b"F" and number == index:
            yield data


class ClusterRdbEngine(BackupEngine):
    """Redis Cluster RDB backups (kind ``redis``, format ``rdb`` with one file per master, or
    the older single ``cluster-rdb`` file)."""

    kind = "redis"
    data_format = "rdb"
    several_files = True

    def handles(self, backup: Backup) -> bool:
        if backup.kind != self.kind:
            return False
        if backup.files:
            return backup.format == self.data_format
        return backup.format == _FRAMED

    def capture(self, cluster: ClusterCache, *, timeout: float) -> SplitCapture:
        """Every master's RDB snapshot, taken together; a slot table that changed by the end
        fails the backup."""
        table = slot_table(cluster)
        nodes = [(f"{host}:{port}", slots) for (host, port), slots in table.items()]
        clients = [node_client(cluster, host, port) for host, port in table]
        snapshots = [RdbSnapshot(client, timeout=timeout) for client in clients]
        source = cluster.location

        def pieces() -> Iterator[tuple[int, bytes]]:
            streams = [
                read_ahead(snapshot.chunks(), 4, name=f"autoops-rdb-{node}", join_timeout=None)
                for (node, _), snapshot in zip(nodes, snapshots, strict=True)
            ]
            try:
                yield from interleave(streams)
            finally:
                for client in clients:
                    client.close()
            if slot_table(cluster) != table:
                raise BackupError(
                    f"the slots of the Redis Cluster at {source} moved during the backup; "
                    "nothing was stored, run it again once the resharding is done"
                )

        def describe() -> dict[str, Any]:
            return {
                "tool": "autoops SYNC (rdb-only) per master",
                "server_version": snapshots[0].server_version if snapshots else "",
                "options": {
                    "mode": "rdb",
                    "db": 0,
                    "cluster": [
                        {"node": node, "slots": [list(r) for r in slots], "key_count": s.key_count}
                        for (node, slots), s in zip(nodes, snapshots, strict=True)
                    ],
                },
                "key_count": sum(snapshot.key_count for snapshot in snapshots),
            }

        return SplitCapture(
            kind=self.kind,
            source=source,
            data_format=self.data_format,
            parts=master_parts(nodes, snapshots),
            pieces=pieces,
            describe=describe,
            label=f"backup {source}",
        )

    def check_content(
        self, backup: Backup, chunks: Callable[[], Iterable[bytes]], tail: bytes
    ) -> None:
        if backup.format == self.data_format:
            # One master's file, seen as a backup of that file alone.
            if len(tail) < 9 or tail[-9] != _RDB_EOF_OPCODE:
                raise BackupVerifyError(
                    f"{backup.data_file}: the RDB does not end with its EOF marker"
                )
            return
        tails: dict[int, bytes] = {}
        for kind, index, data in _frames(chunks(), backup.data_file):
            if kind == b"F":
                tails[index] = (tails.get(index, b"") + data)[-9:]
            elif len(tails.get(index, b"")) < 9 or tails[index][0] != _RDB_EOF_OPCODE:
                raise BackupVerifyError(
                    f"{backup.data_file}: the RDB of master {index} does not end with its EOF "
                    "marker"
                )

    @staticmethod
    def _snapshots(job: RestoreJob) -> list[tuple[str, Callable[[], Iterable[bytes]]]]:
        """Each master's snapshot, as (what it is called in errors, its chunks afresh)."""
        backup = job.backup
        if backup.files:
            return [(f.name, functools.partial(job.file_chunks, f)) for f in backup.files]
        where = backup.data_file
        return [
            (f"{where} (master {index})", functools.partial(_master_rdb, job.chunks, index, where))
            for index in range(len(backup.options.get("cluster", ())))
        ]

    def restore(self, job: RestoreJob) -> int:
        """Onto a cluster of the same shape each master's file goes to the master serving its
        slots, all at once; onto another shape or one Redis each snapshot's keys go through the
        target's client."""
        job.check_stored()
        if not isinstance(job.target, CacheClient) and "://" not in str(job.target):
            raise ConfigError(
                "a Redis Cluster RDB backup is restored into a Redis client or URL, not written "
                "to a file"
            )
        snapshots = self._snapshots(job)
        with cache_client(job.target) as target, job.progress() as progress:
            if not isinstance(target, ClusterCache):
                with redis_client(target) as client:
                    refuse_if_holding(client, "*", replace=job.replace)
                    return sum(
                        restore_rdb(chunks(), client, 0, replace=True, progress=progress)
                        for _, chunks in snapshots
                    )
            refuse_if_cluster_holds(target, "*", replace=job.replace)
            owners = same_shape_owners(job.backup.files, target)
            if owners is not None:
                work = [
                    functools.partial(_restore_snapshot, chunks, progress)
                    for _, chunks in snapshots
                ]
                return sum(each_master_at_once(work, owners, target))
            restored = 0
            for where, chunks in snapshots:
                with _private_server(chunks(), where, BackupError) as socket_path:
                    server = RedisCache(unix_socket_path=socket_path, socket_timeout=60.0)
                    try:
                        batches = read_ahead(LogicalDump(server, "*").entries(), depth=4)
                        entries = (entry for batch in batches for entry in batch)
                        restored += len(
                            restore_entries_into_cluster(entries, target, progress=progress)
                        )
                    finally:
                        server.close()
            return restored

    def test_restore(self, job: RestoreJob) -> None:
        """A private redis-server loads each master's snapshot (checking its CRC64)."""
        for where, chunks in self._snapshots(job):
            verify_rdb_by_loading(chunks(), where)


def _restore_snapshot(
    chunks: Callable[[], Iterable[bytes]], progress: Any, client: RedisCache
) -> int:
    # The refusal was checked on the whole cluster; each master takes only its keys.
    return restore_rdb(chunks(), client, 0, replace=True, progress=progress)
