"""CacheSync(source="binlog") into Redis Cluster and Redis Sentinel: the snapshot and the stream
end with the cache equal to the table, also when the cache fails over while a writer keeps
changing rows and the stream is being applied."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import autoops
from _support.binlog import scratch_database, start_row_logged, steady_writer
from _support.mariadb_pair import MariaDbInstance
from _support.redis_topologies import RedisClusterTopology, SentinelTopology
from _support.sync_tables import cached_rows, create_users, expected_cache

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDbInstance]:
    instance = start_row_logged(tmp_path_factory.mktemp("binlog-scaleout"))
    yield instance
    instance.stop()


@pytest.fixture
def users(server: MariaDbInstance) -> Iterator[autoops.DbClient]:
    with scratch_database(server) as client:
        create_users(client, 3000)
        yield client


def binlog_sync(db: autoops.DbClient, cache: autoops.CacheClient) -> autoops.CacheSync:
    return autoops.CacheSync(
        db,
        cache,
        table="users",
        key="users:{id}",
        exclude=["password_hash"],
        batch_size=200,
        progress=False,
        source="binlog",
    )


def stream_through(
    server: MariaDbInstance,
    db: autoops.DbClient,
    cache: autoops.CacheClient,
    fault: Callable[[], Any],
) -> None:
    """Snapshot, then stream while a writer runs and ``fault`` hits the cache mid-stream; a last
    run after the writer stops must leave the cache equal to the table."""
    sync = binlog_sync(db, cache)
    assert sync.run_once().kind == "snapshot"
    assert cached_rows(cache, "users:") == expected_cache(db)
    with steady_writer(server, db.connection_settings.database, max_id=3500, seed=11) as written:
        first = sync.run_once()
        assert first.kind == "stream"
        fault()
        for _ in range(3):
            assert sync.run_once().ok
        assert written() > 0
    assert sync.run_once().ok
    assert cached_rows(cache, "users:") == expected_cache(db)


def test_binlog_sync_into_cluster_through_a_killed_master_ends_equal(
    server: MariaDbInstance,
    users: autoops.DbClient,
    cluster: autoops.CacheClient,
    redis_cluster_topology: RedisClusterTopology,
) -> None:
    victim = redis_cluster_topology.master_of_key(cluster.key("users:1"))
    try:
        stream_through(server, users, cluster, lambda: redis_cluster_topology.kill(victim))
        assert victim not in redis_cluster_topology.masters()
    finally:
        redis_cluster_topology.restart(victim)
        redis_cluster_topology.wait_healthy()


def test_binlog_sync_into_sentinel_through_a_failover_ends_equal(
    server: MariaDbInstance,
    users: autoops.DbClient,
    sentinel: autoops.CacheClient,
    redis_sentinel_topology: SentinelTopology,
) -> None:
    before = redis_sentinel_topology.master_port()
    stream_through(server, users, sentinel, redis_sentinel_topology.failover)
    assert redis_sentinel_topology.master_port() != before
    redis_sentinel_topology.wait_settled()
