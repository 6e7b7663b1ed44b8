"""Redis backups: RDB snapshots over SYNC and logical dumps, restored faithfully into db 12-15."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import autoops
from _support.proxy import TcpProxy
from _support.services import REDIS_HOST, REDIS_PORT, redis_test_url
from autoops.backup import BackupVerifyError, RestoreRefusedError


@pytest.fixture
def restore_url(redis_url: str) -> Iterator[str]:
    """Redis db 13, this suite's own restore target, flushed before and after (db 12-15 only)."""
    url = redis_url.rsplit("/", 1)[0] + "/13"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def _fill_every_type(raw: redis.Redis, namespace: str) -> None:
    raw.set(f"{namespace}:string", b"\x00\xffbinary \xf0\x9f\x98\x80")
    raw.set(f"{namespace}:expiring", "soon", px=600_000)
    raw.hset(f"{namespace}:hash", mapping={"a": "1", "b": "2"})
    raw.rpush(f"{namespace}:list", "x", "y", "z")
    raw.sadd(f"{namespace}:set", "p", "q")
    raw.zadd(f"{namespace}:zset", {"one": 1.5, "two": 2.25})
    raw.xadd(f"{namespace}:stream", {"field": "value"}, id="1-1")
    raw.xadd(f"{namespace}:stream", {"field": "other"}, id="2-1")
    raw.pexpire(f"{namespace}:hash", 3_600_000)


def _snapshot(raw: redis.Redis, namespace: str) -> dict[bytes, tuple[object, int]]:
    """Every key's type-aware value and its absolute expiry in ms (-1: none), which unlike a TTL
    does not depend on when it is read."""
    found: dict[bytes, tuple[object, int]] = {}
    for key in raw.scan_iter(match=f"{namespace}:*"):
        kind = raw.type(key)
        value: object
        if kind == b"string":
            value = raw.get(key)
        elif kind == b"hash":
            value = raw.hgetall(key)
        elif kind == b"list":
            value = raw.lrange(key, 0, -1)
        elif kind == b"set":
            value = raw.smembers(key)
        elif kind == b"zset":
            value = raw.zrange(key, 0, -1, withscores=True)
        else:
            value = raw.xrange(key)
        found[key] = (value, int(raw.pexpiretime(key)))
    return found


def test_logical_dump_round_trips_every_type_with_ttls(
    redis_raw: redis.Redis,
    redis_namespace: str,
    cache: autoops.CacheClient,
    restore_url: str,
    tmp_path: Path,
) -> None:
    _fill_every_type(redis_raw, redis_namespace)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_redis(cache, mode="logical")
    assert backup.key_count == 7
    assert backup.source.endswith(f"/0?match={redis_namespace}:*")
    assert backuper.restore_redis(backup, restore_url) == 7
    target = redis.Redis.from_url(restore_url)
    restored, original = _snapshot(target, redis_namespace), _snapshot(redis_raw, redis_namespace)
    target.close()
    assert {key: value for key, (value, _) in restored.items()} == {
        key: value for key, (value, _) in original.items()
    }
    for key, (_, expire_at) in original.items():
        assert abs(restored[key][1] - expire_at) <= 1000, key


def test_logical_restore_refuses_existing_keys_unless_replace(
    redis_raw: redis.Redis,
    redis_namespace: str,
    cache: autoops.CacheClient,
    restore_url: str,
    tmp_path: Path,
) -> None:
    redis_raw.set(f"{redis_namespace}:k", "old")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_redis(cache, mode="logical")
    target = redis.Redis.from_url(restore_url)
    target.set(f"{redis_namespace}:k", "newer")
    with pytest.raises(RestoreRefusedError, match="already holds keys"):
        backuper.restore_redis(backup, restore_url)
    backuper.restore_redis(backup, restore_url, replace=True)
    assert target.get(f"{redis_namespace}:k") == b"old"
    target.close()


def test_keys_that_vanish_during_the_scan_are_skipped(
    redis_raw: redis.Redis, redis_namespace: str, cache: autoops.CacheClient, tmp_path: Path
) -> None:
    for index in range(50):
        redis_raw.set(f"{redis_namespace}:short:{index}", "x", px=1)
    redis_raw.set(f"{redis_namespace}:stays", "y")
    backup = autoops.Backuper(autoops.LocalStorage(tmp_path)).backup_redis(cache, mode="logical")
    assert backup.key_count is not None
    assert 1 <= backup.key_count <= 51


def test_rdb_snapshot_loads_in_a_private_server_with_every_key(
    redis_raw: redis.Redis, redis_namespace: str, tmp_path: Path
) -> None:
    _fill_every_type(redis_raw, redis_namespace)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_redis(redis_test_url(), mode="rdb")
    assert backup.format == "rdb"
    assert backup.source == f"redis://{REDIS_HOST}:{REDIS_PORT}"
    assert backup.key_count is not None
    assert backup.key_count >= 7
    verified = backuper.verify(backup, restore_test=True)
    assert verified.status == "ok"
    rdb = tmp_path / "restored" / "dump.rdb"
    rdb.parent.mkdir()
    backuper.restore_redis(backup, rdb)
    assert rdb.read_bytes().startswith(b"REDIS")


def test_a_corrupted_logical_dump_fails_verify(
    redis_raw: redis.Redis, redis_namespace: str, cache: autoops.CacheClient, tmp_path: Path
) -> None:
    redis_raw.set(f"{redis_namespace}:k", "v")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_redis(cache, mode="logical")
    (tmp_path / backup.data_file).write_bytes(b"garbage")
    with pytest.raises(BackupVerifyError):
        backuper.verify(backup)
    assert backuper.get(backup.id).status == "corrupt"


def test_logical_verify_with_test_restore_removes_what_it_restored(
    redis_raw: redis.Redis,
    redis_namespace: str,
    cache: autoops.CacheClient,
    restore_url: str,
    tmp_path: Path,
) -> None:
    _fill_every_type(redis_raw, redis_namespace)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_redis(cache, mode="logical")
    backuper.verify(backup, restore_test=restore_url)
    target = redis.Redis.from_url(restore_url)
    assert target.dbsize() == 0
    target.close()


def test_wrong_redis_password_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    storage = autoops.LocalStorage(tmp_path)
    with pytest.raises(autoops.AutoOpsError) as failure:
        autoops.Backuper(storage).backup_redis(
            redis_test_url(auth=f":wrong-{uuid.uuid4().hex}"), mode="rdb"
        )
    assert "wrong-" not in str(failure.value)
    assert storage.names() == []


def test_a_connection_dropped_mid_dump_fails_clearly_and_leaves_nothing(
    redis_raw: redis.Redis,
    redis_namespace: str,
    tcp_proxy: Callable[[str, int], TcpProxy],
    tmp_path: Path,
) -> None:
    _fill_100k(redis_raw, redis_namespace)
    proxy = tcp_proxy(REDIS_HOST, REDIS_PORT)
    storage = autoops.LocalStorage(tmp_path)
    dropper, cut = _drop_on_the_bulk_connection(proxy)
    with (
        autoops.CacheClient.from_url(
            redis_test_url(proxy.address), namespace=redis_namespace
        ) as cache,
        pytest.raises(autoops.AutoOpsError, match="Redis"),
    ):
        autoops.Backuper(storage).backup_redis(cache, mode="logical")
    dropper.join()
    assert cut.is_set()
    assert storage.names() == []


def _fill_100k(raw: redis.Redis, namespace: str) -> None:
    pipe = raw.pipeline(transaction=False)
    for index in range(100_000):
        pipe.set(f"{namespace}:{index}", b"x" * 200)
    pipe.execute()


def _drop_on_the_bulk_connection(proxy: TcpProxy) -> tuple[threading.Thread, threading.Event]:
    """A started thread that drops every connection through ``proxy`` 50 ms after the second
    one (the client's own connection comes first, then the bulk one); the event says it did."""
    cut = threading.Event()

    def drop_when_writing() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proxy.accepted < 2:
            time.sleep(0.001)
        time.sleep(0.05)
        proxy.drop_all()
        cut.set()

    dropper = threading.Thread(target=drop_when_writing)
    dropper.start()
    return dropper, cut


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "aof"}, "unknown Redis backup mode 'aof'; use 'rdb' or 'logical'"),
        ({"pattern": "users:*"}, "pattern= selects keys of a logical dump; use mode='logical'"),
    ],
)
def test_bad_backup_arguments_are_config_errors_on_a_server_and_on_a_cluster(
    tmp_path: Path,
    redis_url: str,
    redis_cluster_topology: Any,
    options: dict[str, Any],
    message: str,
) -> None:
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    for url in (redis_url, redis_cluster_topology.url()):
        with pytest.raises(autoops.ConfigError) as caught:
            backuper.backup_redis(url, **options)
        assert str(caught.value) == message
    assert backuper.list() == []


def test_a_connection_dropped_mid_restore_fails_clearly(
    redis_raw: redis.Redis,
    redis_namespace: str,
    restore_url: str,
    tcp_proxy: Callable[[str, int], TcpProxy],
    tmp_path: Path,
) -> None:
    _fill_100k(redis_raw, redis_namespace)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    with autoops.CacheClient.from_url(redis_test_url(), namespace=redis_namespace) as cache:
        backup = backuper.backup_redis(cache, mode="logical")
    proxy = tcp_proxy(REDIS_HOST, REDIS_PORT)
    dropper, cut = _drop_on_the_bulk_connection(proxy)
    target = redis_test_url(proxy.address, db=int(restore_url.rsplit("/", 1)[1]))
    try:
        with pytest.raises(autoops.AutoOpsError, match="Redis") as failure:
            backuper.restore_redis(backup, target)
    finally:
        dropper.join()
    assert cut.is_set()
    # Not a traceback from inside redis-py or the socket module: autoops's error, with the server.
    assert proxy.address in str(failure.value) or REDIS_HOST in str(failure.value)
