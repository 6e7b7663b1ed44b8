"""An RDB snapshot restored into a running Redis: taken from a private redis-server (db 3 of
several), restored into db 15 of the shared test server, this file's own restore target."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis

import autoops
from _support.certs import make_server_tls
from _support.proxy import TcpProxy
from _support.services import REDIS_HOST, REDIS_PORT, redis_server, redis_test_url
from autoops.backup import Backup, BackupError, RestoreRefusedError
from autoops.backup._redis_rdb import restore_rdb

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DB = 3


@pytest.fixture
def target_url(redis_url: str) -> Iterator[str]:
    """Db 15 of the shared test server, flushed before and after (this file's db only)."""
    url = redis_test_url(db=15)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def scratch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The temporary directory the restore's private server lives in, short enough for its unix
    socket's path, so a test can check nothing is left there."""
    directory = Path(tempfile.mkdtemp(prefix="aot-rdb-"))
    monkeypatch.setattr("tempfile.tempdir", str(directory))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def source(tmp_path: Path) -> Iterator[tuple[str, redis.Redis]]:
    """A private redis-server: the URL of its db 3 and a raw client of it; dbs 0 and 5 hold keys
    of their own, which a restore of db 3 must leave behind."""
    directory = tmp_path / "source"
    directory.mkdir()
    with redis_server(directory) as port:
        for db in (0, 5):
            other = redis.Redis(port=port, db=db)
            other.set("other-db:key", f"from db {db}")
            other.close()
        client = redis.Redis(port=port, db=SOURCE_DB)
        yield f"redis://127.0.0.1:{port}/{SOURCE_DB}", client
        client.close()


def _fill_every_type(raw: redis.Redis) -> None:
    """Every type Redis keeps, each in its small (listpack/intset) and big encoding."""
    raw.set("string:raw", b"\x00\xff binary \xf0\x9f\x98\x80" * 10)
    raw.set("string:int", 2**62)
    raw.set("string:big", os.urandom(1 << 20))
    raw.set("usérs:expiring", "soon", px=3_600_000)
    raw.set("order-items:no-ttl", "kept")
    raw.rpush("list:small", "x", "y", "z")
    raw.rpush("list:big", *[f"item-{i}" * 20 for i in range(5000)])
    raw.sadd("set:intset", *range(100))
    raw.sadd("set:hashtable", *[f"member-{i}" for i in range(1000)])
    raw.sadd("set:small-strings", "p", "q")
    raw.zadd("zset:small", {"one": 1.5, "two": 2.25})
    raw.zadd("zset:skiplist", {f"m{i}": i / 3 for i in range(1000)})
    raw.hset("hash:small", mapping={"a": "1", "b": "2"})
    raw.hset("hash:big", mapping={f"field-{i}": "v" * 100 for i in range(1000)})
    raw.pexpire("hash:big", 7_200_000)
    raw.pfadd("hll:sparse", "a", "b", "c")
    raw.pfadd("hll:dense", *[f"visitor-{i}" for i in range(20_000)])
    for index in range(200):
        raw.xadd("stream:events", {"n": str(index), "payload": "p" * 50}, id=f"{index + 1}-1")
    raw.xgroup_create("stream:events", "workers", id="0")
    raw.xgroup_create("stream:events", "auditors", id="100-1")
    # Read but not acknowledged: these stay pending, each with its consumer and delivery count.
    raw.xreadgroup("workers", "alice", {"stream:events": ">"}, count=30)
    raw.xreadgroup("workers", "bob", {"stream:events": ">"}, count=5)
    raw.xack("stream:events", "workers", "1-1", "2-1")
    raw.xadd("stream:empty", {"x": "1"}, id="5-5")
    raw.xtrim("stream:empty", maxlen=0)


def _value(raw: redis.Redis, key: bytes) -> object:
    kind = raw.type(key)
    if kind == b"string":
        return raw.get(key)
    if kind == b"hash":
        return raw.hgetall(key)
    if kind == b"list":
        return raw.lrange(key, 0, -1)
    if kind == b"set":
        return raw.smembers(key)
    if kind == b"zset":
        return raw.zrange(key, 0, -1, withscores=True)
    # The full form carries the groups, their consumers and pending entries with absolute
    # delivery times (XPENDING's idle times would change while the test runs).
    full: Any = raw.xinfo_stream(key, full=True)
    return (raw.xrange(key), full)


def _encoding(raw: redis.Redis, key: bytes) -> bytes:
    encoding: bytes = raw.object("encoding", key)
    # raw vs embstr is only how a string sits in memory: an RDB holds the bytes, and whoever
    # loads them (a restarted server too) picks embstr for a short one.
    return b"string" if encoding in {b"raw", b"embstr"} else encoding


def _state(raw: redis.Redis) -> dict[bytes, tuple[object, bytes, int]]:
    """Each key's value, encoding and absolute expiry in ms (-1: none)."""
    return {
        key: (_value(raw, key), _encoding(raw, key), int(raw.pexpiretime(key)))
        for key in raw.scan_iter()
    }


def _backup(tmp_path: Path, url: str) -> tuple[autoops.Backuper, Backup]:
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"), progress=False)
    return backuper, backuper.backup_redis(url, mode="rdb")


def test_rdb_restore_round_trips_every_type_and_encoding_of_its_own_database(
    source: tuple[str, redis.Redis], target_url: str, tmp_path: Path
) -> None:
    url, raw = source
    _fill_every_type(raw)
    backuper, backup = _backup(tmp_path, url)
    assert backup.options["db"] == SOURCE_DB
    expected = _state(raw)
    assert backuper.restore_redis(backup, target_url) == len(expected)
    target = redis.Redis.from_url(target_url)
    restored = _state(target)
    target.close()
    assert b"other-db:key" not in restored
    stream: Any = restored[b"stream:events"][0]
    groups = {group["name"]: group for group in stream[1]["groups"]}
    assert (groups[b"workers"]["pel-count"], groups[b"auditors"]["pel-count"]) == (33, 0)
    assert restored.keys() == expected.keys()
    for key, (value, encoding, expire_at) in expected.items():
        assert restored[key][:2] == (value, encoding), key
        assert restored[key][2] == expire_at, key


def test_keys_expired_by_the_time_of_the_restore_are_skipped(
    source: tuple[str, redis.Redis], target_url: str, tmp_path: Path
) -> None:
    url, raw = source
    raw.set("short-lived", "x", px=1500)
    raw.set("long-lived", "y", px=3_600_000)
    backuper, backup = _backup(tmp_path, url)
    time.sleep(1.6)
    assert backuper.restore_redis(backup, target_url) == 1
    target = redis.Redis.from_url(target_url)
    assert target.exists("short-lived") == 0
    assert target.pexpiretime("long-lived") == raw.pexpiretime("long-lived")
    target.close()


def test_a_non_empty_target_is_refused_unless_replace_which_keeps_the_other_keys(
    source: tuple[str, redis.Redis], target_url: str, tmp_path: Path
) -> None:
    url, raw = source
    raw.set("shared", "from the backup")
    raw.set("only-in-backup", "1")
    backuper, backup = _backup(tmp_path, url)
    target = redis.Redis.from_url(target_url)
    target.set("unrelated", "stays")
    with pytest.raises(RestoreRefusedError, match="already holds keys"):
        backuper.restore_redis(backup, target_url)
    assert target.dbsize() == 1
    target.set("shared", "newer")
    assert backuper.restore_redis(backup, target_url, replace=True) == 2
    assert target.mget("shared", "only-in-backup", "unrelated") == [
        b"from the backup",
        b"1",
        b"stays",
    ]
    target.close()


def test_a_manifest_without_a_db_restores_database_0(
    source: tuple[str, redis.Redis], target_url: str, tmp_path: Path
) -> None:
    url, _ = source
    backuper, backup = _backup(tmp_path, url)
    older = dataclasses.replace(backup, options={"mode": "rdb"})
    assert backuper.restore_redis(older, target_url) == 1
    target = redis.Redis.from_url(target_url)
    assert target.get("other-db:key") == b"from db 0"
    target.close()


def test_without_redis_server_on_path_the_restore_is_a_clear_error(
    source: tuple[str, redis.Redis],
    target_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, raw = source
    raw.set("k", "v")
    backuper, backup = _backup(tmp_path, url)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackupError, match="needs redis-server on PATH"):
        backuper.restore_redis(backup, target_url)


def _servers_under(directory: Path) -> list[int]:
    """The PIDs of processes whose command line mentions ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(directory).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_connection_dropped_mid_restore_fails_clearly_and_leaves_no_server_or_file(
    source: tuple[str, redis.Redis],
    target_url: str,
    tcp_proxy: Callable[[str, int], TcpProxy],
    tmp_path: Path,
    scratch: Path,
) -> None:
    url, raw = source
    pipe = raw.pipeline(transaction=False)
    for index in range(200_000):
        pipe.set(f"key:{index}", b"x" * 100)
    pipe.execute()
    backuper, backup = _backup(tmp_path, url)
    proxy = tcp_proxy(REDIS_HOST, REDIS_PORT)
    seen: list[int] = []

    def drop_while_restoring() -> None:
        deadline = time.monotonic() + 60
        # The client's own connection, then the bulk RESTORE connection.
        while time.monotonic() < deadline and proxy.accepted < 2:
            time.sleep(0.001)
        seen.extend(_servers_under(scratch))
        time.sleep(0.05)
        proxy.drop_all()

    dropper = threading.Thread(target=drop_while_restoring)
    dropper.start()
    with pytest.raises(autoops.AutoOpsError, match="Redis"):
        backuper.restore_redis(backup, redis_test_url(proxy.address, db=15))
    dropper.join()
    assert seen, "the private redis-server was not running during the restore"
    assert _servers_under(scratch) == []
    assert list(scratch.iterdir()) == []


def test_an_interrupted_restore_stops_its_server_and_removes_its_files(
    source: tuple[str, redis.Redis],
    target_url: str,
    tmp_path: Path,
    scratch: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, raw = source
    raw.set("k", "v")
    backuper, backup = _backup(tmp_path, url)
    seen: list[int] = []

    def interrupted(*args: object, **kwargs: object) -> list[bytes]:
        seen.extend(_servers_under(scratch))
        raise KeyboardInterrupt

    monkeypatch.setattr("autoops.backup._redis_rdb.restore_entries", interrupted)
    with pytest.raises(KeyboardInterrupt):
        backuper.restore_redis(backup, target_url)
    assert seen
    assert _servers_under(scratch) == []
    assert list(scratch.iterdir()) == []


def test_the_restore_command_loads_an_rdb_into_a_redis_url(
    source: tuple[str, redis.Redis], target_url: str, tmp_path: Path
) -> None:
    url, raw = source
    raw.set("k", "v", px=3_600_000)
    _, backup = _backup(tmp_path, url)
    command = [
        sys.executable, str(ROOT / "scripts" / "autoops-restore"), backup.id,
        "--url", target_url, "--storage", str(tmp_path / "store"),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "AUTOOPS_PROGRESS": "0"},
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    target = redis.Redis.from_url(target_url)
    assert target.get("k") == b"v"
    assert target.pexpiretime("k") == raw.pexpiretime("k")
    target.close()


def test_a_restore_command_stopped_by_sigterm_stops_its_server_and_removes_its_files(
    source: tuple[str, redis.Redis], target_url: str, tmp_path: Path, scratch: Path
) -> None:
    url, raw = source
    pipe = raw.pipeline(transaction=False)
    for index in range(200_000):
        pipe.set(f"key:{index}", b"x" * 100)
    pipe.execute()
    _, backup = _backup(tmp_path, url)
    command = [
        sys.executable, str(ROOT / "scripts" / "autoops-restore"), backup.id,
        "--url", target_url, "--storage", str(tmp_path / "store"),
    ]  # fmt: skip
    restore = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AUTOOPS_PROGRESS": "0", "TMPDIR": str(scratch)},
    )
    target = redis.Redis.from_url(target_url)
    deadline = time.monotonic() + 60
    # Stopped once keys arrive: the private server has loaded the snapshot and is being dumped.
    while target.dbsize() == 0 and restore.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    target.close()
    assert _servers_under(scratch), "the private redis-server was not running"
    restore.send_signal(signal.SIGTERM)
    _, stderr = restore.communicate(timeout=60)
    assert restore.returncode == 130, stderr
    assert _servers_under(scratch) == []
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("hiredis", [True, False], ids=["hiredis", "redis-py-replies"])
def test_an_rdb_restore_into_a_tls_server_sends_no_password_or_data_in_the_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hiredis: bool
) -> None:
    if not hiredis:
        # The path taken where hiredis is not installed: replies read through redis-py.
        monkeypatch.setattr("autoops.backup._redis_logical._has_hiredis", lambda: False)
    password = "tls-S3cret/p@ss:w0rd#2"
    marker = b"plaintext-marker-5d1e0b"
    tls = make_server_tls(tmp_path / "certs")
    directory = tmp_path / "tls-redis"
    directory.mkdir()
    with redis_server(directory, tls=tls, password=password) as port:
        raw = redis.Redis(
            port=port, db=SOURCE_DB, password=password, ssl=True, ssl_ca_certs=str(tls.ca_file)
        )
        raw.set("secret", marker, px=3_600_000)
        raw.hset("hash", mapping={"field": marker})
        ca = quote(str(tls.ca_file))
        auth = quote(password, safe="")
        backuper, backup = _backup(
            tmp_path, f"rediss://:{auth}@127.0.0.1:{port}/{SOURCE_DB}?ssl_ca_certs={ca}"
        )
        relay = TcpProxy("127.0.0.1", port, record=True)
        try:
            target = f"rediss://:{auth}@127.0.0.1:{relay.port}/1?ssl_ca_certs={ca}"
            assert backuper.restore_redis(backup, target) == 2
        finally:
            relay.close()
        restored = redis.Redis(
            port=port, db=1, password=password, ssl=True, ssl_ca_certs=str(tls.ca_file)
        )
        assert restored.get("secret") == marker
        assert restored.pexpiretime("secret") == raw.pexpiretime("secret")
        assert restored.hgetall("hash") == {b"field": marker}
        restored.close()
        raw.close()
    assert len(relay.traffic) > 1_000
    assert password.encode() not in relay.traffic
    assert marker not in relay.traffic


def test_a_snapshot_the_local_redis_server_cannot_load_is_a_clear_error(
    target_url: str, scratch: Path
) -> None:
    # What a snapshot from a newer Redis looks like to an older redis-server: an RDB version
    # it cannot read.
    newer = b"REDIS0099" + b"\xfa\x09redis-ver\x059.9.9" + b"\xff" + b"\x00" * 8
    with autoops.CacheClient.from_url(target_url) as target:
        assert isinstance(target, autoops.RedisCache)
        with pytest.raises(BackupError, match="redis-server could not load the RDB snapshot"):
            restore_rdb([newer], target, 0)
    assert list(scratch.iterdir()) == []
