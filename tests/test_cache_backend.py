"""The cache backend interface (CacheBackend), the same on real Redis and on the memory backend,
and the scheme table that picks the client class for a URL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

import autoops
from autoops import CacheBackend, ConfigError, FencedBatch


@pytest.fixture(params=["redis", "memory"])
def cache(request: pytest.FixtureRequest) -> Iterator[autoops.CacheClient]:
    if request.param == "redis":
        client = autoops.CacheClient.from_url(
            request.getfixturevalue("redis_url"),
            namespace=request.getfixturevalue("redis_namespace"),
            ttl_jitter=0.5,
        )
    else:
        client = autoops.MemoryCache(namespace="backend-ïface", ttl_jitter=0.5)
    yield client
    client.close()


def remaining_ms(cache: autoops.CacheClient, key: str, redis_url: str) -> float | None:
    """Milliseconds until the full key ``key`` expires, read from the server itself."""
    if isinstance(cache, autoops.MemoryCache):
        seconds = cache.ttl(key[len(cache.key("")) :])
        return None if seconds is None else seconds * 1000
    raw = redis.Redis.from_url(redis_url)
    try:
        value = int(raw.pttl(key))
    finally:
        raw.close()
    return None if value < 0 else value


def backend(cache: autoops.CacheClient) -> CacheBackend:
    """Typed as the Protocol, so mypy proves both backends implement it."""
    return cache


def test_a_lock_is_taken_once_renewed_and_released_only_by_its_holder(
    cache: autoops.CacheClient,
) -> None:
    store, lock = backend(cache), cache.key("2fa_codes:lock")
    assert store.set_if_absent(lock, b"token-a", 60_000)
    assert not store.set_if_absent(lock, b"token-b", 60_000)
    assert store.expire_if_equal(lock, b"token-a", 120_000)
    assert not store.expire_if_equal(lock, b"token-b", 120_000)
    assert not store.delete_if_equal(lock, b"token-b")
    assert store.get_raw(lock) == b"token-a"
    assert store.delete_if_equal(lock, b"token-a")
    assert store.get_raw(lock) is None


def test_compare_and_set_writes_only_over_the_expected_value(
    cache: autoops.CacheClient,
) -> None:
    store, key = backend(cache), cache.key("order-items:position")
    assert store.compare_and_set(key, None, b"mysql-bin.000001:4")
    assert not store.compare_and_set(key, None, b"other")
    assert not store.compare_and_set(key, b"mysql-bin.000001:999", b"other")
    assert store.compare_and_set(key, b"mysql-bin.000001:4", b"mysql-bin.000002:4")
    assert store.get_raw(key) == b"mysql-bin.000002:4"


def test_compare_and_set_sets_the_expiry_it_is_given(
    cache: autoops.CacheClient, request: pytest.FixtureRequest
) -> None:
    key = cache.key("usérs:session")
    assert backend(cache).compare_and_set(key, None, b"v", ttl_ms=60_000)
    left = remaining_ms(cache, key, request.getfixturevalue("redis_url"))
    assert left is not None
    assert 0 < left <= 60_000


def test_get_many_raw_answers_in_order_with_none_for_missing(cache: autoops.CacheClient) -> None:
    cache.set("a", 1)
    cache.set("c", [3])
    assert backend(cache).get_many_raw([cache.key("a"), cache.key("b"), cache.key("c")]) == [
        b"1",
        None,
        b"[3]",
    ]


def test_scan_prefix_yields_every_key_under_the_prefix_and_no_other(
    cache: autoops.CacheClient,
) -> None:
    cache.set_many({f"order-items:{n}": n for n in range(250)})
    cache.set("order-itemsX", 0)
    keys = [
        key for batch in backend(cache).scan_prefix(cache.key("order-items:"), 50) for key in batch
    ]
    assert set(keys) == {cache.key(f"order-items:{n}").encode() for n in range(250)}


def test_a_fenced_batch_writes_rows_deletes_and_meta_while_its_fence_holds(
    cache: autoops.CacheClient,
) -> None:
    store, fence = backend(cache), (cache.key("lock"), b"mine")
    cache.set("users:gone", 1)
    assert store.set_if_absent(*fence, 60_000)
    batch = FencedBatch.from_items(
        fence,
        [(cache.key(f"users:{n}"), b'{"id":%d}' % n) for n in (1, 2**53 + 1)],
        ttl_ms=600_000,
        deletes=[cache.key("users:gone")],
        meta=[(cache.key("checkpoint"), b"42")],
    )
    assert store.write_fenced(batch)
    assert cache.get_many(["users:1", f"users:{2**53 + 1}", "users:gone", "checkpoint"]) == {
        "users:1": {"id": 1},
        f"users:{2**53 + 1}": {"id": 2**53 + 1},
        "checkpoint": 42,
    }


def test_a_fenced_batch_whose_fence_no_longer_holds_writes_nothing(
    cache: autoops.CacheClient,
) -> None:
    store, lock = backend(cache), cache.key("lock")
    assert store.set_if_absent(lock, b"taken-over", 60_000)
    cache.set("users:kept", 1)
    batch = FencedBatch.from_items(
        (lock, b"mine"),
        [(cache.key("users:1"), b"1")],
        deletes=[cache.key("users:kept")],
        meta=[(cache.key("checkpoint"), b"42")],
    )
    assert not store.write_fenced(batch)
    assert cache.get_many(["users:1", "users:kept", "checkpoint"]) == {"users:kept": 1}


def test_a_fenced_batch_draws_the_ttl_jitter_for_each_key(
    cache: autoops.CacheClient, request: pytest.FixtureRequest
) -> None:
    fence = (cache.key("lock"), b"mine")
    assert backend(cache).set_if_absent(*fence, 60_000)
    keys = [cache.key(f"users:{n}") for n in range(200)]
    batch = FencedBatch.from_items(fence, [(key, b"{}") for key in keys], ttl_ms=100_000)
    assert backend(cache).write_fenced(batch)
    url = request.getfixturevalue("redis_url")
    left = [remaining_ms(cache, key, url) for key in keys]
    assert all(left_ms is not None and 0 < left_ms <= 100_000 for left_ms in left)
    assert min(value for value in left if value is not None) < 75_000
    assert len({round(value or 0, -2) for value in left}) > 50


def test_the_meta_of_a_fenced_batch_never_expires(
    cache: autoops.CacheClient, request: pytest.FixtureRequest
) -> None:
    fence = (cache.key("lock"), b"mine")
    assert backend(cache).set_if_absent(*fence, 60_000)
    checkpoint = cache.key("checkpoint")
    batch = FencedBatch.from_items(fence, ttl_ms=1_000, meta=[(checkpoint, b"1")])
    assert backend(cache).write_fenced(batch)
    assert remaining_ms(cache, checkpoint, request.getfixturevalue("redis_url")) is None


def test_packed_rows_are_accepted_as_the_database_builds_them(cache: autoops.CacheClient) -> None:
    fence = (cache.key("lock"), b"mine")
    assert backend(cache).set_if_absent(*fence, 60_000)
    key = cache.key("blob:\xff").encode()
    value = b"\x00\r\n$3\r\n"
    packed = b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(key), key, len(value), value)
    assert backend(cache).write_fenced(FencedBatch(fence, packed, 1))
    assert backend(cache).get_raw(key.decode()) == value


def test_a_lock_expires_after_its_ttl(cache: autoops.CacheClient) -> None:
    lock = cache.key("short-lock")
    assert backend(cache).set_if_absent(lock, b"token", 50)
    time.sleep(0.2)
    assert backend(cache).set_if_absent(lock, b"next", 50)


# the scheme table ---------------------------------------------------------------------------


def test_the_base_class_picks_the_client_by_scheme() -> None:
    client = autoops.CacheClient.from_url(f"memory://{uuid.uuid4().hex}")
    assert type(client) is autoops.MemoryCache


def test_a_backend_class_refuses_another_backends_url() -> None:
    with pytest.raises(ConfigError, match=r"RedisCache cannot open memory://x.*MemoryCache"):
        autoops.RedisCache.from_url("memory://x")


def test_a_backend_class_opens_its_own_url(redis_url: str) -> None:
    with autoops.RedisCache.from_url(redis_url) as client:
        assert client.ping() >= 0


def test_memory_has_no_connection_settings_to_build_from() -> None:
    settings = autoops.CacheClient.from_url("redis://127.0.0.1:6379/0").connection_settings
    with pytest.raises(ConfigError, match="MemoryCache cannot open"):
        autoops.MemoryCache.from_connection_settings(settings)
