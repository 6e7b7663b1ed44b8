"""A Redis Cluster backup is one backup of one data file per master: on the private 3+3 cluster,
in a local directory, on S3 (moto) and on a full disk, encrypted or not. Every file is checked,
verified, restored and deleted with the backup; a failure leaves nothing listed and no file; a
backup of the older one-file format still restores."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

import autoops
from _support.old_cluster_backup import framed_copy
from _support.proxy import TcpProxy
from _support.redis_content import content, fill_every_type
from _support.redis_topologies import RedisClusterTopology, redis_cluster
from _support.s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoServer, moto_server
from _support.services import redis_server, run_script
from _support.sshd import SshServer
from autoops._ssh import SshOptions
from autoops.backup import BackupError, BackupVerifyError, _redis_cluster

PREFIX = "cluster/nightly"


@pytest.fixture
def cluster(redis_cluster_topology: RedisClusterTopology) -> Iterator[autoops.ClusterCache]:
    redis_cluster_topology.wait_healthy()
    client = autoops.CacheClient.from_url(redis_cluster_topology.url())
    assert isinstance(client, autoops.ClusterCache)
    yield client
    client.close()


@pytest.fixture
def keys(cluster: autoops.ClusterCache) -> Iterator[list[bytes]]:
    """Keys of every type on every master, removed after the test."""
    prefix = f"cf{uuid.uuid4().hex[:8]}:"
    yield fill_every_type(cluster.redis, prefix.encode())
    cluster.delete_prefix(prefix)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


def _s3_client(moto: MotoServer) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=moto.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def _bucket(moto: MotoServer) -> str:
    bucket = f"autoops-cluster-{secrets.token_hex(4)}"
    _s3_client(moto).create_bucket(Bucket=bucket)
    return bucket


def _s3_storage(endpoint_url: str, bucket: str) -> autoops.S3Storage:
    return autoops.S3Storage(
        bucket,
        prefix=PREFIX,
        endpoint_url=endpoint_url,
        region="us-east-1",
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        part_size=5 << 20,
        max_attempts=2,
        connect_timeout=2.0,
        read_timeout=10.0,
    )


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _one_per_master(backup: autoops.Backup, topology: RedisClusterTopology) -> None:
    sealed = ".age" if "encryption" in backup.options else ""
    assert [f.name for f in backup.files] == [
        f"{backup.id}.master-{n}.{backup.format}.zst{sealed}" for n in range(1, 4)
    ]
    assert sorted(int(f.node.rsplit(":", 1)[1]) for f in backup.files) == topology.masters()
    assert sum(end - start + 1 for f in backup.files for start, end in f.slots) == 16384
    assert sum(f.key_count or 0 for f in backup.files) == backup.key_count
    assert all(f.key_count for f in backup.files)
    assert backup.size == sum(f.size for f in backup.files)
    assert backup.data_file == ""


# the files ----------------------------------------------------------------------------------


def test_an_encrypted_rdb_cluster_backup_is_a_file_per_master_and_one_manifest(
    tmp_path: Path,
    cluster: autoops.ClusterCache,
    keys: list[bytes],
    redis_cluster_topology: RedisClusterTopology,
) -> None:
    storage = autoops.LocalStorage(tmp_path / "store")
    backuper = autoops.Backuper(
        storage, encryption=autoops.Encryption.generate_key(tmp_path / "key")
    )
    backup = backuper.backup_redis(cluster)
    _one_per_master(backup, redis_cluster_topology)
    assert backup.key_count is not None
    assert backup.key_count >= len(keys)
    assert storage.names() == sorted([f.name for f in backup.files] + [backup.manifest_file])
    # Without the key the catalogue still lists the files (names, sizes), not their masters.
    keyless = autoops.Backuper(autoops.LocalStorage(tmp_path / "store", create=False))
    listed = keyless.list()
    assert [(f.name, f.size, f.sha256) for f in listed[0].files] == [
        (f.name, f.size, f.sha256) for f in backup.files
    ]
    assert {f.node for f in listed[0].files} == {""}
    manifest = json.loads((tmp_path / "store" / backup.manifest_file).read_text())
    assert manifest["manifest_version"] == 2
    assert "127.0.0.1" not in json.dumps(manifest["files"])
    fresh = autoops.BackupFreshnessCheck("backups", keyless, sources=[backup.source]).run()
    assert fresh.status is autoops.CheckStatus.OK, fresh.summary
    # With it, each master's file is verified and loaded by a private redis-server.
    verified = backuper.verify(listed[0], restore_test=True)
    assert verified.status == "ok"
    assert [f.node for f in verified.files] == [f.node for f in backup.files]


def test_a_logical_cluster_backup_is_a_dump_per_master_restored_per_master_and_onto_one_redis(
    tmp_path: Path,
    cluster: autoops.ClusterCache,
    keys: list[bytes],
    redis_cluster_topology: RedisClusterTopology,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = content(cluster.redis, keys)
    prefix = keys[0].split(b":", 1)[0].decode() + ":*"
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    backup = backuper.backup_redis(cluster, mode="logical", pattern=prefix)
    _one_per_master(backup, redis_cluster_topology)
    assert backup.key_count == len(keys)
    cluster.delete_prefix(prefix[:-1])
    assert backuper.verify(backup, restore_test=cluster).status == "ok"
    assert cluster.redis.exists(*keys) == 0
    with caplog.at_level(logging.INFO, logger="autoops.backup"):
        assert backuper.restore_redis(backup, cluster) == len(keys)
    assert "each master's file into the master serving its slots" in caplog.text
    assert content(cluster.redis, keys) == before
    with pytest.raises(autoops.RestoreRefusedError, match="replace=True"):
        backuper.restore_redis(backup, cluster)
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as port, redis.Redis(port=port) as single:
        assert backuper.restore_redis(backup, f"redis://127.0.0.1:{port}/0") == len(keys)
        assert content(single, keys) == before


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize("mode", ["logical", "rdb"])
def test_a_cluster_backup_restores_onto_a_cluster_of_another_shape(
    tmp_path: Path, cluster: autoops.ClusterCache, keys: list[bytes], mode: str
) -> None:
    """Three masters' files onto four masters with no replicas: other slot ranges, other
    nodes; every key goes to the master that owns its slot there."""
    before = content(cluster.redis, keys)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    backup = backuper.backup_redis(cluster, mode=mode)  # type: ignore[arg-type]
    with (
        redis_cluster(_mkdir(tmp_path / "four"), masters=4, replicas=0) as four,
        autoops.CacheClient.from_url(four.url()) as target,
    ):
        assert isinstance(target, autoops.ClusterCache)
        assert len(four.masters()) == 4
        restored = backuper.restore_redis(backup, target)
        assert restored == backup.key_count
        assert content(target.redis, keys) == before


# verify, delete, prune ------------------------------------------------------------------------


def test_verify_names_the_corrupted_or_missing_file_of_a_master(
    tmp_path: Path, cluster: autoops.ClusterCache, keys: list[bytes]
) -> None:
    store = tmp_path / "store"
    backuper = autoops.Backuper(autoops.LocalStorage(store))
    backup = backuper.backup_redis(cluster)
    second = backup.files[1]
    _flip_a_byte(store / second.name)
    expected = f"{re.escape(second.name)} \\(file 2 of 3, master {re.escape(second.node)}\\)"
    with pytest.raises(BackupVerifyError, match=expected + ".* has SHA-256"):
        backuper.verify(backup)
    assert backuper.get(backup.id).status == "corrupt"
    # A restore checks every file before it writes anything.
    with pytest.raises(BackupVerifyError, match=expected):
        backuper.restore_redis(backup, cluster, replace=True)
    (store / second.name).unlink()
    with pytest.raises(BackupVerifyError, match=expected + ".* is missing"):
        backuper.verify(backup)


def test_delete_and_prune_remove_every_file_of_a_cluster_backup(
    tmp_path: Path, cluster: autoops.ClusterCache, keys: list[bytes]
) -> None:
    storage = autoops.LocalStorage(tmp_path / "store")
    backuper = autoops.Backuper(storage)
    older = backuper.backup_redis(cluster)
    newer = backuper.backup_redis(cluster)
    plan = backuper.prune(autoops.RetentionPolicy(keep_last=1))
    assert [b.id for b in plan.remove] == [older.id]
    assert storage.names() == sorted([f.name for f in newer.files] + [newer.manifest_file])
    backuper.delete(newer)
    assert storage.names() == []


# failures -------------------------------------------------------------------------------------


class _KillingStorage(autoops.LocalStorage):
    """Kills a cluster master when the second master's file is created: the first file's
    upload is under way, no master has been read yet."""

    def __init__(self, root: Path, kill: Callable[[], None]) -> None:
        super().__init__(root)
        self._kill = kill
        self.created: list[str] = []

    def create(self, name: str) -> Any:
        self.created.append(name)
        if len(self.created) == 2:
            self._kill()
        return super().create(name)


@pytest.mark.parametrize("mode", ["rdb", "logical"])
def test_a_master_lost_during_the_backup_leaves_no_backup_and_no_file(
    tmp_path: Path,
    cluster: autoops.ClusterCache,
    keys: list[bytes],
    redis_cluster_topology: RedisClusterTopology,
    mode: str,
) -> None:
    victim = redis_cluster_topology.masters()[0]
    storage = _KillingStorage(tmp_path, lambda: redis_cluster_topology.kill(victim))
    backuper = autoops.Backuper(storage)
    try:
        with pytest.raises(autoops.BackupError, match=f"127.0.0.1:{victim}"):
            backuper.backup_redis(cluster, mode=mode)  # type: ignore[arg-type]
    finally:
        redis_cluster_topology.restart(victim)
        redis_cluster_topology.wait_healthy()
    assert len(storage.created) == 3
    assert backuper.list() == []
    assert storage.names() == []


def test_a_full_store_fails_the_backup_clearly_and_leaves_no_file(
    small_disk: Path, cluster: autoops.ClusterCache
) -> None:
    prefix = f"cf{uuid.uuid4().hex[:8]}:"
    # 3 MiB that does not compress, on every master: no master's file fits in 1 MiB.
    cluster.set_many({f"{prefix}{n}": os.urandom(32 << 10).hex() for n in range(48)})
    storage = autoops.LocalStorage(small_disk / "store")
    backuper = autoops.Backuper(storage)
    try:
        with pytest.raises(BackupError, match=r"no space left on .*store"):
            backuper.backup_redis(cluster)
    finally:
        cluster.delete_prefix(prefix)
    assert backuper.list() == []
    assert storage.names() == []


# S3 ---------------------------------------------------------------------------------------------


def test_an_encrypted_cluster_backup_on_s3_verifies_restores_onto_one_redis_and_deletes(
    tmp_path: Path,
    moto: MotoServer,
    cluster: autoops.ClusterCache,
    keys: list[bytes],
    redis_cluster_topology: RedisClusterTopology,
) -> None:
    before = content(cluster.redis, keys)
    bucket = _bucket(moto)
    storage = _s3_storage(moto.endpoint_url, bucket)
    s3 = _s3_client(moto)
    encryption = autoops.Encryption.generate_key(tmp_path / "key")
    backuper = autoops.Backuper(storage, encryption=encryption)
    backup = backuper.backup_redis(cluster)
    _one_per_master(backup, redis_cluster_topology)
    objects = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert sorted(objects) == sorted(
        f"{PREFIX}/{name}" for name in [f.name for f in backup.files] + [backup.manifest_file]
    )
    assert storage.uploads() == []
    assert backuper.verify(backup, restore_test=True).status == "ok"
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as port, redis.Redis(port=port) as single:
        assert backuper.restore_redis(backup, f"redis://127.0.0.1:{port}/0") == backup.key_count
        assert content(single, keys) == before
    third = backup.files[2]
    key = f"{PREFIX}/{third.name}"
    body = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[-40] ^= 0x01
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    with pytest.raises(BackupVerifyError, match=re.escape(f"{third.name} (file 3 of 3, master")):
        backuper.verify(backup)
    backuper.delete(backup)
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    storage.close()


def test_a_store_cut_off_mid_upload_lists_nothing_and_the_next_run_aborts_every_upload(
    moto: MotoServer,
    tcp_proxy: Callable[[str, int], TcpProxy],
    cluster: autoops.ClusterCache,
) -> None:
    bucket = _bucket(moto)
    proxy = tcp_proxy("127.0.0.1", moto.port)
    storage = _s3_storage(f"http://127.0.0.1:{proxy.port}", bucket)
    direct = _s3_storage(moto.endpoint_url, bucket)
    prefix = f"cf{uuid.uuid4().hex[:8]}:"
    # About 7 MiB that does not compress on each master: every file is a multipart upload.
    pipeline = cluster.redis.pipeline()  # type: ignore[no-untyped-call]
    for number in range(84):
        pipeline.set(f"{prefix}{number}", os.urandom(256 << 10))
    pipeline.execute()

    def cut_when_uploading() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if direct.uploads():
                proxy.mode = "refuse"
                proxy.drop_all()
                return
            time.sleep(0.01)

    cutter = threading.Thread(target=cut_when_uploading)
    cutter.start()
    try:
        with pytest.raises(autoops.ConnectError, match="nothing was left under a final name"):
            autoops.Backuper(storage).backup_redis(cluster)
    finally:
        cutter.join()
        proxy.mode = "forward"
        cluster.delete_prefix(prefix)
    assert autoops.Backuper(direct).list() == []
    assert not [name for name in direct.names() if not name.endswith(".partial")]
    # The aborts could not get through either; the next run of this host aborts them all.
    assert direct.uploads()
    autoops.Backuper(direct).prune(autoops.RetentionPolicy(keep_last=1))
    assert direct.uploads() == []
    assert direct.names() == []
    storage.close()
    direct.close()


# SFTP -------------------------------------------------------------------------------------------


def test_a_cluster_backup_over_sftp_is_a_file_per_master_verified_and_deleted(
    sshd: SshServer,
    tmp_path: Path,
    cluster: autoops.ClusterCache,
    keys: list[bytes],
    redis_cluster_topology: RedisClusterTopology,
) -> None:
    remote = tmp_path / "remote"
    storage = autoops.SftpStorage(
        sshd.address,
        str(remote),
        options=SshOptions(
            key_filename=str(sshd.client_key),
            known_hosts=str(sshd.known_hosts),
            connect_timeout=5,
        ),
    )
    backuper = autoops.Backuper(storage)
    backup = backuper.backup_redis(cluster, mode="logical")
    _one_per_master(backup, redis_cluster_topology)
    assert sorted(os.listdir(remote)) == sorted(
        [f.name for f in backup.files] + [backup.manifest_file]
    )
    assert backuper.verify(backup).status == "ok"
    backuper.delete(backup)
    assert os.listdir(remote) == []
    storage.close()


# restore ----------------------------------------------------------------------------------------


def test_an_rdb_cluster_backup_restores_each_master_onto_the_same_shape(
    tmp_path: Path,
    cluster: autoops.ClusterCache,
    keys: list[bytes],
    redis_cluster_topology: RedisClusterTopology,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = content(cluster.redis, keys)
    backuper = autoops.Backuper(
        autoops.LocalStorage(tmp_path / "store"),
        encryption=autoops.Encryption.generate_key(tmp_path / "key"),
    )
    backup = backuper.backup_redis(cluster)
    # The snapshot holds every key of the session's cluster, so the target is flushed whole.
    redis_cluster_topology.flush()
    with caplog.at_level(logging.INFO, logger="autoops.backup"):
        assert backuper.restore_redis(backup, cluster) == backup.key_count
    assert "each master's file into the master serving its slots" in caplog.text
    assert content(cluster.redis, keys) == before
    with pytest.raises(autoops.RestoreRefusedError, match="replace=True"):
        backuper.restore_redis(backup, cluster)
    assert backuper.restore_redis(backup, cluster, replace=True) == backup.key_count


class _KillOnRead(autoops.LocalStorage):
    """Kills a cluster master when the restore opens the first master's file to load it (after
    every file was opened once to check its SHA-256)."""

    def __init__(self, root: Path, kill: Callable[[], None], checks: int) -> None:
        super().__init__(root)
        self._kill = kill
        self._opens = 0
        self._checks = checks

    def open(self, name: str) -> Any:
        self._opens += 1
        if self._opens == self._checks + 1:
            self._kill()
        return super().open(name)


def test_a_master_lost_during_a_same_shape_restore_is_a_clear_error_and_a_rerun_restores(
    tmp_path: Path,
    cluster: autoops.ClusterCache,
    keys: list[bytes],
    redis_cluster_topology: RedisClusterTopology,
) -> None:
    before = content(cluster.redis, keys)
    backup = autoops.Backuper(autoops.LocalStorage(tmp_path)).backup_redis(cluster)
    redis_cluster_topology.flush()
    victim = int(backup.files[0].node.rsplit(":", 1)[1])
    storage = _KillOnRead(tmp_path, lambda: redis_cluster_topology.kill(victim), checks=3)
    backuper = autoops.Backuper(storage)
    try:
        with pytest.raises(autoops.AutoOpsError, match=f"127.0.0.1:{victim}"):
            backuper.restore_redis(backup, cluster)
    finally:
        redis_cluster_topology.restart(victim)
        redis_cluster_topology.wait_healthy()
    # The replica that took over serves the same slots: still the same shape.
    assert backuper.restore_redis(backup, cluster, replace=True) == backup.key_count
    assert content(cluster.redis, keys) == before


def test_a_master_lost_during_a_routed_restore_is_a_clear_error_and_a_rerun_restores(
    tmp_path: Path,
    cluster: autoops.ClusterCache,
    keys: list[bytes],
    redis_cluster_topology: RedisClusterTopology,
) -> None:
    before = content(cluster.redis, keys)
    prefix = keys[0].split(b":", 1)[0].decode() + ":*"
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as port, redis.Redis(port=port) as single:
        raw: Any = cluster.redis
        for key in keys:
            expire_at = raw.pexpiretime(key)
            single.restore(key, max(expire_at, 0), raw.dump(key), replace=True, absttl=True)
        # One Redis's dump: restored onto the cluster by routing each key.
        backup = autoops.Backuper(autoops.LocalStorage(tmp_path / "store")).backup_redis(
            f"redis://127.0.0.1:{port}/0", mode="logical", pattern=prefix
        )
    cluster.delete_prefix(prefix[:-1])
    victim = redis_cluster_topology.masters()[1]
    storage = _KillOnRead(tmp_path / "store", lambda: redis_cluster_topology.kill(victim), checks=1)
    backuper = autoops.Backuper(storage)
    try:
        with pytest.raises(BackupError, match=f"127.0.0.1:{victim}.* run it again with replace"):
            backuper.restore_redis(backup, cluster)
    finally:
        redis_cluster_topology.restart(victim)
        redis_cluster_topology.wait_healthy()
    assert backuper.restore_redis(backup, cluster, replace=True) == len(keys)
    assert content(cluster.redis, keys) == before


def test_the_same_shape_is_the_same_slot_ranges_on_as_many_masters(
    tmp_path: Path, cluster: autoops.ClusterCache, redis_cluster_topology: RedisClusterTopology
) -> None:
    backup = autoops.Backuper(autoops.LocalStorage(tmp_path)).backup_redis(cluster)
    owners = _redis_cluster.same_shape_owners(backup.files, cluster)
    assert owners is not None
    assert [f"{host}:{port}" for host, port in owners] == [f.node for f in backup.files]
    # Another split of the slots, fewer masters, or a file without slots: another shape.
    first, second, third = backup.files
    moved = (first.slots[0][0], first.slots[-1][1] - 1)
    resplit = (
        dataclasses.replace(first, slots=(moved,)),
        dataclasses.replace(second, slots=((moved[1] + 1, second.slots[-1][1]),)),
        third,
    )
    assert _redis_cluster.same_shape_owners(resplit, cluster) is None
    assert _redis_cluster.same_shape_owners(backup.files[:2], cluster) is None
    assert (
        _redis_cluster.same_shape_owners(
            (dataclasses.replace(first, slots=()), second, third), cluster
        )
        is None
    )


def test_keys_routed_by_a_stale_slot_table_follow_the_redirections(
    cluster: autoops.ClusterCache, keys: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = content(cluster.redis, keys)
    raw: Any = cluster.redis
    entries = [(key, int(raw.pexpiretime(key)), bytes(raw.dump(key))) for key in keys]
    cluster.redis.delete(*keys)
    # Each master's slots said to be the next master's, as after a resharding: every batch is
    # answered MOVED and goes again through the cluster client.
    table = _redis_cluster.slot_table(cluster)
    owners = list(table)
    stale = dict(zip(owners[1:] + owners[:1], table.values(), strict=True))
    monkeypatch.setattr(_redis_cluster, "slot_table", lambda target: stale)
    restored = _redis_cluster.restore_entries_into_cluster(entries, cluster, batch=50)
    assert sorted(restored) == sorted(keys)
    assert content(cluster.redis, keys) == before


def test_an_old_single_file_cluster_backup_still_lists_verifies_and_restores(
    tmp_path: Path,
    cluster: autoops.ClusterCache,
    keys: list[bytes],
    redis_cluster_topology: RedisClusterTopology,
) -> None:
    before = content(cluster.redis, keys)
    store = tmp_path / "store"
    backuper = autoops.Backuper(autoops.LocalStorage(store))
    old_id = framed_copy(backuper.backup_redis(cluster), store)
    old = backuper.get(old_id)
    assert (old.format, old.files, old.data_file) == (
        "cluster-rdb",
        (),
        f"{old_id}.cluster-rdb.zst",
    )
    assert backuper.verify(old, restore_test=True).status == "ok"
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as port, redis.Redis(port=port) as single:
        assert backuper.restore_redis(old, f"redis://127.0.0.1:{port}/0") == old.key_count
        assert content(single, keys) == before
    redis_cluster_topology.flush()
    assert backuper.restore_redis(old, cluster) == old.key_count
    assert content(cluster.redis, keys) == before
    backuper.delete(old)
    assert not any(name.startswith(old_id) for name in os.listdir(store))


# the commands ---------------------------------------------------------------------------------


def test_the_commands_show_each_master_file_and_name_a_bad_one(
    tmp_path: Path,
    cluster: autoops.ClusterCache,
    keys: list[bytes],
    redis_cluster_topology: RedisClusterTopology,
) -> None:
    before = content(cluster.redis, keys)
    store = tmp_path / "store"
    url = redis_cluster_topology.url()
    taken = run_script(
        "autoops-backup", "redis", "--url", url, "--storage", str(store), timeout=120
    )
    assert taken.returncode == 0, taken.stderr
    listed = run_script("autoops-backups", "list", "--storage", str(store), timeout=60)
    assert listed.returncode == 0, listed.stderr
    head, *files = listed.stdout.splitlines()
    backup_id = head.split()[0]
    assert len(files) == 3
    for number, line in enumerate(files, 1):
        assert re.fullmatch(
            rf"    {backup_id}\.master-{number}\.rdb\.zst +\d+  master 127\.0\.0\.1:\d+  "
            r"slots [0-9,-]+  \d+ keys",
            line,
        ), line
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as port, redis.Redis(port=port) as single:
        restored = run_script(
            "autoops-restore", backup_id[:30], "--url", f"redis://127.0.0.1:{port}/0",
            "--storage", str(store), "-v", timeout=120,
        )  # fmt: skip
        assert restored.returncode == 0, restored.stderr
        assert re.search(r"restored .* into redis://127\.0\.0\.1:\d+/0: \d+ keys from 3 data files",
                         restored.stderr), restored.stderr  # fmt: skip
        assert content(single, keys) == before
    _flip_a_byte(store / f"{backup_id}.master-2.rdb.zst")
    verified = run_script("autoops-backups", "verify", "--storage", str(store), timeout=120)
    assert verified.returncode == 1
    assert verified.stdout.startswith(f"FAILED   {backup_id}: {backup_id}.master-2.rdb.zst ")
    assert "(file 2 of 3, master 127.0.0.1:" in verified.stdout
