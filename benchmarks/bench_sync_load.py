"""CacheSync under write load, on a 200,000-row copy of the users table (password not synced).

Three scenes, in one run:
  1. steady: a writer thread updates 1,000 rows a second (100 every 0.1 s, autocommit) for 20 s
     while a pass runs every second; rows read per pass against rows changed per interval, pass
     time against the interval, and the cache compared with the table after the writer stops;
  2. quiet: after the late-commit horizon has passed, a pass over a table nobody writes;
  3. bulk: ``UPDATE ... SET`` of all 200,000 rows (one shared timestamp, or with
     ``--scrambled`` stamps in an order unlike the primary keys'), then an incremental pass,
     against a full pass over the same 200,000 rows (its peer), rounds interleaved.

    .venv/bin/python benchmarks/bench_sync_load.py [--rows N] [--seconds S] [--rounds R]
        [--scrambled]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time

import orjson
import redis

import autoops
from _users import DATABASE, admin_connection, database_url, ensure_users_table
from bench_sync import clear

REDIS_URL = os.environ.get("AUTOOPS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NAMESPACE = "autoops_bench_sync_load"
TABLE = "load_users"


def ensure_table(rows: int) -> None:
    """autoops_bench.load_users: the first ``rows`` users, reset to their original values."""
    connection = admin_connection(DATABASE)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cursor.execute(f"CREATE TABLE {TABLE} LIKE users")
        cursor.execute(f"INSERT INTO {TABLE} SELECT * FROM users WHERE id <= %s", (rows,))
    connection.close()


def make_sync(db: autoops.DbClient, cache: autoops.CacheClient) -> autoops.CacheSync:
    return autoops.CacheSync(
        db,
        cache,
        table=TABLE,
        key="users:{id}",
        exclude=["password_hash"],
        updated_column="updated_at",
        progress=False,
    )


def cache_equals_table(db: autoops.DbClient, client: redis.Redis, namespace: str) -> bool:
    rows = db.query(f"SELECT id, username, email, updated_at FROM {TABLE}")
    # As the sync writes them: updated_at is TIMESTAMP(6), so always six fraction digits
    # (a plain JsonCodec drops ".000000", and every row the writer left alone differed).
    codec = autoops.JsonCodec(fraction_digits=6)
    keys = [f"{namespace}:users:{row['id']}" for row in rows]
    for start in range(0, len(keys), 10_000):
        values = client.mget(keys[start : start + 10_000])
        for row, value in zip(rows[start : start + 10_000], values, strict=True):
            if value is None or orjson.loads(value) != orjson.loads(codec.encode(row)):
                return False
    return True


def steady(rows: int, seconds: float, rate: int) -> None:
    db = autoops.DbClient.from_url(database_url())
    namespace = f"{NAMESPACE}:steady"
    cache = autoops.CacheClient.from_url(REDIS_URL, namespace=namespace)
    client = redis.Redis.from_url(REDIS_URL)
    sync = make_sync(db, cache)
    sync.run_once(full=True)
    stop = threading.Event()
    written = 0

    def writer() -> None:
        nonlocal written
        connection = autoops.DbClient.from_url(database_url())
        rng = random.Random(11)
        per_tick = rate // 10
        next_tick = time.monotonic()
        while not stop.is_set():
            ids = rng.sample(range(1, rows + 1), per_tick)
            connection.execute(
                f"UPDATE {TABLE} SET email = CONCAT('w', id, '.', %s, '@example.com'), "
                f"updated_at = NOW(6) WHERE id IN ({', '.join(['%s'] * per_tick)})",
                [written, *ids],
            )
            written += per_tick
            next_tick += 0.1
            time.sleep(max(0.0, next_tick - time.monotonic()))
        connection.close()

    thread = threading.Thread(target=writer)
    reports: list[autoops.SyncReport] = []
    changed: list[int] = []
    thread.start()
    started = time.monotonic()
    before = 0
    while time.monotonic() - started < seconds:
        tick = time.monotonic()
        reports.append(sync.run_once())
        changed.append(written - before)
        before = written
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    stop.set()
    thread.join()
    final = sync.run_once()
    equal = cache_equals_table(db, client, namespace)
    steady_reports = reports[1:]  # the first pass carries what changed since the full pass
    read = [report.rows_read + report.rows_reread for report in steady_reports]
    per_interval = statistics.median(changed[1:])
    durations = [report.duration_seconds for report in steady_reports]
    print(
        f"steady: {rate:,} row updates/s for {seconds:.0f} s, a pass every second "
        f"({len(steady_reports)} passes counted), load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"  rows read per pass: median {statistics.median(read):,.0f} (of which read again: "
        f"{sum(r.rows_reread for r in steady_reports):,} in all), versions checked per pass: "
        f"median {statistics.median(r.rows_checked for r in steady_reports):,.0f}"
    )
    print(
        f"  rows changed per interval: median {per_interval:,.0f} -> ratio "
        f"{statistics.median(read) / per_interval:.2f}x (target <= 1.5x)"
    )
    print(
        f"  pass time: median {statistics.median(durations) * 1000:.0f} ms, max "
        f"{max(durations) * 1000:.0f} ms (interval 1,000 ms); horizon: {sync.status().horizon}"
    )
    print(f"  after the writer stopped: final pass read {final.rows_read:,}; cache equals table: "
          f"{equal}")  # fmt: skip
    sync.close()
    clear(client, namespace)
    client.close()
    cache.close()
    db.close()


def quiet_and_bulk(rows: int, rounds: int, scrambled: bool) -> None:
    db = autoops.DbClient.from_url(database_url())
    client = redis.Redis.from_url(REDIS_URL)
    stamp = "NOW(6)"
    if scrambled:
        stamp = f"NOW(6) + INTERVAL (id * 7919 MOD {rows}) MICROSECOND"
    full_times: list[float] = []
    bulk_times: list[float] = []
    quiet: list[autoops.SyncReport] = []
    for round_number in range(1, rounds + 1):
        # Peer: a full pass over the rows, into an empty namespace.
        namespace = f"{NAMESPACE}:full"
        cache = autoops.CacheClient.from_url(REDIS_URL, namespace=namespace)
        with make_sync(db, cache) as sync:
            full = sync.run_once(full=True)
        full_times.append(full.duration_seconds)
        clear(client, namespace)
        cache.close()
        # Ours: the synced table gets one bulk UPDATE, then an incremental pass.
        namespace = f"{NAMESPACE}:bulk"
        cache = autoops.CacheClient.from_url(REDIS_URL, namespace=namespace)
        with make_sync(db, cache) as sync:
            sync.run_once(full=True)
            db.execute(f"UPDATE {TABLE} SET email = CONCAT('b', email), updated_at = {stamp}")
            bulk = sync.run_once()
            bulk_times.append(bulk.duration_seconds)
            time.sleep(3)  # the horizon (2 s behind the oldest open work) passes the bulk stamp
            sync.run_once()
            quiet.append(sync.run_once())
        cron = make_sync(db, cache)
        quiet.append(cron.run_once())
        cron.close()
        clear(client, namespace)
        cache.close()
        print(
            f"round {round_number}: full pass over {full.rows_read:,} rows "
            f"{full.duration_seconds:.2f} s | bulk incremental pass {bulk.rows_read:,} rows "
            f"(+{bulk.rows_reread:,} again) {bulk.duration_seconds:.2f} s | ratio "
            f"{bulk.duration_seconds / full.duration_seconds:.2f}x | quiet passes read "
            f"{quiet[-2].rows_read + quiet[-2].rows_reread} and "
            f"{quiet[-1].rows_read + quiet[-1].rows_reread} rows | load {os.getloadavg()[0]:.1f}"
        )
    shape = "scrambled stamps" if scrambled else "one shared stamp"
    print(
        f"bulk ({shape}): incremental pass carrying {rows:,} changed rows / full pass "
        f"over {rows:,}: "
        f"{statistics.median(bulk_times) / statistics.median(full_times):.2f}x "
        f"(median {statistics.median(bulk_times):.2f} s / {statistics.median(full_times):.2f} s;"
        f" target <= 1.5x)"
    )
    print(
        f"quiet: rows read per pass after the horizon: max "
        f"{max(r.rows_read + r.rows_reread for r in quiet)} (same process and a new one; "
        f"target < 100)"
    )
    client.close()
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=1000, help="row updates a second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--scrambled", action="store_true", help="bulk stamps in an order unlike the keys'"
    )
    args = parser.parse_args()
    ensure_users_table()
    ensure_table(args.rows)
    print(
        f"table {DATABASE}.{TABLE}: {args.rows:,} rows; load average at start "
        f"{os.getloadavg()[0]:.2f} ({os.cpu_count()} cores, shared machine)"
    )
    steady(args.rows, args.seconds, args.rate)
    ensure_table(args.rows)
    quiet_and_bulk(args.rows, args.rounds, args.scrambled)


if __name__ == "__main__":
    main()
