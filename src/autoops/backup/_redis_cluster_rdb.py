"""RDB backups of a Redis Cluster: every master's RDB snapshot, taken at once (SYNC on each,
each in a thread of its own), stored as one data file of frames tagged with the master's
number, and one manifest. A restore loads each master's snapshot into a private
``redis-server`` and moves its keys through the target's client, so it restores onto a cluster
of any shape or onto one Redis."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from .._errors import ConfigError
from .._pipeline import read_ahead
from ..cache import CacheClient, ClusterCache, RedisCache
from ._engine import BackupEngine, Capture, RestoreJob
from ._errors import BackupError, BackupVerifyError
from ._model import Backup
from ._redis_cluster import (
    node_client,
    refuse_if_cluster_holds,
    restore_entries_into_cluster,
    slot_table,
)
from ._redis_link import cache_client, redis_client
from ._redis_logical import LogicalDump, _Reader, refuse_if_holding
from ._redis_rdb import RdbSnapshot, _private_server, restore_rdb, verify_rdb_by_loading

__all__ = ["ClusterRdbEngine"]

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


def _master_rdb(chunks: Iterable[bytes], index: int, where: str) -> Iterator[bytes]:
    for kind, number, data in _frames(chunks, where):
        if kind == b"F" and number == index:
            yield data


class ClusterRdbEngine(BackupEngine):
    """Redis Cluster RDB backups (kind ``redis``, format ``cluster-rdb``)."""

    kind = "redis"
    data_format = "cluster-rdb"

    def capture(self, cluster: ClusterCache, *, timeout: float) -> Capture:
        """Every master's RDB snapshot, taken together; a slot table that changed by the end
        fails the backup."""
        table = slot_table(cluster)
        nodes = [(f"{host}:{port}", slots) for (host, port), slots in table.items()]
        clients = [node_client(cluster, host, port) for host, port in table]
        snapshots = [RdbSnapshot(client, timeout=timeout) for client in clients]
        source = cluster.location

        def chunks() -> Iterator[bytes]:
            yield _MAGIC
            streams = {
                index: read_ahead(snapshot.chunks(), 4, name=f"autoops-rdb-{nodes[index][0]}",
                                  join_timeout=None)
                for index, snapshot in enumerate(snapshots)
            }  # fmt: skip
            try:
                while streams:
                    for index, stream in list(streams.items()):
                        chunk = next(stream, None)
                        if chunk is None:
                            del streams[index]
                            yield _FRAME.pack(b"D", index, 0)
                        else:
                            yield _FRAME.pack(b"F", index, len(chunk)) + chunk
            finally:
                for stream in streams.values():
                    stream.close()  # type: ignore[attr-defined]
                for client in clients:
                    client.close()
            if slot_table(cluster) != table:
                raise BackupError(
                    f"the slots of the Redis Cluster at {source} moved during the backup; "
                    "nothing was stored, run it again once the resharding is done"
                )
            yield _FRAME.pack(b"E", len(snapshots), 0)

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

        return Capture(
            kind=self.kind,
            source=source,
            data_format=self.data_format,
            chunks=chunks,
            describe=describe,
            label=f"backup {source}",
        )

    def check_content(
        self, backup: Backup, chunks: Callable[[], Iterable[bytes]], tail: bytes
    ) -> None:
        tails: dict[int, bytes] = {}
        for kind, index, data in _frames(chunks(), backup.data_file):
            if kind == b"F":
                tails[index] = (tails.get(index, b"") + data)[-9:]
            elif len(tails.get(index, b"")) < 9 or tails[index][0] != _RDB_EOF_OPCODE:
                raise BackupVerifyError(
                    f"{backup.data_file}: the RDB of master {index} does not end with its EOF "
                    "marker"
                )

    def restore(self, job: RestoreJob) -> int:
        """Each master's snapshot is loaded by a private ``redis-server`` and its keys are
        RESTOREd through the target's client (a cluster of any shape, or one Redis)."""
        job.check_stored()
        masters = len(job.backup.options.get("cluster", ()))
        where = job.backup.data_file
        if not isinstance(job.target, CacheClient) and "://" not in str(job.target):
            raise ConfigError(
                "a Redis Cluster RDB backup is restored into a Redis client or URL, not written "
                "to a file"
            )
        with cache_client(job.target) as target, job.progress() as progress:
            if not isinstance(target, ClusterCache):
                with redis_client(target) as client:
                    refuse_if_holding(client, "*", replace=job.replace)
                    return sum(
                        restore_rdb(_master_rdb(job.chunks(), index, where), client, 0,
                                    replace=True, progress=progress)
                        for index in range(masters)
                    )  # fmt: skip
            refuse_if_cluster_holds(target, "*", replace=job.replace)
            restored = 0
            for index in range(masters):
                chunks = _master_rdb(job.chunks(), index, where)
                with _private_server(chunks, where, BackupError) as socket_path:
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
        for index in range(len(job.backup.options.get("cluster", ()))):
            verify_rdb_by_loading(
                _master_rdb(job.chunks(), index, job.backup.data_file), job.backup.data_file
            )
