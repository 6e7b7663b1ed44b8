"""CacheSync into Redis Sentinel and Redis Cluster while the table is written, through a master
SIGKILLed while a batch is on its way: the pass ends, and incremental passes alone (no full
pass, which would rewrite every key and hide an older value left over a newer one) leave the
cache equal to the table. A batch acknowledged by a master that dies before its replica got it,
or a checkpoint ahead of its rows, would leave a row stale here for good."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import autoops
from _support.background import in_background
from _support.redis_topologies import RedisClusterTopology, SentinelTopology
from _support.sync_tables import cached_rows, create_users, expected_cache, make_sync

ROWS = 3000


@contextmanager
def steady_updates(url: str) -> Iterator[Callable[[], int]]:
    """Update rows (a new name and a new ``updated_at``) and insert new ones, each in its own
    autocommit statement, on a connection of its own, until the block ends."""
    count = 0

    def work(stop: threading.Event) -> None:
        nonlocal count
        with autoops.DbClient.from_url(url) as db:
            while not stop.is_set():
                count += 1
                if count % 10 == 0:
                    db.execute(
                        "INSERT INTO users (id, username, email, password_hash)"
                        " VALUES (%s, %s, 'new@example.com', 'x')",
                        (ROWS + count, f"new-{count}"),
                    )
                else:
                    db.execute(
                        "UPDATE users SET username = %s, updated_at = NOW(6) WHERE id = %s",
                        (f"w{count}", 1 + (count * 7919) % ROWS),
                    )
                time.sleep(0.001)

    with in_background(work, "table-writer"):
        yield lambda: count


def while_batch_is_sent(sync: autoops.CacheSync, number: int, fault: Callable[[], None]) -> None:
    """Run ``fault`` in a thread the moment the sync starts sending its ``number``-th batch, so
    it lands while that batch is on its way (or just before or after it: every case must end
    right)."""
    original = sync._write_page
    count = 0

    def write(*args: Any) -> None:
        nonlocal count
        count += 1
        if count == number:
            threading.Thread(target=fault, name="fault").start()
        original(*args)

    sync._write_page = write  # type: ignore[method-assign,assignment]


def _pass_through_the_kill(
    url: str, users_db: autoops.DbClient, cache: autoops.CacheClient, kill: Callable[[], None]
) -> None:
    sync = make_sync(users_db, cache, batch_size=200)
    assert sync.run_once().ok  # the full pass: the checkpoint is now mid-table in time
    with steady_updates(url) as written:
        time.sleep(0.3)
        while_batch_is_sent(sync, 2, kill)
        report = sync.run_once()
        assert report.ok, report
        for _ in range(3):
            assert sync.run_once().ok
    assert written() > 50
    # Only incremental passes from here: whatever the fault left stale stays stale otherwise.
    final = sync.run_once()
    assert final.kind == "incremental"
    assert cached_rows(cache) == expected_cache(users_db)


def test_sentinel_master_killed_while_a_batch_is_sent_under_writes_loses_nothing(
    mysql_url: str,
    mysql_db: autoops.DbClient,
    sentinel: autoops.CacheClient,
    redis_sentinel_topology: SentinelTopology,
) -> None:
    create_users(mysql_db, ROWS)
    before = redis_sentinel_topology.master_port()
    try:
        _pass_through_the_kill(
            mysql_url, mysql_db, sentinel, lambda: redis_sentinel_topology.server(before).kill()
        )
        assert redis_sentinel_topology.master_port() != before
    finally:
        redis_sentinel_topology.restart(before)
        redis_sentinel_topology.wait_settled(seconds=60)


def test_cluster_master_killed_while_a_batch_is_sent_under_writes_loses_nothing(
    mysql_url: str,
    mysql_db: autoops.DbClient,
    cluster: autoops.CacheClient,
    redis_cluster_topology: RedisClusterTopology,
) -> None:
    create_users(mysql_db, ROWS)
    victim = redis_cluster_topology.master_of_key(cluster.key("users:1"))
    try:
        _pass_through_the_kill(
            mysql_url, mysql_db, cluster, lambda: redis_cluster_topology.kill(victim)
        )
        assert victim not in redis_cluster_topology.masters()
    finally:
        redis_cluster_topology.restart(victim)
        redis_cluster_topology.wait_healthy()
