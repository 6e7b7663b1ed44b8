"""Redis backups on Sentinel (from a replica when asked) and the Cluster refusal."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import autoops
from _support.redis_topologies import RedisClusterTopology, SentinelTopology


@pytest.fixture
def sentinel(redis_sentinel_topology: SentinelTopology) -> Iterator[autoops.CacheClient]:
    redis_sentinel_topology.wait_settled()
    client = autoops.CacheClient.from_url(
        redis_sentinel_topology.url(), f"aot:{uuid.uuid4().hex[:10]}"
    )
    yield client
    with contextlib.suppress(autoops.AutoOpsError):
        client.delete_prefix("")
    client.close()


def _full_syncs(topology: SentinelTopology, port: int) -> int:
    with contextlib.closing(topology.server(port).client()) as client:
        return int(client.info("stats")["sync_full"])


def test_a_logical_backup_from_a_replica_restores_every_key(
    tmp_path: Path, sentinel: autoops.CacheClient, redis_sentinel_topology: SentinelTopology
) -> None:
    sentinel.set_many({f"usérs:{index}": {"id": index} for index in range(500)})
    sentinel.redis.wait(2, 5000)  # type: ignore[attr-defined]
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_redis(sentinel, mode="logical", prefer="replica")
    master = redis_sentinel_topology.master_port()
    assert f":{master}" not in backup.source
    assert backup.key_count == 500
    sentinel.delete_prefix("")
    assert backuper.restore_redis(backup, sentinel) == 500
    assert sentinel.get("usérs:499") == {"id": 499}


def test_an_rdb_backup_from_a_replica_leaves_the_master_alone(
    tmp_path: Path, sentinel: autoops.CacheClient, redis_sentinel_topology: SentinelTopology
) -> None:
    sentinel.set_many({f"k:{index}": index for index in range(200)})
    sentinel.redis.wait(2, 5000)  # type: ignore[attr-defined]
    master = redis_sentinel_topology.master_port()
    before = _full_syncs(redis_sentinel_topology, master)
    backup = autoops.Backuper(autoops.LocalStorage(tmp_path)).backup_redis(
        sentinel, prefer="replica"
    )
    assert _full_syncs(redis_sentinel_topology, master) == before
    assert backup.key_count is not None
    assert backup.key_count >= 200


def test_prefer_replica_on_one_server_is_a_config_error(
    tmp_path: Path, cache: autoops.CacheClient
) -> None:
    with pytest.raises(autoops.ConfigError, match="redis\\+sentinel"):
        autoops.Backuper(autoops.LocalStorage(tmp_path)).backup_redis(cache, prefer="replica")


def test_a_cluster_backup_is_refused_with_what_to_do(
    tmp_path: Path, redis_cluster_topology: RedisClusterTopology
) -> None:
    with pytest.raises(autoops.ConfigError, match="each master with its own redis://"):
        autoops.Backuper(autoops.LocalStorage(tmp_path)).backup_redis(redis_cluster_topology.url())
