"""Redis Cluster and Sentinel over TLS, with a password: every server and sentinel is TLS-only
(no plaintext port at all, so nothing can cross the wire in the clear), the cluster bus and
replication too. The cache, the sync, backups and the monitor all work through
``rediss+cluster://`` and ``rediss+sentinel://`` URLs, and the password shows nowhere."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import autoops
from _support.certs import ServerTls, make_server_tls
from _support.redis_topologies import (
    RedisClusterTopology,
    SentinelTopology,
    redis_cluster,
    redis_sentinel,
    scratch_client,
)
from _support.sync_tables import cached_rows, create_users, expected_cache, make_sync
from autoops.monitor import CheckStatus, RedisCheck

# Characters a URL must escape, so the password is shown to survive every hand-over.
PASSWORD = "tls-Scale/0ut@p:ss#2"


def _tls_root(factory: pytest.TempPathFactory, name: str) -> tuple[Path, ServerTls]:
    """A directory for a topology's servers, and a certificate authority made for it."""
    root = factory.mktemp(name)
    (root / "servers").mkdir()
    return root / "servers", make_server_tls(root / "certs")


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterTopology]:
    directory, tls = _tls_root(tmp_path_factory, "tls-cluster")
    with redis_cluster(directory, tls=tls, password=PASSWORD) as topology:
        yield topology


@pytest.fixture(scope="module")
def tls_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    directory, tls = _tls_root(tmp_path_factory, "tls-sentinel")
    with redis_sentinel(directory, tls=tls, password=PASSWORD) as topology:
        yield topology


def test_every_server_and_sentinel_is_tls_only(
    tls_cluster: RedisClusterTopology, tls_sentinel: SentinelTopology
) -> None:
    for server in [*tls_cluster.nodes, *tls_sentinel.servers]:
        with contextlib.closing(server.client()) as raw:
            assert raw.config_get("port") == {"port": "0"}
            assert raw.config_get("tls-port") == {"tls-port": str(server.port)}
    for server in [*tls_cluster.nodes, *tls_sentinel.servers, *tls_sentinel.sentinels]:
        with contextlib.closing(server.client()) as over_tls:
            assert over_tls.ping()
        plain = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2)
        with contextlib.closing(plain), pytest.raises(redis.ConnectionError):
            plain.ping()


def test_the_cache_and_a_sync_work_on_a_tls_cluster(
    tls_cluster: RedisClusterTopology,
    mysql_db: autoops.DbClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    create_users(mysql_db, 2000)
    with scratch_client(tls_cluster.url()) as cache:
        values = {f"order-items:{index}": {"n": 2**53 + index} for index in range(5000)}
        cache.set_many(values)
        assert cache.get_many(list(values)) == values
        sync = make_sync(mysql_db, cache, batch_size=300)
        assert sync.run_once().ok
        mysql_db.execute("UPDATE users SET username = 'tls', updated_at = NOW(6) WHERE id < 50")
        assert sync.run_once().kind == "incremental"
        assert cached_rows(cache) == expected_cache(mysql_db)
        assert cache.delete_prefix("order-items:") == 5000
        shown = [repr(cache), str(cache.connection_settings), caplog.text]
    assert all(PASSWORD not in text for text in shown)


def test_a_tls_cluster_backup_restores_and_the_check_reads_the_cluster(
    tls_cluster: RedisClusterTopology, tmp_path: Path
) -> None:
    with scratch_client(tls_cluster.url()) as cache:
        cache.set_many({f"k:{index}": index for index in range(3000)})
        backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
        backup = backuper.backup_redis(cache, mode="logical")
        assert backup.key_count == 3000
        assert len(backup.files) == 3
        assert PASSWORD not in backup.source
        cache.delete_prefix("")
        assert backuper.restore_redis(backup, cache) == 3000
        assert cache.get("k:2999") == 2999
    result = RedisCheck("cluster", tls_cluster.url()).run()
    assert result.status is CheckStatus.OK, result.summary
    assert "16384 of 16384 slots" in result.summary
    assert PASSWORD not in result.nagios_line()


def test_the_cache_a_sync_a_replica_backup_and_the_check_work_on_a_tls_sentinel_group(
    tls_sentinel: SentinelTopology, mysql_db: autoops.DbClient, tmp_path: Path
) -> None:
    create_users(mysql_db, 1500)
    master = tls_sentinel.master_port()
    with scratch_client(tls_sentinel.url()) as cache:
        sync = make_sync(mysql_db, cache, batch_size=300)
        assert sync.run_once().ok
        assert cached_rows(cache) == expected_cache(mysql_db)
        # An RDB over the replication protocol, from a replica, over TLS with the password.
        backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
        backup = backuper.backup_redis(cache, prefer="replica")
        assert f":{master}" not in backup.source
        assert PASSWORD not in backup.source
        cache.delete_prefix("")
        assert backuper.restore_redis(backup, cache, replace=True) >= 1500
        assert cached_rows(cache) == expected_cache(mysql_db)
    result = RedisCheck("sentinel", tls_sentinel.url()).run()
    assert result.status is CheckStatus.OK, result.summary
    assert "quorum reachable" in result.summary
    assert PASSWORD not in result.nagios_line()
