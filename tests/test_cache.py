"""CacheClient behaviour, the same on real Redis and on the in-process memory backend."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import autoops
from autoops import CodecError, ConfigError, JsonCodec, RawCodec


@pytest.fixture(params=["redis", "memory"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return f"memory://{uuid.uuid4().hex}"


@pytest.fixture
def cache(backend: str, request: pytest.FixtureRequest) -> Iterator[autoops.CacheClient]:
    namespace = (
        request.getfixturevalue("redis_namespace") if backend.startswith("redis") else "test"
    )
    client = autoops.CacheClient.from_url(backend, namespace=namespace)
    yield client
    client.close()


ROW = {
    "id": 7,
    "name": "Zoë 😀",
    "price": decimal.Decimal("19.90"),
    "created": dt.datetime(2026, 5, 1, 12, 30, 0, 123456),
    "day": dt.date(2026, 5, 1),
    "at": dt.time(8, 15),
    "duration": dt.timedelta(hours=-1, seconds=3),
    "blob": b"\x00\xffbytes",
    "ratio": 0.25,
    "active": True,
    "missing": None,
}


def test_a_row_round_trips_as_plain_json(cache: autoops.CacheClient) -> None:
    cache.set("users:7", ROW)
    assert cache.get("users:7") == {
        "id": 7,
        "name": "Zoë 😀",
        "price": "19.90",
        "created": "2026-05-01T12:30:00.123456",
        "day": "2026-05-01",
        "at": "08:15:00",
        "duration": "-00:59:57",
        "blob": base64.b64encode(b"\x00\xffbytes").decode(),
        "ratio": 0.25,
        "active": True,
        "missing": None,
    }


def test_a_missing_key_gives_the_default(cache: autoops.CacheClient) -> None:
    assert cache.get("nope") is None
    assert cache.get("nope", default=0) == 0


def test_a_key_expires_after_its_ttl(cache: autoops.CacheClient) -> None:
    cache.set("short", 1, ttl=0.2)
    assert cache.get("short") == 1
    time.sleep(0.35)
    assert cache.get("short") is None


def test_ttl_accepts_a_timedelta(cache: autoops.CacheClient) -> None:
    cache.set("k", 1, ttl=dt.timedelta(milliseconds=150))
    time.sleep(0.3)
    assert cache.get("k") is None


@pytest.mark.parametrize("ttl", [0, -1, "10", True])
def test_a_bad_ttl_is_a_config_error(cache: autoops.CacheClient, ttl: Any) -> None:
    with pytest.raises(ConfigError, match="ttl"):
        cache.set("k", 1, ttl=ttl)


def test_delete_counts_the_keys_that_existed(cache: autoops.CacheClient) -> None:
    cache.set_many({"a": 1, "b": 2})
    assert cache.delete("a", "b", "c") == 2
    assert cache.get_many(["a", "b"]) == {}


def test_get_many_leaves_out_missing_keys(cache: autoops.CacheClient) -> None:
    cache.set_many({"a": 1, "b": {"x": [1, 2]}})
    assert cache.get_many(["a", "b", "zzz"]) == {"a": 1, "b": {"x": [1, 2]}}


def test_set_many_writes_every_chunk(backend: str, request: pytest.FixtureRequest) -> None:
    namespace = request.getfixturevalue("redis_namespace") if backend.startswith("redis") else "n"
    cache = autoops.CacheClient.from_url(backend, namespace=namespace, chunk_size=7)
    items = {f"k{i}": {"i": i} for i in range(50)}
    assert cache.set_many(items) == 50
    assert cache.get_many(items) == items


def test_set_many_with_a_ttl_sets_it_on_every_key(cache: autoops.CacheClient) -> None:
    cache.set_many({f"t{i}": i for i in range(5)}, ttl=0.2)
    time.sleep(0.35)
    assert cache.get_many([f"t{i}" for i in range(5)]) == {}


def test_a_value_the_codec_refuses_writes_nothing(cache: autoops.CacheClient) -> None:
    with pytest.raises(CodecError, match="JSON"):
        cache.set_many({"good": 1, "bad": object()})
    assert cache.get("good") is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (float("nan"), "NaN"),
        ({"x": [1, float("inf")]}, "NaN or an infinity"),
        (object(), "object"),
        ({1: "int key"}, "str"),
        ({"s": {1, 2}}, "set"),
        (decimal.Decimal("NaN"), "non-finite"),
    ],
)
def test_values_json_cannot_hold_are_refused_clearly(
    cache: autoops.CacheClient, value: Any, reason: str
) -> None:
    with pytest.raises(CodecError, match=reason):
        cache.set("k", value)


def test_delete_prefix_removes_only_matching_keys(cache: autoops.CacheClient) -> None:
    cache.set_many({"user:1": 1, "user:2": 2, "users": 3, "order:1": 4, "u*": 5})
    assert cache.delete_prefix("user:") == 2
    assert cache.get_many(["user:1", "user:2", "users", "order:1", "u*"]) == {
        "users": 3,
        "order:1": 4,
        "u*": 5,
    }


def test_delete_prefix_treats_glob_characters_literally(cache: autoops.CacheClient) -> None:
    cache.set_many({"a*b": 1, "axb": 2, "a?": 3, "a[1]": 4})
    assert cache.delete_prefix("a*") == 1
    assert cache.delete_prefix("a[") == 1
    assert sorted(cache.get_many(["a*b", "axb", "a?", "a[1]"])) == ["a?", "axb"]


def test_delete_prefix_of_everything_needs_a_namespace(backend: str) -> None:
    bare = autoops.CacheClient.from_url(backend)
    with pytest.raises(ConfigError, match="every key"):
        bare.delete_prefix("")


def test_namespaces_keep_clients_apart(backend: str, request: pytest.FixtureRequest) -> None:
    base = request.getfixturevalue("redis_namespace") if backend.startswith("redis") else "iso"
    first = autoops.CacheClient.from_url(backend, namespace=f"{base}:one")
    second = autoops.CacheClient.from_url(backend, namespace=f"{base}:two")
    first.set("k", "one")
    second.set("k", "two")
    assert (first.get("k"), second.get("k")) == ("one", "two")
    assert first.key("k") == f"{base}:one:k"


def test_ttl_jitter_shortens_ttls_within_bounds(
    backend: str, request: pytest.FixtureRequest
) -> None:
    namespace = request.getfixturevalue("redis_namespace") if backend.startswith("redis") else "j"
    cache = autoops.CacheClient.from_url(backend, namespace=namespace, ttl_jitter=0.5)
    milliseconds = {cache._ttl_ms(100) for _ in range(200)}
    assert all(50_000 <= value <= 100_000 for value in milliseconds if value is not None)
    assert len(milliseconds) > 100


@pytest.mark.parametrize("jitter", [-0.1, 1.0, 2])
def test_bad_ttl_jitter_is_a_config_error(jitter: float) -> None:
    with pytest.raises(ConfigError, match="ttl_jitter"):
        autoops.CacheClient.from_url("memory://", ttl_jitter=jitter)


def test_get_or_set_computes_once_under_a_stampede(cache: autoops.CacheClient) -> None:
    calls = 0
    calls_lock = threading.Lock()

    def expensive() -> dict[str, Any]:
        nonlocal calls
        with calls_lock:
            calls += 1
        time.sleep(0.3)
        return {"price": decimal.Decimal("1.10")}

    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_set("hot", expensive, ttl=30)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == 1
    assert results == [{"price": "1.10"}] * 8


def test_get_or_set_computes_itself_when_the_lock_holder_vanished(
    cache: autoops.CacheClient,
) -> None:
    assert cache.set_if_absent(cache.key("orphan") + ":__lock__", b"dead-caller", 60_000)
    started = time.monotonic()
    assert cache.get_or_set("orphan", lambda: 42, wait=0.3) == 42
    assert time.monotonic() - started < 2


def test_get_or_set_returns_the_cached_value_without_calling(cache: autoops.CacheClient) -> None:
    cache.set("warm", [1, 2])
    assert cache.get_or_set("warm", lambda: pytest.fail("factory called on a hit")) == [1, 2]


def test_raw_codec_stores_bytes_and_text(backend: str) -> None:
    raw = autoops.CacheClient.from_url(
        backend, namespace=f"raw{uuid.uuid4().hex}", codec=RawCodec()
    )
    raw.set("b", b"\x00\x01")
    raw.set("s", "ü")
    assert (raw.get("b"), raw.get("s")) == (b"\x00\x01", "ü".encode())
    with pytest.raises(CodecError, match="bytes or str"):
        raw.set("n", 5)
    raw.delete_prefix("")


class UpperCodec:
    """A user codec: anything with name, encode and decode."""

    name = "upper"

    def encode(self, value: Any) -> bytes:
        return str(value).upper().encode()

    def decode(self, data: bytes) -> Any:
        return data.decode()


def test_a_codec_is_a_small_protocol_users_implement(backend: str) -> None:
    custom = autoops.CacheClient.from_url(
        backend, namespace=f"c{uuid.uuid4().hex}", codec=UpperCodec()
    )
    custom.set("k", "shout")
    assert custom.get("k") == "SHOUT"
    custom.delete_prefix("")


def test_a_non_codec_is_refused() -> None:
    with pytest.raises(ConfigError, match="codec"):
        autoops.CacheClient.from_url("memory://", codec=object())  # type: ignore[arg-type]


def test_keys_must_be_strings(cache: autoops.CacheClient) -> None:
    with pytest.raises(ConfigError, match="keys must be str"):
        cache.set(7, "x")  # type: ignore[arg-type]


def test_ping_returns_the_round_trip(cache: autoops.CacheClient) -> None:
    assert 0 <= cache.ping() < 5


def test_named_memory_caches_share_data_in_a_process() -> None:
    name = uuid.uuid4().hex
    first = autoops.CacheClient.from_url(f"memory://{name}")
    second = autoops.CacheClient.from_url(f"memory://{name}")
    first.set("shared", 1)
    assert second.get("shared") == 1
    assert autoops.CacheClient.from_url("memory://").get("shared") is None


def test_json_codec_output_is_compact_utf8() -> None:
    assert JsonCodec().encode({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()


def test_repr_names_location_and_namespace(cache: autoops.CacheClient) -> None:
    assert cache.namespace is not None
    assert cache.namespace in repr(cache)
    assert "<table>" in cache._repr_html_()
