"""CacheSync from the binary log against the polling sync, side by side, on a private MariaDB
with a row-based binary log (the shared server has none), started and stopped by this script.

Two scenes, in one run:
  1. steady: a writer changes ``--rate`` rows a second (50-row UPDATEs, autocommit) for
     ``--seconds`` while the sync follows in a process of its own (binlog: run_forever;
     polling: passes back to back, updated_column). A reader polls Redis for one key of each
     statement and records the time from the statement's commit to the key's new value: lag p50
     and p99. CPU seconds of mariadbd and of the sync process per second of load;
  2. backlog: ``--backlog`` row changes (UPDATEs of 10,000 rows per transaction) made while no
     sync runs, then one ``run_once`` catches up: row events applied per second (binlog), against
     the incremental polling pass over the same changes (it reads each changed row once);
  3. decode: the row events of that backlog's first 50,000 changes read from the log and decoded
     by python-mysql-replication's own decoder and by autoops's (``_binlog_rows``), three rounds
     interleaved: the part of the binlog sync's time that is decoding, and the ratio.

    flock /tmp/autoops-bench.lock nice -n 5 .venv/bin/python benchmarks/bench_sync_binlog.py \\
        [--rows N] [--rate R] [--seconds S] [--backlog B]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pymysql
import redis
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import UpdateRowsEvent

import autoops
from autoops.sync._binlog_stream import _changes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _support.binlog import start_row_logged
from _support.mariadb_pair import MariaDbInstance

REDIS_URL = os.environ.get("AUTOOPS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NAMESPACE = "autoops_bench_sync_binlog"
DATABASE = "bench"
STATEMENT_ROWS = 50

FOLLOWER = """
import sys, autoops
db = autoops.DbClient.from_url(sys.argv[1])
cache = autoops.CacheClient.from_url(sys.argv[2], namespace=sys.argv[3])
options = dict(table="users", key="users:{id}", exclude=["password_hash"], progress=False)
if sys.argv[4] == "binlog":
    sync = autoops.CacheSync(db, cache, source="binlog", **options)
    sync.run_forever()
else:
    sync = autoops.CacheSync(db, cache, updated_column="updated_at", **options)
    sync.run_forever(interval=0, jitter=0)
"""


def connect(server: MariaDbInstance) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    return pymysql.connect(
        host="127.0.0.1", port=server.port, user="root", database=DATABASE, autocommit=True
    )


def create_table(server: MariaDbInstance, rows: int) -> None:
    connection = pymysql.connect(host="127.0.0.1", port=server.port, user="root", autocommit=True)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        cursor.execute(f"DROP TABLE IF EXISTS {DATABASE}.users")
        cursor.execute(
            f"CREATE TABLE {DATABASE}.users (id BIGINT PRIMARY KEY, username VARCHAR(64) NOT NULL, "
            "email VARCHAR(128) NOT NULL, password_hash CHAR(60) NOT NULL, updated_at "
            "TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), "
            "INDEX (updated_at))"
        )
        cursor.execute(
            f"INSERT INTO {DATABASE}.users (id, username, email, password_hash) "
            "SELECT seq, CONCAT('user', seq), CONCAT('user', seq, '@example.com'), "
            f"REPEAT('x', 60) FROM {DATABASE}.seq_1_to_{rows}"
        )
    connection.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def clear(client: redis.Redis, namespace: str) -> None:
    keys = list(client.scan_iter(match=f"{namespace}:*", count=10_000))
    for start in range(0, len(keys), 10_000):
        client.unlink(*keys[start : start + 10_000])


def steady(
    server: MariaDbInstance, mode: str, rows: int, rate: int, seconds: float
) -> dict[str, float]:
    """Lag percentiles and CPU use with a follower of ``mode`` under ``rate`` row changes/s."""
    namespace = f"{NAMESPACE}:{mode}"
    client = redis.Redis.from_url(REDIS_URL)
    clear(client, namespace)
    url = f"{server.url}{DATABASE}"
    follower = subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, url, REDIS_URL, namespace, mode],
        stderr=subprocess.DEVNULL,
    )
    cache = autoops.CacheClient.from_url(REDIS_URL, namespace=namespace)
    db = autoops.DbClient.from_url(url)
    try:
        sync = autoops.CacheSync(db, cache, table="users", key="users:{id}")
        while sync.status().last_success_at is None:
            time.sleep(0.1)
        samples: dict[str, tuple[str, float]] = {}
        lags: list[float] = []
        stop = threading.Event()
        lock = threading.Lock()
        done = 0

        def writer() -> None:
            nonlocal done
            connection = connect(server)
            interval = STATEMENT_ROWS / rate
            start = time.perf_counter()
            sequence = 0
            with connection.cursor() as cursor:
                while not stop.is_set():
                    sequence += 1
                    first = (sequence * STATEMENT_ROWS * 7919) % (rows - STATEMENT_ROWS) + 1
                    value = f"v{sequence}"
                    cursor.execute(
                        "UPDATE users SET username = %s WHERE id BETWEEN %s AND %s",
                        (value, first, first + STATEMENT_ROWS - 1),
                    )
                    with lock:
                        samples[f"{namespace}:users:{first}"] = (value, time.perf_counter())
                    done += STATEMENT_ROWS
                    delay = start + sequence * interval - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
            connection.close()

        def reader() -> None:
            while True:
                with lock:
                    pending = list(samples.items())
                if stop.is_set() and (not pending or time.perf_counter() - stopped_at[0] > 30):
                    return
                if not pending:
                    time.sleep(0.002)
                    continue
                values = client.mget([key for key, _ in pending])
                now = time.perf_counter()
                with lock:
                    for (key, sample), cached in zip(pending, values, strict=True):
                        if cached is not None and orjson.loads(cached)["username"] == sample[0]:
                            lags.append(now - sample[1])
                            # A later statement on the same key has replaced the sample.
                            if samples.get(key) == sample:
                                del samples[key]
                time.sleep(0.005)

        stopped_at = [0.0]
        mysqld_before = cpu_seconds(server.process.pid)  # type: ignore[union-attr]
        sync_before = cpu_seconds(follower.pid)
        threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
        clock = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        stopped_at[0] = time.perf_counter()
        threads[0].join()
        elapsed = time.perf_counter() - clock
        threads[1].join()
        mysqld = cpu_seconds(server.process.pid) - mysqld_before  # type: ignore[union-attr]
        sync_cpu = cpu_seconds(follower.pid) - sync_before
        lags.sort()
        return {
            "rows_per_s": done / elapsed,
            "p50": statistics.median(lags) if lags else float("nan"),
            "p99": lags[int(len(lags) * 0.99)] if lags else float("nan"),
            "samples": float(len(lags)),
            "unseen": float(len(samples)),
            "mysqld_cpu": mysqld / elapsed,
            "sync_cpu": sync_cpu / elapsed,
        }
    finally:
        follower.terminate()
        follower.wait()
        cache.close()
        db.close()
        clear(client, namespace)


def backlog(server: MariaDbInstance, rows: int, changes: int) -> dict[str, float]:
    """Catch-up speed after ``changes`` row changes made while no sync ran, both modes."""
    url = f"{server.url}{DATABASE}"
    client = redis.Redis.from_url(REDIS_URL)
    results: dict[str, float] = {}
    db = autoops.DbClient.from_url(url)
    caches = {
        mode: autoops.CacheClient.from_url(REDIS_URL, namespace=f"{NAMESPACE}:b-{mode}")
        for mode in ("binlog", "poll")
    }
    options: dict[str, Any] = {"table": "users", "key": "users:{id}", "exclude": ["password_hash"]}
    syncs = {
        "binlog": autoops.CacheSync(
            db, caches["binlog"], source="binlog", progress=False, **options
        ),
        "poll": autoops.CacheSync(
            db, caches["poll"], updated_column="updated_at", progress=False, **options
        ),
    }
    for mode, sync in syncs.items():
        clear(client, f"{NAMESPACE}:b-{mode}")
        sync.run_once()
    connection = connect(server)
    made = 0
    clock = time.perf_counter()
    with connection.cursor() as cursor:
        while made < changes:
            low = made % rows + 1
            high = min(rows, low + 10_000 - 1)
            cursor.execute(
                "UPDATE users SET username = CONCAT('b', id, '-', %s) WHERE id BETWEEN %s AND %s",
                (made, low, high),
            )
            made += high - low + 1
    results["made_seconds"] = time.perf_counter() - clock
    connection.close()
    for mode, sync in syncs.items():
        clock = time.perf_counter()
        report = sync.run_once()
        seconds = time.perf_counter() - clock
        results[f"{mode}_seconds"] = seconds
        results[f"{mode}_read"] = float(report.rows_read)
    results["changes"] = float(made)
    for cache in caches.values():
        cache.close()
    db.close()
    for mode in syncs:
        clear(client, f"{NAMESPACE}:b-{mode}")
    return results


def decode(server: MariaDbInstance, start: tuple[str, int], events: int) -> None:
    """Decode the first ``events`` row changes after ``start``: the library against autoops."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(3):
        for fast in (False, True):
            clock = time.perf_counter()
            stream = BinLogStreamReader(
                {"host": "127.0.0.1", "port": server.port, "user": "root", "passwd": ""},
                server_id=4_100_000_000 + fast,
                log_file=start[0],
                log_pos=start[1],
                resume_stream=True,
                only_events=[UpdateRowsEvent],
                enable_logging=False,
            )
            count = 0
            for event in stream:
                count += sum(1 for _ in _changes(event)) if fast else len(event.rows)
                if count >= events:
                    break
            stream.close()
            times[fast].append((time.perf_counter() - clock) / count)
    library, ours = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"decode {events:,} UPDATE row events: library {1 / library:,.0f}/s, autoops "
        f"{1 / ours:,.0f}/s (median of 3 interleaved rounds; {library / ours:.1f}x)",
        flush=True,
    )


def binlog_end(server: MariaDbInstance) -> tuple[str, int]:
    connection = connect(server)
    with connection.cursor() as cursor:
        cursor.execute("SHOW MASTER STATUS")
        row = cursor.fetchone()
    connection.close()
    assert row is not None
    return str(row[0]), int(row[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-binlog-") as workdir:
        server = start_row_logged(Path(workdir), "--innodb-buffer-pool-size=256M")
        try:
            create_table(server, args.rows)
            print(f"load average before: {os.getloadavg()}")
            for mode in ("binlog", "poll"):
                result = steady(server, mode, args.rows, args.rate, args.seconds)
                print(
                    f"steady {mode:6}: {result['rows_per_s']:,.0f} row changes/s for "
                    f"{args.seconds:.0f} s, lag p50 {result['p50'] * 1000:,.0f} ms, p99 "
                    f"{result['p99'] * 1000:,.0f} ms ({result['samples']:.0f} samples, "
                    f"{result['unseen']:.0f} never seen), mariadbd CPU "
                    f"{result['mysqld_cpu']:.2f} s/s, sync CPU {result['sync_cpu']:.2f} s/s",
                    flush=True,
                )
            print(f"load average: {os.getloadavg()}", flush=True)
            start = binlog_end(server)
            result = backlog(server, args.rows, args.backlog)
            changes = result["changes"]
            binlog_rate = changes / result["binlog_seconds"]
            print(
                f"backlog of {changes:,.0f} row changes (made in {result['made_seconds']:.1f} s): "
                f"binlog applied them in {result['binlog_seconds']:.1f} s "
                f"({binlog_rate:,.0f} row events/s); polling caught up in "
                f"{result['poll_seconds']:.1f} s reading {result['poll_read']:,.0f} rows "
                f"(ratio binlog/poll time {result['binlog_seconds'] / result['poll_seconds']:.1f}x)"
            )
            print(f"load average: {os.getloadavg()}", flush=True)
            decode(server, start, min(50_000, args.backlog))
            print(f"load average after: {os.getloadavg()}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
