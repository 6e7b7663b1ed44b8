"""CacheSync under faults, against real MariaDB and Redis: every fault ends with the cache equal
to the table (every key and value), after a retry or a resumed pass."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pymysql
import pytest
import redis

import autoops
from _support.proxy import TcpProxy
from _support.services import REDIS_HOST, REDIS_PORT, redis_test_url
from _support.sync_tables import cached_rows, create_users, expected_cache, make_sync


def after_write(sync: autoops.CacheSync, number: int, fault: Callable[[], None]) -> None:
    """Inject ``fault`` right after the sync's ``number``-th batch write."""
    original = sync._write_page
    count = 0

    def write(*args: Any) -> None:
        nonlocal count
        original(*args)
        count += 1
        if count == number:
            fault()

    sync._write_page = write  # type: ignore[method-assign,assignment]


@pytest.fixture
def users_db(mysql_db: autoops.DbClient) -> autoops.DbClient:
    create_users(mysql_db, 1000)
    return mysql_db


def test_killing_the_database_connection_mid_pass_is_retried(
    users_db: autoops.DbClient,
    cache: autoops.CacheClient,
    mysql_admin: pymysql.connections.Connection[pymysql.cursors.Cursor],
    mysql_url: str,
) -> None:
    autoops.set_testing(True)
    database = mysql_url.rsplit("/", 1)[1]
    killed: list[int] = []

    def kill_sync_connections() -> None:
        with mysql_admin.cursor() as cursor:
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> "
                "CONNECTION_ID()",
                (database,),
            )
            for (connection_id,) in cursor.fetchall():
                cursor.execute(f"KILL CONNECTION {int(connection_id)}")
                killed.append(connection_id)

    sync = make_sync(users_db, cache)
    after_write(sync, 3, kill_sync_connections)

    report = sync.run_once()

    assert killed
    assert report.ok
    assert cached_rows(cache) == expected_cache(users_db)


def test_killing_the_redis_connections_mid_pass_is_retried(
    users_db: autoops.DbClient, redis_url: str, redis_namespace: str, redis_raw: redis.Redis
) -> None:
    autoops.set_testing(True)
    name = f"aot-sync-{uuid.uuid4().hex[:8]}"
    cache = autoops.CacheClient.from_url(redis_url, namespace=redis_namespace, client_name=name)
    killed: list[int] = []

    def client_kill() -> None:
        for client in redis_raw.client_list():
            if client.get("name") == name:
                redis_raw.client_kill_filter(_id=client["id"])
                killed.append(int(client["id"]))

    sync = make_sync(users_db, cache)
    after_write(sync, 3, client_kill)

    sync.run_once()

    assert killed
    assert cached_rows(cache) == expected_cache(users_db)


def test_a_batch_whose_reply_is_lost_is_applied_again_harmlessly(
    users_db: autoops.DbClient,
    redis_namespace: str,
    tcp_proxy: Callable[[str, int], TcpProxy],
) -> None:
    autoops.set_testing(True)
    proxy = tcp_proxy(REDIS_HOST, REDIS_PORT)
    cache = autoops.CacheClient.from_url(redis_test_url(proxy.address), namespace=redis_namespace)
    sync = make_sync(users_db, cache)
    # The next batch reaches Redis and is applied, but the connection dies before its reply.
    after_write(sync, 2, proxy.drop_next_reply)

    sync.run_once()

    assert cached_rows(cache) == expected_cache(users_db)


def test_a_network_outage_longer_than_the_retries_fails_clearly_and_the_next_pass_resumes(
    users_db: autoops.DbClient,
    redis_namespace: str,
    tcp_proxy: Callable[[str, int], TcpProxy],
) -> None:
    autoops.set_testing(True, attempts=2)
    proxy = tcp_proxy(REDIS_HOST, REDIS_PORT)
    cache = autoops.CacheClient.from_url(redis_test_url(proxy.address), namespace=redis_namespace)
    sync = make_sync(users_db, cache, lock_ttl=1)

    def outage() -> None:
        proxy.refuse()
        proxy.drop_all()

    after_write(sync, 2, outage)

    with pytest.raises(autoops.ConnectError, match="cannot reach Redis"):
        sync.run_once()
    proxy.forward()
    time.sleep(1.2)  # the failed runner could not release its lock; it expires
    resumed = make_sync(users_db, cache).run_once()

    assert resumed.resumed
    assert cached_rows(cache) == expected_cache(users_db)


CHILD = """
import sys, time
import autoops
db = autoops.DbClient.from_url(sys.argv[1])
cache = autoops.CacheClient.from_url(sys.argv[2], namespace=sys.argv[3])
sync = autoops.CacheSync(db, cache, table="users", key="users:{id}", exclude=["password_hash"],
                         updated_column="updated_at", batch_size=100, lock_ttl=1, progress=False)
original = sync._write_page
def slow_write(*args):
    original(*args)
    time.sleep(0.05)
sync._write_page = slow_write
sync.run_once()
print("finished")
"""


def test_sigkill_mid_full_pass_then_the_next_pass_resumes_and_ends_equal(
    users_db: autoops.DbClient, cache: autoops.CacheClient, mysql_url: str, redis_url: str
) -> None:
    assert cache.namespace is not None
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mysql_url, redis_url, cache.namespace],
        stdout=subprocess.DEVNULL,
        env={**os.environ, "AUTOOPS_PROGRESS": "0"},
    )
    deadline = time.monotonic() + 30
    cursor = None
    while time.monotonic() < deadline:
        marker = cache.get_raw(cache.key("autoops-sync:users:full-pass"))
        cursor = orjson.loads(marker)["cursor"] if marker else None
        if cursor is not None and cursor >= 300:
            break
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert cursor is not None, "the child never got far enough into its pass"
    # Changes while no sync runs: an update, an insert and a delete in the copied range.
    users_db.execute("UPDATE users SET username = 'changed', updated_at = NOW(6) WHERE id = 5")
    users_db.execute("DELETE FROM users WHERE id = 6")
    assert make_sync(users_db, cache).status().full_pass_in_progress
    time.sleep(1.2)  # the killed runner's lock expires

    report = make_sync(users_db, cache).run_once()

    assert report.resumed
    assert report.rows_read < 1000
    assert cached_rows(cache) == expected_cache(users_db)
    assert not make_sync(users_db, cache).status().full_pass_in_progress
