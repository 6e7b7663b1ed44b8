"""CacheClient on Redis Sentinel and Redis Cluster: URLs, the same API, and failovers mid-write.

The cluster (3 masters, 3 replicas) and the Sentinel group (a master, 2 replicas, 3 sentinels)
are private servers started once per session (tests/_support/redis_topologies.py). Every test
writes under a namespace of its own; tests that kill or fail over a node leave every node up.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

import autoops
from _support.redis_topologies import RedisClusterTopology, SentinelTopology

# URLs -------------------------------------------------------------------------------------------


def test_sentinel_url_names_the_sentinels_the_master_and_the_database() -> None:
    client = autoops.CacheClient.from_url(
        "redis+sentinel://app:s%2Fecret@s1.example:26379,s2.example/cache-main/3"
    )
    settings = client.connection_settings
    assert isinstance(client, autoops.SentinelCache)
    assert settings.hosts == (("s1.example", 26379), ("s2.example", 26379))
    assert settings.service == "cache-main"
    assert settings.db == 3
    assert settings.username == "app"
    assert settings.password == autoops.Secret("s/ecret")


def test_cluster_url_names_its_seed_nodes() -> None:
    client = autoops.CacheClient.from_url("redis+cluster://n1.example:7000,n2.example:7001")
    assert isinstance(client, autoops.ClusterCache)
    assert client.connection_settings.hosts == (("n1.example", 7000), ("n2.example", 7001))


def test_tls_forms_of_both_urls_carry_tls_settings() -> None:
    sentinel = autoops.CacheClient.from_url(
        "rediss+sentinel://s1:26379/mymaster/0?ssl_ca_certs=/etc/ca.pem"
    )
    cluster = autoops.CacheClient.from_url("rediss+cluster://n1:7000?ssl_cert_reqs=none")
    assert sentinel.connection_settings.tls == autoops.TlsSettings(ca_file="/etc/ca.pem")
    assert cluster.connection_settings.tls is not None
    assert cluster.connection_settings.tls.verify == "none"


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://app:hunter2@s1:26379,s2:26379/mymaster/0",
        "redis+cluster://app:hunter2@n1:7000,n2:7001",
    ],
)
def test_scale_out_urls_never_show_the_password(url: str) -> None:
    client = autoops.CacheClient.from_url(url)
    shown = [repr(client), str(client.connection_settings), repr(client.connection_settings)]
    shown.append(client.connection_settings.redacted())
    assert all("hunter2" not in text for text in shown)
    assert "app:***@" in client.connection_settings.redacted()


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+sentinel://s1:26379", "names no Sentinel master"),
        ("redis+cluster://n1:7000/2", "only database 0"),
        ("redis+cluster://n1:70x0", "bad port"),
        ("redis+sentinel://s1:26379/mymaster/zero", "bad database number"),
    ],
)
def test_a_malformed_scale_out_url_says_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(autoops.ConfigError, match=complaint):
        autoops.CacheClient.from_url(url)


def test_settings_file_takes_a_cluster_url(
    tmp_path: Path, redis_cluster_topology: RedisClusterTopology
) -> None:
    settings = tmp_path / "autoops.toml"
    settings.write_text(
        f'[cache]\nurl = "{redis_cluster_topology.url()}"\n'
        f'namespace = "aot:{uuid.uuid4().hex[:10]}"\n'
    )
    with autoops.CacheClient.from_config(settings) as client:
        assert isinstance(client, autoops.ClusterCache)
        client.set("from-file", 1)
        assert client.get("from-file") == 1
        client.delete("from-file")


# Cluster ----------------------------------------------------------------------------------------


def test_cluster_set_many_spreads_keys_over_every_master_and_get_many_reads_them_back(
    cluster: autoops.CacheClient, redis_cluster_topology: RedisClusterTopology
) -> None:
    values = {f"usérs:{index}": {"id": index, "n": 2**60 + index} for index in range(5_000)}
    assert cluster.set_many(values) == 5_000
    holders = {
        redis_cluster_topology.master_of_key(cluster.key(name)) for name in list(values)[:50]
    }
    assert len(holders) == 3
    names = [*values, "missing"]
    assert cluster.get_many(names) == values


def test_cluster_set_many_with_a_ttl_sets_it_on_every_key(cluster: autoops.CacheClient) -> None:
    cluster.set_many({f"t:{index}": index for index in range(500)}, ttl=60)
    raw = cluster.redis  # type: ignore[attr-defined]
    ttls = {raw.pttl(cluster.key(f"t:{index}")) for index in range(0, 500, 50)}
    assert all(0 < ttl <= 60_000 for ttl in ttls)


def test_cluster_keys_with_hash_tags_land_in_one_slot(cluster: autoops.CacheClient) -> None:
    cluster.set_many({"{order-items}:1": "a", "{order-items}:2": "b", "2fa_codes:{x}": "c"})
    assert cluster.get_many(["{order-items}:1", "{order-items}:2", "2fa_codes:{x}"]) == {
        "{order-items}:1": "a",
        "{order-items}:2": "b",
        "2fa_codes:{x}": "c",
    }


def test_cluster_delete_prefix_scans_every_master(cluster: autoops.CacheClient) -> None:
    cluster.set_many({f"gone:{index}": index for index in range(3_000)})
    cluster.set_many({f"kept:{index}": index for index in range(10)})
    assert cluster.delete_prefix("gone:") == 3_000
    assert cluster.get_many([f"gone:{index}" for index in range(3_000)]) == {}
    assert len(cluster.get_many([f"kept:{index}" for index in range(10)])) == 10


def test_cluster_delete_counts_keys_across_slots(cluster: autoops.CacheClient) -> None:
    cluster.set_many({"a": 1, "b": 2, "c": 3})
    assert cluster.delete("a", "b", "c", "never-there") == 3


def test_cluster_get_or_set_runs_the_factory_once(cluster: autoops.CacheClient) -> None:
    calls: list[int] = []

    def factory() -> int:
        calls.append(1)
        time.sleep(0.2)
        return 42

    threads = [
        threading.Thread(target=lambda: cluster.get_or_set("stampede", factory, ttl=30))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cluster.get("stampede") == 42
    assert len(calls) == 1


def test_cluster_ping_answers(cluster: autoops.CacheClient) -> None:
    assert cluster.ping() > 0


def test_cluster_unreachable_is_a_clear_connect_error() -> None:
    client = autoops.CacheClient.from_url(
        "redis+cluster://127.0.0.1:1", retry=autoops.RetryPolicy.none()
    )
    with pytest.raises(autoops.ConnectError, match=r"127\.0\.0\.1:1\b"):
        client.get("anything")


def _write_through(
    client: autoops.CacheClient, batches: int, size: int, fault: Callable[[], object]
) -> None:
    """``set_many`` of ``batches`` batches of ``size`` keys in a thread; once three are written,
    ``fault`` runs; then every batch must have been written without an error."""
    errors: list[BaseException] = []
    done: list[int] = []

    def run() -> None:
        try:
            for batch in range(batches):
                client.set_many({f"w:{batch}:{index}": batch for index in range(size)})
                done.append(batch)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    while len(done) < 3 and thread.is_alive():
        time.sleep(0.01)
    try:
        fault()
    finally:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(done) == batches


def _all_written(client: autoops.CacheClient, batches: int, size: int) -> None:
    names = [f"w:{batch}:{index}" for batch in range(batches) for index in range(size)]
    found = client.get_many(names)
    missing = [name for name in names if name not in found]
    assert not missing, f"{len(missing)} keys lost, e.g. {missing[:5]}"


def test_cluster_set_many_survives_a_master_killed_mid_write(
    cluster: autoops.CacheClient, redis_cluster_topology: RedisClusterTopology
) -> None:
    victim = redis_cluster_topology.master_of_key(cluster.key("w:0:0"))
    try:
        _write_through(cluster, 30, 5_000, lambda: redis_cluster_topology.kill(victim))
        assert victim not in redis_cluster_topology.masters()
        _all_written(cluster, 30, 5_000)
    finally:
        redis_cluster_topology.restart(victim)
        redis_cluster_topology.wait_healthy()


def test_cluster_set_many_survives_a_manual_cluster_failover(
    cluster: autoops.CacheClient, redis_cluster_topology: RedisClusterTopology
) -> None:
    master = redis_cluster_topology.master_of_key(cluster.key("w:0:0"))
    (replica,) = redis_cluster_topology.replicas_of(master)

    def failover() -> None:
        with contextlib.closing(redis_cluster_topology.node(replica).client()) as client:
            client.execute_command("CLUSTER FAILOVER")  # type: ignore[no-untyped-call]

    _write_through(cluster, 30, 5_000, failover)
    redis_cluster_topology.wait_healthy()
    assert replica in redis_cluster_topology.masters()
    _all_written(cluster, 30, 5_000)


def _admin(topology: RedisClusterTopology, port: int) -> contextlib.closing[redis.Redis]:
    return contextlib.closing(topology.node(port).client())


def _node_id(topology: RedisClusterTopology, port: int) -> str:
    with _admin(topology, port) as client:
        value = client.execute_command("CLUSTER", "MYID")  # type: ignore[no-untyped-call]
    return value.decode() if isinstance(value, bytes) else str(value)


def _migrate(topology: RedisClusterTopology, source: int, target: int, keys: list[str]) -> None:
    if keys:
        with _admin(topology, source) as client:
            client.execute_command(  # type: ignore[no-untyped-call]
                "MIGRATE", "127.0.0.1", target, "", 0, 10_000, "REPLACE", "KEYS", *keys
            )


def _finish_migration(topology: RedisClusterTopology, slot: int, source: int, target: int) -> None:
    """Move every key of ``slot`` still on ``source`` and give the slot to ``target`` (the
    target first, then the source, then the other masters, as ``redis-cli --cluster`` does)."""
    while True:
        with _admin(topology, source) as client:
            keys = client.execute_command(  # type: ignore[no-untyped-call]
                "CLUSTER", "GETKEYSINSLOT", slot, 1000
            )
        if not keys:
            break
        _migrate(topology, source, target, [key.decode() for key in keys])
    target_id = _node_id(topology, target)
    others = [port for port in topology.masters() if port not in (source, target)]
    for port in [target, source, *others]:
        with _admin(topology, port) as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)  # type: ignore[no-untyped-call]


def test_cluster_set_many_writes_a_migrating_slot_and_then_follows_it_moved(
    cluster: autoops.CacheClient, redis_cluster_topology: RedisClusterTopology
) -> None:
    topology = redis_cluster_topology
    tag = f"{{order-items-{uuid.uuid4().hex[:8]}}}"
    tagged = [f"{tag}:{index}" for index in range(6)]
    cluster.set_many(dict.fromkeys(tagged[:4], "old"))
    source = topology.master_of_key(cluster.key(tagged[0]))
    target = next(port for port in topology.masters() if port != source)
    with _admin(topology, source) as client:
        slot = int(client.execute_command("CLUSTER", "KEYSLOT", cluster.key(tagged[0])))  # type: ignore[no-untyped-call]
    source_id, target_id = _node_id(topology, source), _node_id(topology, target)
    try:
        with _admin(topology, target) as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)  # type: ignore[no-untyped-call]
        with _admin(topology, source) as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)  # type: ignore[no-untyped-call]
        _migrate(topology, source, target, [cluster.key(name) for name in tagged[:2]])
        # The slot's MSET is answered TRYAGAIN (some keys moved) and is written key by key,
        # following ASK; every other slot is written as usual.
        others = {f"order-items:{index}": index for index in range(3_000)}
        newer = {**dict.fromkeys(tagged, "new"), **others}
        assert cluster.set_many(newer) == len(newer)
        assert cluster.get_many(list(newer)) == newer
    finally:
        _finish_migration(topology, slot, source, target)
    assert topology.master_of_key(cluster.key(tagged[0])) == target
    # The client's slot table still gives the slot to the source, which answers MOVED: the table
    # is rebuilt and the slot sent again.
    newest = dict.fromkeys(tagged, "newest")
    assert cluster.set_many({**newest, **{f"2fa_codes:{i}": i for i in range(2_000)}}) == 2_006
    with _admin(topology, target) as client:
        held = client.mget([cluster.key(name) for name in tagged])
    assert held == [b'"newest"'] * 6
    assert cluster.get_many(tagged) == newest


def test_cluster_set_many_refused_by_a_full_master_is_a_clear_error_and_nothing_hangs(
    cluster: autoops.CacheClient, redis_cluster_topology: RedisClusterTopology
) -> None:
    victim = redis_cluster_topology.masters()[0]
    values = {f"full:{index}": index for index in range(3_000)}
    with _admin(redis_cluster_topology, victim) as admin:
        limit = str(admin.config_get("maxmemory")["maxmemory"])
        policy = str(admin.config_get("maxmemory-policy")["maxmemory-policy"])
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        try:
            started = time.monotonic()
            with pytest.raises(autoops.QueryError, match="out of memory") as raised:
                cluster.set_many(values)
            # Not retried: an out-of-memory master answers the same until someone acts.
            assert time.monotonic() - started < 10
            assert f"answered by the master at 127.0.0.1:{victim}" in str(raised.value)
        finally:
            admin.config_set("maxmemory", limit)
            admin.config_set("maxmemory-policy", policy)
    # Every connection is in step again: the same write now succeeds and reads back.
    assert cluster.set_many(values) == 3_000
    assert cluster.get_many(list(values)) == values


# Sentinel ---------------------------------------------------------------------------------------


def test_sentinel_client_writes_to_the_master_the_sentinels_name(
    sentinel: autoops.CacheClient, redis_sentinel_topology: SentinelTopology
) -> None:
    sentinel.set_many({f"s:{index}": index for index in range(1_000)})
    port = redis_sentinel_topology.master_port()
    with contextlib.closing(redis_sentinel_topology.server(port).client()) as client:
        assert client.get(sentinel.key("s:7")) == b"7"
    assert sentinel.get_many(["s:1", "s:999", "nope"]) == {"s:1": 1, "s:999": 999}
    assert sentinel.delete_prefix("s:") == 1_000


def test_sentinel_writes_survive_a_sentinel_failover(
    sentinel: autoops.CacheClient, redis_sentinel_topology: SentinelTopology
) -> None:
    before = redis_sentinel_topology.master_port()
    _write_through(sentinel, 40, 2_000, redis_sentinel_topology.failover)
    assert redis_sentinel_topology.master_port() != before
    _all_written(sentinel, 40, 2_000)
    redis_sentinel_topology.wait_settled()


def test_sentinel_writes_survive_the_master_killed(
    sentinel: autoops.CacheClient, redis_sentinel_topology: SentinelTopology
) -> None:
    before = redis_sentinel_topology.master_port()
    sentinel.set("before-kill", 1)
    redis_sentinel_topology.server(before).kill()
    try:
        sentinel.set("during-failover", 2)
        assert redis_sentinel_topology.master_port() != before
        assert sentinel.get_many(["during-failover"]) == {"during-failover": 2}
    finally:
        redis_sentinel_topology.restart(before)
        redis_sentinel_topology.wait_settled(seconds=60)


def test_sentinel_set_many_survives_the_master_killed_mid_write(
    sentinel: autoops.CacheClient, redis_sentinel_topology: SentinelTopology
) -> None:
    before = redis_sentinel_topology.master_port()
    try:
        _write_through(sentinel, 30, 5_000, redis_sentinel_topology.server(before).kill)
        assert redis_sentinel_topology.master_port() != before
        _all_written(sentinel, 30, 5_000)
    finally:
        redis_sentinel_topology.restart(before)
        redis_sentinel_topology.wait_settled(seconds=60)


def test_sentinel_master_for_an_unknown_name_is_a_clear_error(
    redis_sentinel_topology: SentinelTopology,
) -> None:
    url = redis_sentinel_topology.url().replace("/mymaster/", "/no-such-master/")
    client = autoops.CacheClient.from_url(url, retry=autoops.RetryPolicy.none())
    with pytest.raises(autoops.ConnectError, match="no-such-master"):
        client.get("x")


def test_sentinel_connection_settings_open_the_current_master(
    sentinel: autoops.CacheClient, redis_sentinel_topology: SentinelTopology
) -> None:
    connection = sentinel.connection_settings.open_connection()
    try:
        connection.send_command("INFO", "replication")  # type: ignore[no-untyped-call]
        info = connection.read_response()
        assert b"role:master" in info
        assert connection.port == redis_sentinel_topology.master_port()  # type: ignore[attr-defined]
    finally:
        connection.disconnect()  # type: ignore[no-untyped-call]
