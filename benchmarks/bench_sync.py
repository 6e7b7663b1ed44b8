"""CacheSync against its peers on the 1,000,000-row users table (password column not synced).

Peers, in one run, same rows and keys, local Redis, no TTL:
  1. the naive loop: one SET round trip per row with json.dumps (on a 100,000-row slice);
  2. the Redis docs' mass insertion: ``mariadb --batch`` building the key and JSON_OBJECT value
     (the same expressions CacheSync uses), a RESP encoder (mawk, the fastest awk here), into
     ``redis-cli --pipe``, timed as a whole pipeline;
  3. CacheSync.run_once() full pass, in a subprocess so its peak RSS can be read.
Peers 2 and 3 also run on ``bulk_users``, the same rows bulk-loaded by one INSERT ... SELECT so
they all share one timestamp (the shape that made the catch-up read every row twice).
Then an incremental pass picking up 1,000 changed rows of a 1,000,000-row copy table.
benchmarks/bench_sync_load.py measures passes under steady writes, quiet and bulk scenes.

    .venv/bin/python benchmarks/bench_sync.py [--rows N]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from urllib.parse import urlsplit

import redis

import autoops
from _users import DATABASE, admin_connection, database_url, ensure_users_table
from autoops.sync._plan import TablePlan

REDIS_URL = os.environ.get("AUTOOPS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NAMESPACE = "autoops_bench_sync"
COLUMNS = ["id", "username", "email", "updated_at"]

CHILD = """
import json, sys, autoops
db = autoops.DbClient.from_url(sys.argv[1])
cache = autoops.CacheClient.from_url(sys.argv[2], namespace=sys.argv[3])
sync = autoops.CacheSync(db, cache, table=sys.argv[4], key="users:{id}", exclude=["password_hash"],
                         updated_column="updated_at", progress=False)
report = sync.run_once(full=True)
print(json.dumps({"rows": report.rows_read, "written": report.keys_written,
                  "seconds": report.duration_seconds, "server_side": report.server_side}))
"""


def clear(client: redis.Redis, namespace: str) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{namespace}:*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def peer_naive(db_url: str, client: redis.Redis, rows: int) -> float:
    """One SET round trip per row, json.dumps: the loop the seed document meant."""
    parts = urlsplit(db_url)
    import pymysql
    import pymysql.cursors

    connection = pymysql.connect(
        host=parts.hostname,
        port=parts.port or 3306,
        user=parts.username or "root",
        database=parts.path.lstrip("/"),
        cursorclass=pymysql.cursors.SSDictCursor,
    )
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM users ORDER BY id LIMIT {rows}")
        for row in cursor:
            client.set(f"{NAMESPACE}:naive:users:{row['id']}", json.dumps(row, default=str))
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


AWK_RESP = (
    'BEGIN { FS = "\\t"; ORS = "" } '
    '{ printf "*3\\r\\n$3\\r\\nSET\\r\\n$%d\\r\\n%s\\r\\n$%d\\r\\n%s\\r\\n", '
    "length($1), $1, length($2), $2 }"
)


def peer_pipe(db_url: str, plan: TablePlan, prefix: str, table: str) -> tuple[float, str]:
    """mariadb --batch | mawk RESP encoder | redis-cli --pipe, timed end to end."""
    pairs = ", ".join(
        f"'{column.name}', {(column.server_json or '').replace('%%', '%')}"
        for column in plan.cached
    )
    sql = f"SELECT CONCAT('{prefix}', id), JSON_OBJECT({pairs}) FROM {table}"
    parts = urlsplit(db_url)
    redis_parts = urlsplit(REDIS_URL)
    pipeline = (
        f"set -o pipefail; mariadb --batch --raw --skip-column-names -h {parts.hostname} "
        f"-P {parts.port or 3306} -u {parts.username or 'root'} {DATABASE} -e {shlex.quote(sql)}"
        f" | LC_ALL=C mawk {shlex.quote(AWK_RESP)}"
        f" | redis-cli -h {redis_parts.hostname} -p {redis_parts.port or 6379}"
        f" -n {redis_parts.path.lstrip('/') or 0} --pipe"
    )
    started = time.perf_counter()
    result = subprocess.run(["bash", "-c", pipeline], capture_output=True, text=True, check=True)
    return time.perf_counter() - started, result.stdout.strip().splitlines()[-1]


def ours(db_url: str, table: str, namespace: str) -> tuple[float, dict[str, object], int]:
    """CacheSync full pass in a child process: wall time, its report, its peak RSS (KiB)."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, db_url, REDIS_URL, namespace, table],
        stdout=subprocess.PIPE,
        env={**os.environ, "AUTOOPS_PROGRESS": "0"},
    )
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"the sync child failed with exit code {child.returncode}")
    return elapsed, json.loads(output), usage.ru_maxrss


def ensure_copy(rows: int) -> None:
    """autoops_bench.sync_users: a copy of users this benchmark may change."""
    connection = admin_connection(DATABASE)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS sync_users LIKE users")
        cursor.execute("SELECT COUNT(*) FROM sync_users")
        (count,) = cursor.fetchone() or (0,)
        if count != rows:
            cursor.execute("TRUNCATE TABLE sync_users")
            cursor.execute("INSERT INTO sync_users SELECT * FROM users")
        else:
            # Undo the previous run's changes, so every run changes the same 1,000 rows of the
            # same table.
            cursor.execute(
                "UPDATE sync_users s JOIN users u ON u.id = s.id "
                "SET s.email = u.email, s.updated_at = u.updated_at "
                "WHERE s.updated_at <> u.updated_at"
            )
    connection.close()


def ensure_bulk(rows: int) -> None:
    """autoops_bench.bulk_users: the users rows, loaded in one statement, one shared timestamp."""
    connection = admin_connection(DATABASE)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bulk_users LIKE users")
        cursor.execute("SELECT COUNT(*), COUNT(DISTINCT updated_at) FROM bulk_users")
        count, stamps = cursor.fetchone() or (0, 0)
        if (count, stamps) != (rows, 1):
            cursor.execute("TRUNCATE TABLE bulk_users")
            cursor.execute(
                "INSERT INTO bulk_users SELECT id, username, email, password_hash, "
                "TIMESTAMP'2026-06-01 00:00:00' FROM users"
            )
    connection.close()


def incremental(db_url: str, changes: int, repeats: int) -> list[tuple[float, int]]:
    db = autoops.DbClient.from_url(db_url)
    cache = autoops.CacheClient.from_url(REDIS_URL, namespace=f"{NAMESPACE}:incr")
    sync = autoops.CacheSync(
        db,
        cache,
        table="sync_users",
        key="users:{id}",
        exclude=["password_hash"],
        updated_column="updated_at",
        progress=False,
    )
    sync.run_once(full=True)
    results = []
    for repeat in range(repeats):
        first = 1 + repeat * 7919
        db.execute(
            "UPDATE sync_users SET email = CONCAT('changed.', email), updated_at = NOW(6) "
            "WHERE id BETWEEN %s AND %s",
            (first, first + changes - 1),
        )
        report = sync.run_once()
        assert report.kind == "incremental"
        results.append((report.duration_seconds, report.rows_read))
    sync.close()
    db.close()
    cache.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--naive-rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="peers run interleaved, N times")
    args = parser.parse_args()
    db_url = ensure_users_table(args.rows)
    client = redis.Redis.from_url(REDIS_URL)
    db = autoops.DbClient.from_url(db_url)
    cache = autoops.CacheClient.from_url(REDIS_URL, namespace=f"{NAMESPACE}:plan")
    plan = autoops.CacheSync(
        db, cache, table="users", key="users:{id}", exclude=["password_hash"]
    ).plan()
    print(f"table {DATABASE}.users: {args.rows:,} rows; cached columns {COLUMNS}")
    print(
        f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores, shared); "
        f"{args.rounds} rounds, peers interleaved in each"
    )
    ensure_bulk(args.rows)
    clear(client, NAMESPACE)
    naive: list[float] = []
    pipe: dict[str, list[float]] = {"users": [], "bulk_users": []}
    sync: dict[str, list[float]] = {"users": [], "bulk_users": []}
    rss: list[float] = []
    for round_number in range(1, args.rounds + 1):
        naive_seconds = peer_naive(db_url, client, args.naive_rows)
        naive.append(args.naive_rows / naive_seconds)
        clear(client, NAMESPACE)
        for table in ("users", "bulk_users"):
            pipe_seconds, summary = peer_pipe(db_url, plan, f"{NAMESPACE}:pipe:users:", table)
            pipe[table].append(args.rows / pipe_seconds)
            clear(client, NAMESPACE)
            sync_seconds, report, rss_kib = ours(db_url, table, f"{NAMESPACE}:ours")
            sync[table].append(args.rows / sync_seconds)
            rss.append(rss_kib / 1024)
            clear(client, NAMESPACE)
            print(
                f"round {round_number} {table:>10}: naive {naive[-1]:>8,.0f} rows/s | mass "
                f"insertion {pipe[table][-1]:>9,.0f} rows/s ({summary}) | CacheSync "
                f"{sync[table][-1]:>9,.0f} rows/s (pass {report['seconds']:.2f} s of "
                f"{sync_seconds:.2f} s wall, {report['rows']:,} rows read, "
                f"{'server-built' if report['server_side'] else 'codec'} values, peak RSS "
                f"{rss[-1]:.0f} MiB) | ratio {sync[table][-1] / pipe[table][-1]:.2f}x / "
                f"{sync[table][-1] / naive[-1]:.1f}x | load {os.getloadavg()[0]:.1f}"
            )
    median = statistics.median
    print(f"peer 1 naive SET loop ({args.naive_rows:,}-row slice): {median(naive):>9,.0f} rows/s")
    for table, shape in (("users", "distinct timestamps"), ("bulk_users", "one shared timestamp")):
        print(f"{table} ({shape}):")
        print(f"  peer 2 mariadb | mawk | redis-cli --pipe: {median(pipe[table]):>9,.0f} rows/s")
        print(
            f"  CacheSync full pass (copy + catch-up + reconcile, process wall time incl. "
            f"start-up): {median(sync[table]):>9,.0f} rows/s"
        )
        print(
            f"  ratio vs peer 2 (mass insertion): "
            f"{median(sync[table]) / median(pipe[table]):5.2f}x  (target >= 1.0x, goal 1.5x)"
        )
    print(f"peak RSS of the CacheSync child: {max(rss):.0f} MiB (target < 150 MiB)")
    print(
        f"ratio vs peer 1 (naive loop)    : {median(sync['users']) / median(naive):5.1f}x  "
        "(target >= 20x)"
    )

    ensure_copy(args.rows)
    runs = incremental(database_url(), 1000, 3)
    clear(client, NAMESPACE)
    times = [seconds for seconds, _ in runs]
    print(
        f"incremental pass, 1,000 changed rows of {args.rows:,}: median "
        f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms over "
        f"{len(runs)} runs (rows read: {runs[0][1]:,}; target < 200 ms)"
    )
    db.close()
    cache.close()


if __name__ == "__main__":
    main()
