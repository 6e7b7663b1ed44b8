"""What other keys in the same Redis database cost a CacheSync full pass.

A full pass reconciles: it walks the Redis database with SCAN to find the sync's keys whose rows
are gone. SCAN's MATCH filters on the server *after* the walk, so every key of the database is
visited, the sync's or not. This runs a full pass of the users table into a Redis database that
holds only the sync's keys, then into the same database after N unrelated keys were added, and
prints both, the difference, and the cost per million unrelated keys.

    .venv/bin/python benchmarks/bench_sync_unrelated.py [--rows N] [--unrelated N] [--rounds N]

It starts a private redis-server of its own on a free loopback port (no persistence) and stops it
afterwards, so no shared database is filled or flushed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis

import autoops
from _users import DATABASE, ensure_users_table

NAMESPACE = "autoops_bench_unrelated"


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        server = subprocess.Popen(
            [
                *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait()


def full_pass(db_url: str, redis_url: str) -> tuple[float, int]:
    """One full pass; its own duration (not process start-up) and the keys it wrote."""
    db = autoops.DbClient.from_url(db_url)
    cache = autoops.CacheClient.from_url(redis_url, namespace=NAMESPACE)
    sync = autoops.CacheSync(
        db,
        cache,
        table="users",
        key="users:{id}",
        exclude=["password_hash"],
        updated_column="updated_at",
        progress=False,
    )
    try:
        report = sync.run_once(full=True)
    finally:
        sync.close()
        cache.close()
        db.close()
    return report.duration_seconds, report.keys_written


def add_unrelated(client: redis.Redis, count: int) -> None:
    """``count`` small keys outside the sync's namespace, as another app would leave them."""
    pipe = client.pipeline(transaction=False)
    for index in range(count):
        pipe.set(f"otherapp:session:{index}", b"x" * 32)
        if index % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()


def compare(
    db_url: str, redis_url: str, args: argparse.Namespace
) -> tuple[list[float], list[float]]:
    """Per round: a full pass with only the sync's keys, then one beside the unrelated keys."""
    client = redis.Redis.from_url(redis_url)
    print(
        f"table {DATABASE}.users: {args.rows:,} rows into a private redis-server; load average "
        f"{os.getloadavg()[0]:.2f} ({os.cpu_count()} cores, shared)"
    )
    alone: list[float] = []
    crowded: list[float] = []
    for round_number in range(1, args.rounds + 1):
        client.flushdb()
        full_pass(db_url, redis_url)  # fills the database: both timed passes overwrite every key
        seconds, written = full_pass(db_url, redis_url)
        alone.append(seconds)
        add_unrelated(client, args.unrelated)
        crowded_seconds, _ = full_pass(db_url, redis_url)
        crowded.append(crowded_seconds)
        print(
            f"round {round_number}: {written:,} keys; full pass {seconds:.2f} s alone, "
            f"{crowded_seconds:.2f} s beside {args.unrelated:,} unrelated keys | load "
            f"{os.getloadavg()[0]:.1f}"
        )
    client.close()
    return alone, crowded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--unrelated", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.unrelated < 1:
        parser.error("--unrelated must be at least 1")
    db_url = ensure_users_table(args.rows)
    with private_redis() as redis_url:
        alone, crowded = compare(db_url, redis_url, args)
    median_alone = statistics.median(alone)
    median_crowded = statistics.median(crowded)
    extra = median_crowded - median_alone
    print(f"full pass, only the sync's keys in the database: {median_alone:.2f} s (median)")
    print(f"full pass beside {args.unrelated:,} unrelated keys: {median_crowded:.2f} s (median)")
    print(
        f"cost of the unrelated keys: {extra:+.2f} s ({median_crowded / median_alone:.2f}x), "
        f"{extra / (args.unrelated / 1e6):+.2f} s per million"
    )


if __name__ == "__main__":
    main()
