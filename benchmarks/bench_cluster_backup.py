"""Redis Cluster RDB backups: one file per master, and restoring them, side by side in one run.

On a private 6-node cluster (3 masters, 3 replicas, Redis's default 15 s node timeout) holding
``--keys`` JSON values:

1. ``backup_redis(cluster)``: every master's snapshot at once, one data file each (time, size).
2. Restoring onto the same cluster (flushed before each): the per-master files, each straight
   to the master serving its slots, all at once; the same files a master after another, each
   key routed by the slot table (the path any other shape takes, forced here by hiding the same
   shape); that path through redis-py's cluster pipeline instead (how keys were routed before);
   and the same snapshots in the older one-file ``cluster-rdb`` format, a master after another,
   the one file read again for each master. The ratios are each against the first.
3. Restoring the per-master files onto one private redis-server (another shape), for scale.

Both servers are private, started by this script on loopback, so the shared Redis is left alone.

Run: flock /tmp/autoops-bench.lock nice -n 5 .venv/bin/python benchmarks/bench_cluster_backup.py
     [--keys 300000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from unittest import mock

import redis

import autoops
from autoops.backup import _redis_cluster as cluster_backup
from autoops.backup import _redis_cluster_rdb as cluster_rdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _support.old_cluster_backup import framed_copy
from _support.redis_topologies import RedisClusterTopology, redis_cluster
from _support.services import redis_server


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def through_pipeline(
    entries: Iterable[tuple[bytes, int, bytes]],
    cluster: autoops.ClusterCache,
    *,
    batch: int = 5000,
    progress: Any = None,
) -> list[bytes]:
    return cluster_backup._restore_through_client(entries, cluster, batch, progress)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-backup-") as scratch:
        root = Path(scratch)
        for name in ("cluster", "single", "store"):
            (root / name).mkdir()
        with (
            redis_cluster(root / "cluster", node_timeout_ms=15_000) as topology,
            redis_server(root / "single") as single_port,
        ):
            run(topology, single_port, root / "store", args.keys, args.rounds)


def run(
    topology: RedisClusterTopology, single_port: int, store: Path, keys: int, rounds: int
) -> None:
    cluster = autoops.CacheClient.from_url(topology.url())
    cluster.set_many(
        {f"user:{i}": {"id": i, "email": f"user{i}@example.com", "n": i * 7} for i in range(keys)}
    )
    backuper = autoops.Backuper(autoops.LocalStorage(store), progress=False)
    print(f"{keys:,} keys on 3 masters; load average {load()} at the start")

    backups = []
    backup_times = []
    for _ in range(rounds):
        started = time.perf_counter()
        backups.append(backuper.backup_redis(cluster))
        backup_times.append(time.perf_counter() - started)
    backup = backups[-1]
    sizes = ", ".join(f"{f.size / 1e6:.1f} MB" for f in backup.files)
    print(
        f"backup: median {statistics.median(backup_times):.2f} s "
        f"(rounds {', '.join(f'{t:.2f}' for t in backup_times)}); {len(backup.files)} files "
        f"({sizes}); load average {load()}"
    )

    old = backuper.get(framed_copy(backup, store))
    # (label, backup, how): "direct" as the engine chooses; "routed" the path another shape
    # takes (the same shape hidden from the engine); "pipeline" that path through redis-py's
    # cluster pipeline, as autoops routed keys before.
    peers = [
        ("files, per master at once", backup, "direct"),
        ("files, routed in turn", backup, "routed"),
        ("files, redis-py pipeline", backup, "pipeline"),
        ("one framed file, routed", old, "direct"),
    ]
    results: dict[str, list[float]] = {label: [] for label, _, _ in peers}
    for number in range(rounds):
        for label, which, how in peers[number % 4 :] + peers[: number % 4]:
            topology.flush()
            with contextlib.ExitStack() as stack:
                if how != "direct":
                    stack.enter_context(
                        mock.patch.object(cluster_rdb, "same_shape_owners", return_value=None)
                    )
                if how == "pipeline":
                    stack.enter_context(
                        mock.patch.object(
                            cluster_rdb, "restore_entries_into_cluster", through_pipeline
                        )
                    )
                started = time.perf_counter()
                restored = backuper.restore_redis(which, cluster)
                results[label].append(time.perf_counter() - started)
            assert restored == backup.key_count == keys, (label, restored, backup.key_count)
    first = statistics.median(results[peers[0][0]])
    for label, times in results.items():
        print(
            f"restore onto the same cluster, {label:26} median {statistics.median(times):.2f} s "
            f"(rounds {', '.join(f'{t:.2f}' for t in times)}; "
            f"{statistics.median(times) / first:.2f}x the first)"
        )
    print(f"  load average {load()}")

    single_times = []
    for _ in range(rounds):
        with redis.Redis(port=single_port) as single:
            single.flushall()
        started = time.perf_counter()
        restored = backuper.restore_redis(backup, f"redis://127.0.0.1:{single_port}/0")
        single_times.append(time.perf_counter() - started)
        assert restored == keys, restored
    print(
        f"restore onto one Redis: median {statistics.median(single_times):.2f} s "
        f"(rounds {', '.join(f'{t:.2f}' for t in single_times)}); load average {load()}"
    )
    cluster.close()


if __name__ == "__main__":
    main()
