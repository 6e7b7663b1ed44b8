"""Reads routed to a replica (``replica_ok=True`` on a client with ``replicas``) against the same
reads by a plain client connected to the replica itself: what the routing costs (choosing a
replica, its lag read at most once a second).

Starts a private MariaDB primary + replica pair on loopback (tests/_support/mariadb_pair.py),
point-selects by primary key, alternating the contenders, best of N; target at least 0.9x.
Run: flock /tmp/autoops-bench.lock nice -n 5 .venv/bin/python benchmarks/bench_replica_reads.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import autoops
from _support.mariadb_pair import start_pair

ROWS = 10_000


def timed(read: Callable[[int], object], count: int) -> float:
    started = time.perf_counter()
    for index in range(count):
        read(index % ROWS + 1)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-replica-"))
    primary, replica = start_pair(workdir)
    try:
        setup = autoops.DbClient.from_url(f"mysql://root@127.0.0.1:{primary.port}/")
        setup.execute("CREATE DATABASE bench")
        setup.execute("CREATE TABLE bench.items (id INT PRIMARY KEY, name VARCHAR(40))")
        setup.executemany(
            "INSERT INTO bench.items VALUES (%s, %s)",
            [(i, f"item {i}") for i in range(1, ROWS + 1)],
        )
        setup.close()
        direct = autoops.DbClient.from_url(f"mysql://root@127.0.0.1:{replica.port}/bench")
        routed = autoops.DbClient.from_url(
            f"mysql://root@127.0.0.1:{primary.port}/bench",
            replicas=[f"mysql://127.0.0.1:{replica.port}"],
        )
        deadline = time.monotonic() + 30
        while direct.query_one("SELECT COUNT(*) AS n FROM items") != {"n": ROWS}:
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.1)
        sql = "SELECT id, name FROM items WHERE id = %s"
        contenders: dict[str, Callable[[int], object]] = {
            "plain client on the replica": lambda i: direct.query_one(sql, (i,)),
            "replica_ok=True via the primary's client": lambda i: routed.query_one(
                sql, (i,), replica_ok=True
            ),
        }
        for read in contenders.values():
            timed(read, 500)  # connect and warm up
        best = {name: float("inf") for name in contenders}
        for _ in range(args.rounds):
            for name, read in contenders.items():
                best[name] = min(best[name], timed(read, args.reads))
        for name, seconds in best.items():
            print(f"{name:45} {args.reads / seconds:9,.0f} reads/s")
        ratio = (
            best["plain client on the replica"] / best["replica_ok=True via the primary's client"]
        )
        print(f"routed / plain throughput: {ratio:.2f}x (target >= 0.9x)")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        direct.close()
        routed.close()
    finally:
        replica.stop()
        primary.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
