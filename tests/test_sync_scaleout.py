"""CacheSync into Redis Sentinel and Redis Cluster: passes end with the cache equal to the table,
through a Sentinel failover, a cluster master killed mid-pass and a slot migration mid-pass."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis

import autoops
from _support.redis_topologies import RedisClusterTopology, SentinelTopology
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


def void(_result: object) -> None:
    """Drop a fault's result (``after_write`` takes a callable returning nothing)."""


@pytest.fixture
def users_db(mysql_db: autoops.DbClient) -> autoops.DbClient:
    create_users(mysql_db, 3000)
    return mysql_db


def _change_some_rows(db: autoops.DbClient) -> None:
    db.execute(
        "UPDATE users SET username = CONCAT('renamed-', id), updated_at = NOW(6) WHERE id % 7 = 0"
    )
    db.execute("DELETE FROM users WHERE id % 11 = 0")


# Sentinel ---------------------------------------------------------------------------------------


def test_sync_into_sentinel_leaves_the_checkpoint_on_a_replica_when_the_pass_returns(
    users_db: autoops.DbClient,
    sentinel: autoops.CacheClient,
    redis_sentinel_topology: SentinelTopology,
) -> None:
    sync = make_sync(users_db, sentinel, batch_size=500)
    sync.run_once()
    assert cached_rows(sentinel) == expected_cache(users_db)
    checkpoint = sentinel.key(f"autoops-sync:{sync.name}:checkpoint")
    master = redis_sentinel_topology.master_port()
    holding = []
    for server in redis_sentinel_topology.servers:
        if server.port != master:
            with contextlib.closing(server.client()) as replica:
                holding.append(replica.exists(checkpoint))
    assert any(holding)


def test_sync_into_sentinel_through_a_failover_ends_equal(
    users_db: autoops.DbClient,
    sentinel: autoops.CacheClient,
    redis_sentinel_topology: SentinelTopology,
) -> None:
    sync = make_sync(users_db, sentinel, batch_size=300)
    before = redis_sentinel_topology.master_port()
    after_write(sync, 3, lambda: void(redis_sentinel_topology.failover()))
    report = sync.run_once()
    assert report.ok
    assert redis_sentinel_topology.master_port() != before
    assert cached_rows(sentinel) == expected_cache(users_db)
    _change_some_rows(users_db)
    sync.run_once(full=True)
    assert cached_rows(sentinel) == expected_cache(users_db)
    redis_sentinel_topology.wait_settled()


# Cluster ----------------------------------------------------------------------------------------


def test_sync_into_cluster_full_incremental_and_reconcile_end_equal(
    users_db: autoops.DbClient, cluster: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cluster, batch_size=500)
    first = sync.run_once()
    assert first.kind == "full"
    assert cached_rows(cluster) == expected_cache(users_db)
    _change_some_rows(users_db)
    second = sync.run_once()
    assert second.kind == "incremental"
    sync.reconcile()
    assert cached_rows(cluster) == expected_cache(users_db)


def test_sync_into_cluster_with_a_ttl_and_soft_deletes_ends_equal(
    users_db: autoops.DbClient, cluster: autoops.CacheClient
) -> None:
    users_db.execute("UPDATE users SET deleted = 1, updated_at = NOW(6) WHERE id % 5 = 0")
    sync = make_sync(users_db, cluster, deleted_column="deleted", ttl=600)
    sync.run_once()
    assert cached_rows(cluster) == expected_cache(users_db, deleted_column="deleted")
    raw = cluster.redis  # type: ignore[attr-defined]
    assert 0 < raw.pttl(cluster.key("users:1")) <= 600_000


def test_sync_into_cluster_through_a_master_killed_mid_pass_ends_equal(
    users_db: autoops.DbClient,
    cluster: autoops.CacheClient,
    redis_cluster_topology: RedisClusterTopology,
) -> None:
    sync = make_sync(users_db, cluster, batch_size=300)
    victim = redis_cluster_topology.master_of_key(cluster.key("users:1"))
    after_write(sync, 3, lambda: redis_cluster_topology.kill(victim))
    try:
        report = sync.run_once()
        assert report.ok
        assert victim not in redis_cluster_topology.masters()
        assert cached_rows(cluster) == expected_cache(users_db)
        _change_some_rows(users_db)
        sync.run_once(full=True)
        assert cached_rows(cluster) == expected_cache(users_db)
    finally:
        redis_cluster_topology.restart(victim)
        redis_cluster_topology.wait_healthy()


def test_sync_into_cluster_through_a_slot_migration_ends_equal(
    users_db: autoops.DbClient,
    cluster: autoops.CacheClient,
    redis_cluster_topology: RedisClusterTopology,
) -> None:
    sync = make_sync(users_db, cluster, batch_size=200)
    sync.run_once()
    masters = redis_cluster_topology.masters()
    ids = {}
    for port in masters[:2]:
        with contextlib.closing(redis_cluster_topology.node(port).client()) as client:
            ids[port] = client.cluster("MYID")
    source, target = (
        value.decode() if isinstance(value, bytes) else value for value in ids.values()
    )
    _change_some_rows(users_db)
    users_db.execute("UPDATE users SET updated_at = NOW(6), email = CONCAT('m-', email)")
    command = [
        "redis-cli", "--cluster", "reshard", f"127.0.0.1:{masters[0]}",
        "--cluster-from", source, "--cluster-to", target,
        "--cluster-slots", "1500", "--cluster-yes", "--cluster-pipeline", "10",
    ]  # fmt: skip
    reshard = threading.Thread(
        target=subprocess.run,
        args=(command,),
        kwargs={"capture_output": True, "timeout": 120, "check": True},
    )
    reshard.start()
    try:
        sync.run_once(full=True)
    finally:
        reshard.join()
    redis_cluster_topology.wait_healthy()
    assert cached_rows(cluster) == expected_cache(users_db)


def test_sync_into_cluster_through_a_manual_cluster_failover_ends_equal(
    users_db: autoops.DbClient,
    cluster: autoops.CacheClient,
    redis_cluster_topology: RedisClusterTopology,
) -> None:
    sync = make_sync(users_db, cluster, batch_size=300)
    master = redis_cluster_topology.master_of_key(cluster.key("users:1"))
    (replica,) = redis_cluster_topology.replicas_of(master)

    def failover() -> None:
        with contextlib.closing(redis_cluster_topology.node(replica).client()) as client:
            client.execute_command("CLUSTER FAILOVER")  # type: ignore[no-untyped-call]

    after_write(sync, 3, failover)
    assert sync.run_once().ok
    redis_cluster_topology.wait_healthy()
    assert replica in redis_cluster_topology.masters()
    assert cached_rows(cluster) == expected_cache(users_db)


def _spread(cluster: autoops.CacheClient, topology: RedisClusterTopology, names: list[str]) -> int:
    """How many masters hold at least one of ``names``."""
    return len({topology.master_of_key(cluster.key(name)) for name in names[:200]})


def test_a_cluster_writer_with_an_older_fencing_token_writes_nothing_on_any_node(
    cluster: autoops.CacheClient, redis_cluster_topology: RedisClusterTopology
) -> None:
    lock = cluster.key("autoops-sync:fenced:lock")
    stale = cluster.claim_fences(lock)
    current = cluster.claim_fences(lock)
    assert current > stale
    names = [f"fenced:{index}" for index in range(3_000)]
    assert _spread(cluster, redis_cluster_topology, names) == 3
    items = [(cluster.key(name), b"%d" % index) for index, name in enumerate(names)]
    checkpoint = [(cluster.key("fenced:checkpoint"), b"stale")]
    stale_batch = autoops.FencedBatch.from_items(
        (lock, b"unused"), items, 60_000, [cluster.key("kept")], checkpoint, token=stale
    )
    cluster.set("kept", "still here")
    assert not cluster.write_fenced(stale_batch)
    raw = cluster.get_many_raw([key for key, _ in items] + [checkpoint[0][0]])
    assert raw == [None] * (len(items) + 1)
    assert cluster.get("kept") == "still here"
    fresh = autoops.FencedBatch.from_items(
        (lock, b"unused"), items, 60_000, [cluster.key("kept")], checkpoint, token=current
    )
    assert cluster.write_fenced(fresh)
    assert cluster.get_many_raw([key for key, _ in items]) == [value for _, value in items]
    assert cluster.get("kept") is None
    # A token the counter never gave (its INCR lost in a failover) is refused too, and the
    # next claim jumps past every fence.
    assert not cluster.write_fenced(dataclasses.replace(fresh, token=current - 1))
    assert cluster.claim_fences(lock) > current


def test_a_cluster_sync_paused_past_its_lock_writes_nothing_after_its_successor_took_over(
    users_db: autoops.DbClient, cluster: autoops.CacheClient
) -> None:
    paused = make_sync(users_db, cluster, batch_size=300, name="takeover")
    successor = make_sync(users_db, cluster, batch_size=300, name="takeover")

    raw = cluster.redis  # type: ignore[attr-defined]
    lock = cluster.key("autoops-sync:takeover:lock")

    def lease_lapses_and_a_successor_runs() -> None:
        # What the paused runner sleeps through: its lock expires, the table changes, and a
        # second runner takes the lock and syncs everything. The paused runner's lock value is
        # put back afterwards, as it was when the runner last looked: only the fencing token
        # can tell its writes are stale.
        held = raw.get(lock)
        raw.delete(lock)
        users_db.execute("UPDATE users SET email = CONCAT('new-', email), updated_at = NOW(6)")
        assert successor.run_once(full=True).ok
        raw.set(lock, held, px=60_000)

    after_write(paused, 2, lease_lapses_and_a_successor_runs)
    with pytest.raises(autoops.LockHeldError, match="lost its lock"):
        paused.run_once(full=True)
    # Every row the paused runner had read before the update and tried to write after it was
    # refused on every node: the cache holds the successor's (newer) values only.
    assert cached_rows(cluster) == expected_cache(users_db)


def test_sync_status_reads_back_from_the_cluster(
    users_db: autoops.DbClient, cluster: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cluster)
    sync.run_once()
    status = autoops.read_sync_status(cluster, sync.name)
    assert status.checkpoint is not None


def test_cluster_client_redis_property_is_a_redis_cluster(cluster: autoops.CacheClient) -> None:
    assert isinstance(cluster.redis, redis.RedisCluster)  # type: ignore[attr-defined]
