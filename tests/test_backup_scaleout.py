"""Redis backups on Sentinel (from a replica when asked) and on Redis Cluster (one logical dump
of every master, restored onto any shape)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import autoops
from _support.redis_content import content, fill_every_type
from _support.redis_topologies import RedisClusterTopology, SentinelTopology
from _support.services import redis_server


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


def _write_to_both_replicas(sentinel: autoops.CacheClient, values: dict[str, Any]) -> None:
    """``set_many`` on the master, then wait until both replicas have it (a replica's backup
    must find every key)."""
    sentinel.set_many(values)
    sentinel.redis.wait(2, 5000)  # type: ignore[attr-defined]


def _full_syncs(topology: SentinelTopology, port: int) -> int:
    with contextlib.closing(topology.server(port).client()) as client:
        return int(client.info("stats")["sync_full"])


def test_a_logical_backup_from_a_replica_restores_every_key(
    tmp_path: Path, sentinel: autoops.CacheClient, redis_sentinel_topology: SentinelTopology
) -> None:
    _write_to_both_replicas(sentinel, {f"usérs:{index}": {"id": index} for index in range(500)})
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
    _write_to_both_replicas(sentinel, {f"k:{index}": index for index in range(200)})
    master = redis_sentinel_topology.master_port()
    before = _full_syncs(redis_sentinel_topology, master)
    backup = autoops.Backuper(autoops.LocalStorage(tmp_path)).backup_redis(
        sentinel, prefer="replica"
    )
    assert _full_syncs(redis_sentinel_topology, master) == before
    assert backup.key_count is not None
    assert backup.key_count >= 200


def test_an_rdb_backup_from_a_replica_restores_its_keys(
    tmp_path: Path, sentinel: autoops.CacheClient, redis_sentinel_topology: SentinelTopology
) -> None:
    values = {f"order-items:{index}": {"id": index, "n": 2**53 + index} for index in range(300)}
    _write_to_both_replicas(sentinel, values)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_redis(sentinel, prefer="replica")
    master = redis_sentinel_topology.master_port()
    replicas = [s.port for s in redis_sentinel_topology.servers if s.port != master]
    assert backup.source in {f"redis://127.0.0.1:{port}" for port in replicas}
    sentinel.delete_prefix("")
    assert backuper.restore_redis(backup, sentinel, replace=True) >= 300
    assert sentinel.get_many(list(values)) == values


def test_a_backup_from_the_sentinel_master_records_the_sentinel_url(
    tmp_path: Path, sentinel: autoops.CacheClient, redis_sentinel_topology: SentinelTopology
) -> None:
    sentinel.set_many({f"k:{index}": index for index in range(50)})
    backup = autoops.Backuper(autoops.LocalStorage(tmp_path)).backup_redis(sentinel, mode="logical")
    assert backup.source.startswith("redis+sentinel://127.0.0.1:")
    assert f"/{redis_sentinel_topology.name}" in backup.source
    assert backup.key_count == 50


def test_the_backup_command_takes_prefer_from_its_flag_and_the_settings_file(
    tmp_path: Path, sentinel: autoops.CacheClient, redis_sentinel_topology: SentinelTopology
) -> None:
    from autoops.cli.backup import main_backup

    _write_to_both_replicas(sentinel, {f"k:{index}": index for index in range(50)})
    url = redis_sentinel_topology.url()
    store = tmp_path / "store"
    assert main_backup(["redis", "--url", url, "--storage", str(store), "--prefer", "replica"]) == 0
    settings = tmp_path / "autoops.toml"
    settings.write_text(f'[backup]\nstorage = "{store}"\nredis_prefer = "replica"\n')
    settings.chmod(0o600)
    assert main_backup(["redis", "--url", url, "--config", str(settings)]) == 0
    assert main_backup(["redis", "--url", url, "--storage", str(store)]) == 0
    sources = [backup.source for backup in autoops.Backuper(autoops.LocalStorage(store)).list()]
    master = redis_sentinel_topology.master_port()
    assert len(sources) == 3
    assert sum(source.startswith("redis+sentinel://") for source in sources) == 1
    assert not any(f":{master}" in source for source in sources)


def test_prefer_is_refused_for_other_kinds_and_a_bad_setting_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from autoops.cli.backup import main_backup

    store = str(tmp_path / "store")
    code = main_backup(
        ["sqlite", "--url", f"sqlite:///{tmp_path}/x.db", "--storage", store, "--prefer", "replica"]
    )
    assert code == 2
    assert "--prefer is for redis backups, not sqlite" in capsys.readouterr().err
    settings = tmp_path / "autoops.toml"
    settings.write_text(f'[backup]\nstorage = "{store}"\nredis_prefer = "slave"\n')
    settings.chmod(0o600)
    assert main_backup(["redis", "--url", "redis://127.0.0.1:1/0", "--config", str(settings)]) == 2
    err = capsys.readouterr().err
    assert "redis_prefer must be" in err
    assert "'slave'" in err


def test_prefer_replica_on_one_server_is_a_config_error(
    tmp_path: Path, cache: autoops.CacheClient
) -> None:
    with pytest.raises(autoops.ConfigError, match="redis\\+sentinel"):
        autoops.Backuper(autoops.LocalStorage(tmp_path)).backup_redis(cache, prefer="replica")


@pytest.fixture
def cluster(redis_cluster_topology: RedisClusterTopology) -> Iterator[autoops.ClusterCache]:
    redis_cluster_topology.wait_healthy()
    client = autoops.CacheClient.from_url(redis_cluster_topology.url())
    assert isinstance(client, autoops.ClusterCache)
    yield client
    client.close()


def test_a_logical_cluster_backup_restores_every_type_onto_a_flushed_cluster(
    tmp_path: Path, cluster: autoops.ClusterCache, redis_cluster_topology: RedisClusterTopology
) -> None:
    prefix = f"bk{uuid.uuid4().hex[:8]}:".encode()
    keys = fill_every_type(cluster.redis, prefix)
    before = content(cluster.redis, keys)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_redis(cluster, mode="logical", pattern=prefix.decode() + "*")
    assert backup.key_count == len(keys)
    cluster.delete_prefix(prefix.decode())
    assert backuper.restore_redis(backup, redis_cluster_topology.url()) == len(keys)
    assert content(cluster.redis, keys) == before


def test_a_logical_cluster_backup_records_every_master_in_one_manifest(
    tmp_path: Path, cluster: autoops.ClusterCache, redis_cluster_topology: RedisClusterTopology
) -> None:
    prefix = f"bk{uuid.uuid4().hex[:8]}:"
    cluster.set_many({f"{prefix}{index}": index for index in range(300)})
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_redis(cluster, mode="logical", pattern=prefix + "*")
    masters = backup.options["cluster"]
    assert sorted(int(master["node"].rsplit(":", 1)[1]) for master in masters) == (
        redis_cluster_topology.masters()
    )
    assert sum(end - start + 1 for m in masters for start, end in m["slots"]) == 16384
    assert all(master["key_count"] > 0 for master in masters)
    assert sum(master["key_count"] for master in masters) == backup.key_count == 300
    assert [b.id for b in backuper.list()] == [backup.id]
    cluster.delete_prefix(prefix)


def test_a_logical_cluster_backup_test_restores_into_the_cluster_and_removes_its_keys(
    tmp_path: Path, cluster: autoops.ClusterCache
) -> None:
    prefix = f"bk{uuid.uuid4().hex[:8]}:"
    cluster.set_many({f"{prefix}{index}": index for index in range(300)})
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_redis(cluster, mode="logical", pattern=prefix + "*")
    cluster.delete_prefix(prefix)
    assert backuper.verify(backup, restore_test=cluster).status == "ok"
    assert cluster.get_many([f"{prefix}{index}" for index in range(300)]) == {}


def test_a_logical_cluster_backup_restores_onto_one_redis_server(
    tmp_path: Path, cluster: autoops.ClusterCache
) -> None:
    prefix = f"bk{uuid.uuid4().hex[:8]}:".encode()
    keys = fill_every_type(cluster.redis, prefix)
    before = content(cluster.redis, keys)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    backup = backuper.backup_redis(cluster, mode="logical", pattern=prefix.decode() + "*")
    cluster.delete_prefix(prefix.decode())
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as port:
        assert backuper.restore_redis(backup, f"redis://127.0.0.1:{port}/0") == len(keys)
        with contextlib.closing(redis.Redis(port=port)) as single:
            assert content(single, keys) == before


def test_a_restore_into_a_cluster_holding_the_keys_is_refused_unless_replace(
    tmp_path: Path, cluster: autoops.ClusterCache
) -> None:
    prefix = f"bk{uuid.uuid4().hex[:8]}:"
    cluster.set_many({f"{prefix}{index}": index for index in range(50)})
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_redis(cluster, mode="logical", pattern=prefix + "*")
    cluster.set(f"{prefix}7", "newer")
    with pytest.raises(autoops.RestoreRefusedError, match="replace=True"):
        backuper.restore_redis(backup, cluster)
    assert cluster.get(f"{prefix}7") == "newer"
    assert backuper.restore_redis(backup, cluster, replace=True) == 50
    assert cluster.get(f"{prefix}7") == 7
    cluster.delete_prefix(prefix)


def test_a_logical_backup_of_one_redis_restores_onto_a_cluster(
    tmp_path: Path, cluster: autoops.ClusterCache, redis_cluster_topology: RedisClusterTopology
) -> None:
    prefix = f"bk{uuid.uuid4().hex[:8]}:".encode()
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as port, redis.Redis(port=port) as single:
        keys = fill_every_type(single, prefix)
        before = content(single, keys)
        backup = backuper.backup_redis(
            f"redis://127.0.0.1:{port}/0", mode="logical", pattern=prefix.decode() + "*"
        )
    assert backuper.restore_redis(backup, redis_cluster_topology.url()) == len(keys)
    assert content(cluster.redis, keys) == before
    cluster.delete_prefix(prefix.decode())


class _KillingStorage(autoops.LocalStorage):
    """Kills a cluster master when the backup's data file is created: after the slot table is
    read, before any master is dumped."""

    def __init__(self, root: Path, kill: Callable[[], None]) -> None:
        super().__init__(root)
        self._kill = kill

    def create(self, name: str) -> Any:
        self._kill()
        return super().create(name)


def test_a_master_lost_during_a_cluster_backup_fails_it_and_stores_nothing(
    tmp_path: Path, cluster: autoops.ClusterCache, redis_cluster_topology: RedisClusterTopology
) -> None:
    prefix = f"bk{uuid.uuid4().hex[:8]}:"
    cluster.set_many({f"{prefix}{index}": index for index in range(300)})
    victim = redis_cluster_topology.masters()[0]
    storage = _KillingStorage(tmp_path, lambda: redis_cluster_topology.kill(victim))
    backuper = autoops.Backuper(storage)
    try:
        with pytest.raises(autoops.BackupError, match=f"127.0.0.1:{victim}"):
            backuper.backup_redis(cluster, mode="logical", pattern=prefix + "*")
    finally:
        redis_cluster_topology.restart(victim)
        redis_cluster_topology.wait_healthy()
    assert backuper.list() == []
    assert storage.names() == []
    cluster.delete_prefix(prefix)


def test_an_rdb_cluster_backup_is_one_backup_of_every_master(
    tmp_path: Path, cluster: autoops.ClusterCache, redis_cluster_topology: RedisClusterTopology
) -> None:
    prefix = f"bk{uuid.uuid4().hex[:8]}:"
    cluster.set_many({f"{prefix}{index}": index for index in range(300)})
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_redis(cluster)
    cluster.delete_prefix(prefix)
    masters = backup.options["cluster"]
    assert sorted(int(master["node"].rsplit(":", 1)[1]) for master in masters) == (
        redis_cluster_topology.masters()
    )
    assert sum(master["key_count"] for master in masters) == backup.key_count
    assert backup.key_count is not None
    assert backup.key_count >= 300
    assert backuper.verify(backup, restore_test=True).status == "ok"
    with pytest.raises(autoops.ConfigError, match="not written to a file"):
        backuper.restore_redis(backup, tmp_path / "dump.rdb")


def test_an_rdb_cluster_backup_restores_every_type_onto_a_cluster_and_one_redis(
    tmp_path: Path, cluster: autoops.ClusterCache, redis_cluster_topology: RedisClusterTopology
) -> None:
    prefix = f"bk{uuid.uuid4().hex[:8]}:".encode()
    keys = fill_every_type(cluster.redis, prefix)
    before = content(cluster.redis, keys)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    backup = backuper.backup_redis(cluster)
    cluster.delete_prefix(prefix.decode())
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as port, redis.Redis(port=port) as single:
        restored = backuper.restore_redis(backup, f"redis://127.0.0.1:{port}/0")
        assert restored == backup.key_count
        assert content(single, keys) == before
    # The snapshot holds every key of the session's cluster, so the target is flushed whole.
    redis_cluster_topology.flush()
    assert backuper.restore_redis(backup, cluster) == backup.key_count
    assert content(cluster.redis, keys) == before
    cluster.delete_prefix(prefix.decode())
