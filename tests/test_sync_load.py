"""CacheSync on production-shaped tables: rows sharing one timestamp, bulk updates, ugly names,
steady writes, transactions held open across passes; each pass reads what changed, once."""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

import pymysql
import pytest
import redis

import autoops
from _support.sync_tables import cached_rows, create_users, expected_cache, make_sync, quote

# The horizon keeps a margin of 2 s behind the oldest open work (see _HORIZON_MARGIN).
SETTLE = 2.5


@pytest.fixture
def users_db(mysql_db: autoops.DbClient) -> autoops.DbClient:
    create_users(mysql_db, 1000)
    return mysql_db


def bulk_update(db: autoops.DbClient) -> None:
    """``UPDATE users SET ...`` of the whole table: every row gets one and the same stamp."""
    db.execute("UPDATE users SET email = CONCAT('b', email), updated_at = NOW(6)")


def test_after_a_bulk_update_sharing_one_timestamp_quiet_passes_read_nothing(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cache, overlap=60)
    sync.run_once()
    bulk_update(users_db)

    bulk = sync.run_once()
    time.sleep(SETTLE)
    settling = sync.run_once()
    quiet = sync.run_once()
    cron = make_sync(users_db, cache, overlap=60).run_once()

    assert (bulk.rows_read, bulk.rows_reread) == (1000, 0)
    assert (settling.rows_read, settling.rows_reread) == (0, 0)
    assert (quiet.rows_read, quiet.rows_reread, quiet.rows_checked) == (0, 0, 0)
    assert (cron.rows_read, cron.rows_reread, cron.rows_checked) == (0, 0, 0)
    assert cached_rows(cache) == expected_cache(users_db)


def test_rows_of_the_last_window_are_compared_not_read_again_in_the_same_process(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cache, overlap=60)
    sync.run_once()
    users_db.execute("UPDATE users SET username = 'x', updated_at = NOW(6) WHERE id <= 10")
    first = sync.run_once()

    again = sync.run_once()
    new_process = make_sync(users_db, cache, overlap=60).run_once()

    assert (first.rows_read, first.rows_reread) == (10, 0)
    # Stamped within the margin of the horizon: the window still holds them.
    assert (again.rows_read, again.rows_reread, again.rows_checked) == (0, 0, 10)
    # A new process does not know which versions were written: it reads them again, and says so.
    assert (new_process.rows_read, new_process.rows_reread) == (0, 10)
    assert "10 read again" in str(new_process)
    assert cached_rows(cache) == expected_cache(users_db)


def test_a_transaction_held_open_across_passes_is_caught_when_it_commits(
    users_db: autoops.DbClient, cache: autoops.CacheClient, mysql_url: str
) -> None:
    sync = make_sync(users_db, cache, overlap=60)
    sync.run_once()
    late_writer = autoops.DbClient.from_url(mysql_url)
    try:
        with late_writer.transaction() as tx:
            tx.execute("UPDATE users SET username = 'late', updated_at = NOW(6) WHERE id = 3")
            for other in (4, 5, 6):
                # Newer changes synced while the transaction stays open longer than a pass
                # interval and longer than the horizon's margin.
                time.sleep(1.2)
                users_db.execute(
                    f"UPDATE users SET username = 'early', updated_at = NOW(6) WHERE id = {other}"
                )
                sync.run_once()
        assert cache.get("users:3")["username"] == "user3"
        assert sync.status().horizon == "open transactions"

        sync.run_once()
    finally:
        late_writer.close()

    assert cache.get("users:3")["username"] == "late"
    assert cached_rows(cache) == expected_cache(users_db)


def test_without_the_process_privilege_a_fixed_delay_bounds_late_commits_and_status_says_so(
    users_db: autoops.DbClient,
    cache: autoops.CacheClient,
    mysql_url: str,
    mysql_admin: pymysql.connections.Connection[pymysql.cursors.Cursor],
) -> None:
    user = f"aot_sync_{os.getpid()}"
    database = mysql_url.rsplit("/", 1)[1]
    with mysql_admin.cursor() as cursor:
        cursor.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'sync-pass'")
        cursor.execute(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'")
    try:
        db = autoops.DbClient.from_url(f"mysql://{user}:sync-pass@127.0.0.1:3306/{database}")
        sync = make_sync(db, cache, overlap=300)
        sync.run_once()
        late_writer = autoops.DbClient.from_url(mysql_url)
        with late_writer.transaction() as tx:
            tx.execute("UPDATE users SET username = 'late', updated_at = NOW(6) WHERE id = 3")
            time.sleep(0.05)
            users_db.execute(
                "UPDATE users SET username = 'early', updated_at = NOW(6) WHERE id = 4"
            )
            sync.run_once()
        late_writer.close()

        sync.run_once()

        assert cache.get("users:3")["username"] == "late"
        assert sync.status().horizon == "fixed delay (no PROCESS privilege)"
        assert cached_rows(cache) == expected_cache(users_db)
        db.close()
    finally:
        with mysql_admin.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")


@pytest.mark.parametrize("table", ["order-items", "usérs"])
def test_bulk_loaded_tables_with_ugly_names_are_read_once_per_change(
    mysql_db: autoops.DbClient, cache: autoops.CacheClient, table: str
) -> None:
    quoted = quote(mysql_db, table)
    mysql_db.execute(
        f"CREATE TABLE {quoted} (id BIGINT PRIMARY KEY, `item-name` VARCHAR(64) NOT NULL,"
        " updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE"
        " CURRENT_TIMESTAMP(6), INDEX (updated_at))"
    )
    mysql_db.executemany(
        f"INSERT INTO {quoted} (id, `item-name`) VALUES (%s, %s)",
        [(i, f"n{i}") for i in range(1, 251)],
    )
    # Bulk INSERT ... SELECT: every new row shares the statement's one timestamp.
    mysql_db.execute(f"INSERT INTO {quoted} (id, `item-name`) SELECT id + 250, 'c' FROM {quoted}")
    key = "oi:{id}"
    columns = ("id", "item-name", "updated_at")
    sync = autoops.CacheSync(
        mysql_db, cache, table=table, key=key, updated_column="updated_at", batch_size=64,
        overlap=60, progress=False,
    )  # fmt: skip

    full = sync.run_once()
    mysql_db.execute(f"UPDATE {quoted} SET `item-name` = CONCAT(`item-name`, '!')")
    incremental = sync.run_once()

    assert (full.rows_read, full.rows_reread) == (500, 0)
    assert (incremental.rows_read, incremental.rows_reread) == (500, 0)
    expected = expected_cache(mysql_db, table=table, columns=columns, key=key)
    assert cached_rows(cache, "oi:") == expected


def test_a_table_under_steady_writes_ends_equal_with_each_change_read_once(
    users_db: autoops.DbClient, cache: autoops.CacheClient, mysql_url: str
) -> None:
    sync = make_sync(users_db, cache, overlap=60)
    sync.run_once()
    stop = threading.Event()
    changes = 0

    def writer() -> None:
        nonlocal changes
        db = autoops.DbClient.from_url(mysql_url)
        rng = random.Random(7)
        while not stop.is_set():
            ids = rng.sample(range(1, 1001), 20)
            marks = ", ".join(["%s"] * len(ids))
            db.execute(
                f"UPDATE users SET username = CONCAT('w', id, '-', {changes}),"
                f" updated_at = NOW(6) WHERE id IN ({marks})",
                ids,
            )
            changes += 1
            time.sleep(0.01)
        db.close()

    thread = threading.Thread(target=writer)
    thread.start()
    reports = []
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            reports.append(sync.run_once())
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    reports.append(sync.run_once())

    assert changes > 20
    assert cached_rows(cache) == expected_cache(users_db)
    assert sum(report.rows_reread for report in reports) == 0


def scrambled_bulk_update(db: autoops.DbClient) -> None:
    """A bulk change whose stamps run in an order unlike the primary keys' (as a migration
    updating rows in another order leaves them): its window is most of the table."""
    db.execute(
        "UPDATE users SET email = CONCAT('s', email),"
        " updated_at = NOW(6) + INTERVAL ((id * 7919) MOD 1000) MICROSECOND"
    )
    db.query("ANALYZE TABLE users")  # the row estimate that decides how a window is read


def test_a_bulk_change_in_another_order_than_the_keys_is_read_once_then_quiet(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cache, overlap=60)
    sync.run_once()
    scrambled_bulk_update(users_db)
    newest = users_db.query_one("SELECT MAX(updated_at) AS at FROM users")

    bulk = sync.run_once()
    time.sleep(SETTLE)
    sync.run_once()
    quiet = sync.run_once()

    assert (bulk.rows_read, bulk.rows_reread) == (1000, 0)
    assert newest is not None
    assert bulk.checkpoint == newest["at"].isoformat()
    assert (quiet.rows_read, quiet.rows_reread, quiet.rows_checked) == (0, 0, 0)
    assert cached_rows(cache) == expected_cache(users_db)


def test_rows_written_while_a_bulk_change_is_read_end_in_the_cache(
    users_db: autoops.DbClient, cache: autoops.CacheClient, mysql_url: str
) -> None:
    sync = make_sync(users_db, cache, overlap=60, batch_size=50)
    sync.run_once()
    scrambled_bulk_update(users_db)
    stop = threading.Event()

    def writer() -> None:
        db = autoops.DbClient.from_url(mysql_url)
        rng = random.Random(3)
        while not stop.is_set():
            db.execute(
                "UPDATE users SET username = CONCAT('w', id, '-', %s), updated_at = NOW(6)"
                " WHERE id = %s",
                [rng.random(), rng.randint(1, 1000)],
            )
        db.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        during = sync.run_once()
    finally:
        stop.set()
        thread.join()
    sync.run_once()

    assert during.rows_read >= 1000
    assert cached_rows(cache) == expected_cache(users_db)


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_the_expiries_of_a_synced_batch_are_spread_by_ttl_jitter(
    users_db: autoops.DbClient, redis_url: str, redis_namespace: str, backend: str
) -> None:
    cache: autoops.CacheClient
    if backend == "redis":
        cache = autoops.CacheClient.from_url(redis_url, namespace=redis_namespace, ttl_jitter=0.5)
    else:
        cache = autoops.MemoryCache(namespace="app", ttl_jitter=0.5)
    make_sync(users_db, cache, ttl=1000, batch_size=1000).run_once()

    if backend == "redis":
        raw = redis.Redis.from_url(redis_url)
        ttls = [raw.pttl(cache.key(f"users:{i}")) / 1000 for i in range(1, 1001)]
        raw.close()
    else:
        assert isinstance(cache, autoops.MemoryCache)
        ttls = [cache.ttl(f"users:{i}") or 0.0 for i in range(1, 1001)]
    cache.close()

    assert all(500 - 5 <= ttl <= 1000 for ttl in ttls)
    assert len({round(ttl) for ttl in ttls}) > 300
    assert min(ttls) < 600
    assert max(ttls) > 900


def test_status_says_how_late_commits_are_bounded(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cache)
    sync.run_once()

    status: Any = sync.status()

    assert status.horizon == "open transactions"
    assert "late commits bounded by" in status._repr_html_()
