"""DbClient.stream against a raw pymysql SSCursor loop over the 1,000,000-row users table.

Throughput: both read every row of the same SELECT, alternating, best of N; target at least 0.9x.
Memory: each contender runs in a fresh process per row count and reports its peak RSS, which must
stay flat as the row count grows (a buffered fetchall is shown for contrast).
Run: .venv/bin/python benchmarks/bench_db_stream.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pymysql
import pymysql.cursors

sys.path.insert(0, str(Path(__file__).parent))
import autoops
from _users import admin_connection, ensure_users_table

SQL = "SELECT id, username, email, password_hash, updated_at FROM users WHERE id <= %s"


def raw_stream(limit: int) -> int:
    connection = admin_connection("autoops_bench")
    cursor = connection.cursor(pymysql.cursors.SSCursor)
    cursor.execute(SQL, (limit,))
    count = 0
    for _row in cursor:
        count += 1
    connection.close()
    return count


def ours_stream(url: str, limit: int) -> int:
    with autoops.DbClient.from_url(url) as db:
        count = 0
        for _row in db.stream(SQL, (limit,)):
            count += 1
    return count


def buffered(url: str, limit: int) -> int:
    with autoops.DbClient.from_url(url) as db:
        return len(db.query(SQL, (limit,)))


def child(kind: str, url: str, limit: int) -> None:
    count = {
        "raw": lambda: raw_stream(limit),
        "ours": lambda: ours_stream(url, limit),
        "buffered": lambda: buffered(url, limit),
    }[kind]()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": count, "peak_mib": peak_kib / 1024}))


def peak(kind: str, url: str, limit: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--limit", str(limit)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(json.loads(out)["peak_mib"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child")
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    url = ensure_users_table(1_000_000)
    if args.child:
        child(args.child, url, args.limit)
        return

    raw_wall: list[float] = []
    our_wall: list[float] = []
    raw_cpu: list[float] = []
    our_cpu: list[float] = []
    contenders: list[tuple[Callable[[], int], list[float], list[float]]] = [
        (lambda: raw_stream(args.rows), raw_wall, raw_cpu),
        (lambda: ours_stream(url, args.rows), our_wall, our_cpu),
    ]
    for _ in range(args.rounds):
        for contender, walls, cpus in contenders:
            wall, cpu = time.perf_counter(), time.process_time()
            assert contender() == args.rows
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    # The loop is bound by the client's CPU (pymysql decodes rows in Python); on a shared machine
    # the client's CPU time is the steadier measure, wall time the one users feel.
    print(f"stream {args.rows:,} rows x 5 columns (best of {args.rounds}):")
    table = [
        ("pymysql SSCursor loop", args.rows / min(raw_wall), args.rows / min(raw_cpu)),
        ("DbClient.stream", args.rows / min(our_wall), args.rows / min(our_cpu)),
    ]
    print(f"  {'':22} {'wall rows/s':>12} {'CPU rows/s':>12}")
    for label, wall_rate, cpu_rate in table:
        print(f"  {label:22} {wall_rate:12,.0f} {cpu_rate:12,.0f}")
    wall_ratio = min(raw_wall) / min(our_wall)
    cpu_ratio = min(raw_cpu) / min(our_cpu)
    print(f"  {'ratio (target >= 0.90)':22} {wall_ratio:11.2f}x {cpu_ratio:11.2f}x")

    print("peak RSS by rows read (fresh process each):")
    print(f"  {'rows':>10} {'SSCursor':>10} {'stream':>10} {'fetchall':>10}")
    for limit in (100_000, 300_000, 1_000_000):
        print(
            f"  {limit:>10,} {peak('raw', url, limit):>8.1f}Mi {peak('ours', url, limit):>8.1f}Mi "
            f"{peak('buffered', url, limit):>8.1f}Mi"
        )


if __name__ == "__main__":
    main()
