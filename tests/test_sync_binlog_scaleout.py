"""CacheSync(source="binlog") into Redis Cluster and Redis Sentinel: the snapshot and the stream
end with the cache equal to the table, also when the cache fails over while a writer keeps
changing rows and the stream is being applied."""

from __future__ import annotations

import contextlib
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest

import autoops
from _support.binlog import scratch_database, start_row_logged
from _support.mariadb_pair import MariaDbInstance
from _support.redis_topologies import RedisClusterTopology, SentinelTopology
from _support.sync_tables import cached_rows, create_users, expected_cache

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PATIENT = autoops.RetryPolicy(attempts=60, timeout=90.0, wait_initial=0.1, wait_max=1.0)


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


@pytest.fixture
def cluster(redis_cluster_topology: RedisClusterTopology) -> Iterator[autoops.CacheClient]:
    redis_cluster_topology.wait_healthy()
    client = autoops.CacheClient.from_url(
        redis_cluster_topology.url(), f"aob:{uuid.uuid4().hex[:10]}", retry=PATIENT
    )
    yield client
    with contextlib.suppress(autoops.AutoOpsError):
        client.delete_prefix("")
    client.close()


@pytest.fixture
def sentinel(redis_sentinel_topology: SentinelTopology) -> Iterator[autoops.CacheClient]:
    redis_sentinel_topology.wait_settled()
    client = autoops.CacheClient.from_url(
        redis_sentinel_topology.url(), f"aob:{uuid.uuid4().hex[:10]}", retry=PATIENT
    )
    yield client
    with contextlib.suppress(autoops.AutoOpsError):
        client.delete_prefix("")
    client.close()


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


@contextlib.contextmanager
def writer(server: MariaDbInstance, db: autoops.DbClient) -> Iterator[Callable[[], int]]:
    """Updates, REPLACEs and deletes in their own autocommit transactions until the block ends;
    yields a function giving the number of statements so far."""
    stop = threading.Event()
    count = 0

    def work() -> None:
        nonlocal count
        connection = pymysql.connect(
            host="127.0.0.1",
            port=server.port,
            user="root",
            database=db.connection_settings.database,
            autocommit=True,
        )
        rng = random.Random(11)
        with connection.cursor() as cursor:
            while not stop.is_set():
                pk = rng.randrange(1, 3500)
                action = rng.random()
                if action < 0.5:
                    cursor.execute(
                        "UPDATE users SET username = %s WHERE id = %s", (f"w{count}", pk)
                    )
                elif action < 0.8:
                    cursor.execute(
                        "REPLACE INTO users (id, username, email, password_hash) "
                        "VALUES (%s, %s, 'e', 'p')",
                        (pk, f"r{count}"),
                    )
                else:
                    cursor.execute("DELETE FROM users WHERE id = %s", (pk,))
                count += 1
        connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    try:
        yield lambda: count
    finally:
        stop.set()
        thread.join()


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
    with writer(server, db) as written:
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
