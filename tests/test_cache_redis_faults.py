"""Redis under failure: killed clients, a dropping network, a failover, bad credentials."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

import autoops
from _support.proxy import TcpProxy
from _support.services import REDIS_HOST, REDIS_PORT, redis_server, redis_test_url
from autoops import AuthenticationError, ConnectError, QueryError, RetryPolicy

QUICK = RetryPolicy(attempts=30, timeout=20, wait_initial=0.05, wait_max=0.3, jitter=0.05)


@pytest.fixture
def proxied(
    redis_url: str, redis_namespace: str, tcp_proxy: Callable[[str, int], TcpProxy]
) -> tuple[autoops.CacheClient, TcpProxy]:
    proxy = tcp_proxy(REDIS_HOST, REDIS_PORT)
    cache = autoops.CacheClient.from_url(
        redis_test_url(proxy.address),
        namespace=redis_namespace,
        retry=QUICK,
        socket_timeout=2,
    )
    return cache, proxy


def retries(operation: str) -> int:
    return autoops.retry_totals().get(operation, 0)


def test_a_client_killed_by_the_server_reconnects(
    redis_url: str, redis_namespace: str, redis_raw: redis.Redis
) -> None:
    name = f"aot-{uuid.uuid4().hex[:8]}"
    cache = autoops.CacheClient.from_url(
        redis_url, namespace=redis_namespace, client_name=name, retry=QUICK
    )
    cache.set("k", "before")
    killed = [c for c in redis_raw.client_list() if c.get("name") == name]
    assert killed
    for client in killed:
        redis_raw.execute_command("CLIENT", "KILL", "ID", client["id"])  # type: ignore[no-untyped-call]
    assert cache.get("k") == "before"
    cache.set("k", "after")
    assert cache.get("k") == "after"


def test_reads_succeed_after_a_network_outage(
    proxied: tuple[autoops.CacheClient, TcpProxy],
) -> None:
    cache, proxy = proxied
    cache.set("k", {"v": 1})
    proxy.outage(1.5)
    started = time.monotonic()
    assert cache.get("k") == {"v": 1}
    assert time.monotonic() - started >= 1.0


def test_a_batch_cut_mid_way_is_written_whole_after_the_retry(
    proxied: tuple[autoops.CacheClient, TcpProxy],
) -> None:
    cache, proxy = proxied
    items = {f"bulk:{i}": {"i": i, "pad": "x" * 200} for i in range(60_000)}
    threading.Timer(0.05, proxy.drop_all).start()
    before = retries("redis set_many")
    assert cache.set_many(items) == 60_000
    assert cache.get_many(list(items)) == items
    assert retries("redis set_many") >= before


def test_wrongtype_fails_at_once(cache: autoops.CacheClient, redis_raw: redis.Redis) -> None:
    redis_raw.lpush(cache.key("list"), "x")
    before = retries("redis GET")
    with pytest.raises(QueryError, match="WRONGTYPE"):
        cache.get("list")
    assert retries("redis GET") == before


def test_a_server_that_stays_down_gives_a_clear_error(
    proxied: tuple[autoops.CacheClient, TcpProxy],
) -> None:
    cache, proxy = proxied
    proxy.refuse()
    proxy.drop_all()
    cache.retry = RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.01, jitter=0)
    with pytest.raises(
        ConnectError, match=r"cannot reach Redis at 127\.0\.0\.1:\d+/0.*gave up after 3 attempts"
    ):
        cache.get("k")


@pytest.fixture
def acl_user(redis_raw: redis.Redis) -> Iterator[str]:
    name = f"aot{uuid.uuid4().hex[:8]}"
    redis_raw.execute_command("ACL", "SETUSER", name, "on", ">Right-Secret-1", "~*", "+@all")  # type: ignore[no-untyped-call]
    yield name
    redis_raw.execute_command("ACL", "DELUSER", name)  # type: ignore[no-untyped-call]


def test_wrong_credentials_fail_at_once_without_the_password(acl_user: str) -> None:
    cache = autoops.CacheClient.from_url(redis_test_url(auth=f"{acl_user}:Wrong-Secret-9"))
    before = retries("redis GET")
    with pytest.raises(AuthenticationError) as caught:
        cache.get("k")
    assert "Wrong-Secret-9" not in str(caught.value)
    assert "Wrong-Secret-9" not in repr(cache)
    assert retries("redis GET") == before


def test_right_credentials_work(acl_user: str) -> None:
    cache = autoops.CacheClient.from_url(redis_test_url(auth=f"{acl_user}:Right-Secret-1"))
    key = f"aot:{uuid.uuid4().hex[:12]}:k"
    cache.set(key, {"who": acl_user}, ttl=60)
    assert cache.get(key) == {"who": acl_user}
    assert cache.delete(key) == 1


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[int]:
    """A real Redis replica of a private, empty master, both on free ports, promoted by the
    test (a replica of the shared server would copy whatever it holds, and wait on its size)."""
    (tmp_path / "master").mkdir()
    (tmp_path / "replica").mkdir()
    with (
        redis_server(tmp_path / "master", "--repl-diskless-sync-delay", "0") as master_port,
        redis_server(tmp_path / "replica", "--replicaof", "127.0.0.1", str(master_port)) as port,
    ):
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 30
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                pytest.fail("the replica did not link to its master within 30 s")
            time.sleep(0.05)
        client.close()
        yield port


def test_a_write_to_a_read_only_replica_succeeds_once_it_is_promoted(replica: int) -> None:
    cache = autoops.CacheClient.from_url(
        f"redis://127.0.0.1:{replica}/0", namespace="failover", retry=QUICK
    )
    admin = redis.Redis(port=replica)
    promote = threading.Timer(0.5, admin.execute_command, ("REPLICAOF", "NO", "ONE"))
    before = retries("redis SET")
    promote.start()
    try:
        cache.set("k", "written after failover")
    finally:
        promote.join()
        admin.close()
    assert cache.get("k") == "written after failover"
    assert retries("redis SET") > before
    cache.close()
