"""What a Node or PHP app reading the cache sees, for every type in the codec table
(docs/clients.md): values written by CacheClient and by CacheSync (server-built and
Python-encoded), read back through the real Redis by `node` (the `redis` npm package) and by
`php` (php-redis), each printing the value it got with its own language's type."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import autoops
from _support.services import REDIS_URL, _unavailable

SUPPORT = Path(__file__).parent / "_support"
UID = uuid.UUID("6f1e4c52-8a53-4d0e-9b1a-2f5d0c3e7a11")
UTC = dt.UTC


def described(value: Any) -> Any:
    """How the consumer scripts print a decoded JSON value: its type, then its text."""
    if value is None:
        return ["null"]
    if isinstance(value, bool):
        return ["bool", "true" if value else "false"]
    if isinstance(value, int):
        return ["number", str(value)]
    if isinstance(value, float):
        return ["number", repr(value)]
    if isinstance(value, str):
        return ["string", value]
    if isinstance(value, list):
        return ["array", [described(item) for item in value]]
    return ["object", {key: described(item) for key, item in value.items()}]


def read_with_node(keys: list[str]) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (SUPPORT / "node" / "node_modules" / "redis").is_dir():
        _unavailable("node or its redis package is missing: run scripts/services")
    done = subprocess.run(
        [node, str(SUPPORT / "node" / "read.js"), REDIS_URL, *keys],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def read_with_php(keys: list[str], formats: dict[str, str]) -> dict[str, Any]:
    php = shutil.which("php")
    probe = (
        subprocess.run([php or "php", "-m"], capture_output=True, text=True, check=False)
        if php
        else None
    )
    if probe is None or "redis" not in probe.stdout.split():
        _unavailable("php-cli or php-redis is missing: run scripts/services")
    parts = urlsplit(REDIS_URL)
    done = subprocess.run(
        [
            php or "php",
            str(SUPPORT / "read.php"),
            parts.hostname or "127.0.0.1",
            str(parts.port or 6379),
            (parts.path or "/0").strip("/") or "0",
            json.dumps(formats),
            *keys,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def php_view(expected: dict[str, Any], formats: dict[str, str]) -> dict[str, Any]:
    """``expected`` as read.php prints it: the fields it parses as dates in place."""
    view = dict(described(expected)[1])
    for field in formats:
        text = expected[field]
        if text is not None:
            moment = dt.datetime.fromisoformat(text)
            view[field] = ["datetime", moment.strftime("%Y-%m-%d %H:%M:%S.%f")]
    return ["object", view]  # type: ignore[return-value]


# CacheClient ----------------------------------------------------------------------------------

CLIENT_VALUES: dict[str, Any] = {
    "text": 'quote " back \\ é 日本 🎉 \n',
    "small": -42,
    "beyond_2_53": 2**53 + 1,
    "bigint_min": -(2**63),
    "bigint_max": 2**63 - 1,
    "unsigned_max": 2**64 - 1,
    "largest_safe": 2**53 - 1,
    "yes": True,
    "nothing": None,
    "ratio": 0.1,
    "price": decimal.Decimal("19.90"),
    "tiny": decimal.Decimal("0.0000001000"),
    "day": dt.date(2026, 5, 1),
    "clock": dt.time(12, 30),
    "took": -dt.timedelta(hours=1, minutes=2, seconds=3, microseconds=500_000),
    "raw": b"\x00\xff",
    "uid": UID,
    "doc": {"a": [1, 2.5], "n": None},
    "items": [1, "two"],
    "pair": (1, 2),
}
CLIENT_JSON: dict[str, Any] = {
    "text": CLIENT_VALUES["text"],
    "small": -42,
    "beyond_2_53": "9007199254740993",
    "bigint_min": "-9223372036854775808",
    "bigint_max": "9223372036854775807",
    "unsigned_max": "18446744073709551615",
    "largest_safe": 9007199254740991,
    "yes": True,
    "nothing": None,
    "ratio": 0.1,
    "price": "19.90",
    "tiny": "0.0000001000",
    "day": "2026-05-01",
    "clock": "12:30:00.000000",
    "took": "-01:02:03.500000",
    "raw": "AP8=",
    "uid": str(UID),
    "doc": {"a": [1, 2.5], "n": None},
    "items": [1, "two"],
    "pair": [1, 2],
}
CLIENT_ROWS = {
    "on-the-hour": (dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 1, tzinfo=UTC)),
    "with-fraction": (
        dt.datetime(2026, 5, 1, 12, 30, 0, 123_456),
        dt.datetime(2026, 5, 1, 12, 30, 0, 123_456, tzinfo=UTC),
    ),
}
CLIENT_FORMATS = {"when": "Y-m-d\\TH:i:s.u", "when_aware": "Y-m-d\\TH:i:s.uP"}


@pytest.fixture
def client_keys(redis_url: str, redis_namespace: str) -> dict[str, Any]:
    """Full Redis key -> the JSON a consumer must read, written by CacheClient.set."""
    codec = autoops.JsonCodec(safe_integers=True, fraction_digits=6)
    expected: dict[str, Any] = {}
    with autoops.CacheClient.from_url(redis_url, namespace=redis_namespace, codec=codec) as cache:
        for name, (when, when_aware) in CLIENT_ROWS.items():
            cache.set(name, {**CLIENT_VALUES, "when": when, "when_aware": when_aware})
            expected[cache.key(name)] = {
                **CLIENT_JSON,
                "when": when.isoformat(timespec="microseconds"),
                "when_aware": when_aware.isoformat(timespec="microseconds"),
            }
    return expected


def test_node_reads_every_codec_type_written_by_cache_client_exactly(
    client_keys: dict[str, Any],
) -> None:
    seen = read_with_node(list(client_keys))

    assert seen == {key: described(value) for key, value in client_keys.items()}


def test_php_reads_every_codec_type_written_by_cache_client_with_one_date_format(
    client_keys: dict[str, Any],
) -> None:
    seen = read_with_php(list(client_keys), CLIENT_FORMATS)

    assert seen == {key: php_view(value, CLIENT_FORMATS) for key, value in client_keys.items()}


def test_without_safe_integers_node_would_round_big_integers(
    redis_url: str, redis_namespace: str
) -> None:
    with autoops.CacheClient.from_url(redis_url, namespace=redis_namespace) as cache:
        cache.set("plain", {"id": 2**53 + 1})
        seen = read_with_node([cache.key("plain")])

    # The default codec writes the number; JavaScript's double cannot hold it: why the mode exists.
    assert seen[cache.key("plain")] == ["object", {"id": ["number", "9007199254740992"]}]


# CacheSync ------------------------------------------------------------------------------------

SYNC_DDL = (
    "CREATE TABLE order_items (id BIGINT PRIMARY KEY, label VARCHAR(100), qty INT,"
    " big BIGINT, ubig BIGINT UNSIGNED, flag TINYINT(1), ratio DOUBLE, price DECIMAL(10, 2),"
    " at6 DATETIME(6), at0 DATETIME, day DATE, took TIME(6), raw VARBINARY(16), uid CHAR(36),"
    " doc JSON, nothing VARCHAR(1))"
)
SYNC_ROWS = [
    (
        2**53 + 1, 'quote " é 日本 🎉', -42, -(2**63), 2**64 - 1, 1, 0.1, "19.90",
        "2026-01-01 00:00:00", "2026-01-01 00:00:00", "2026-05-01", "-01:02:03.5",
        b"\x00\xff", str(UID), '{"a": [1, 2.5], "n": null}', None,
    ),
    (
        7, "", 0, 2**63 - 1, 2**53 - 1, 0, 2.5, "-0.01",
        "2026-05-01 12:30:00.123456", "2026-05-01 12:30:00", "1000-01-01", "838:59:59",
        b"", str(UID), "[]", None,
    ),
]  # fmt: skip
SYNC_JSON = {
    "9007199254740993": {
        "id": "9007199254740993",
        "label": 'quote " é 日本 🎉',
        "qty": -42,
        "big": "-9223372036854775808",
        "ubig": "18446744073709551615",
        "flag": 1,
        "ratio": 0.1,
        "price": "19.90",
        "at6": "2026-01-01T00:00:00.000000",
        "at0": "2026-01-01T00:00:00",
        "day": "2026-05-01",
        "took": "-01:02:03.500000",
        "raw": "AP8=",
        "uid": str(UID),
        "doc": {"a": [1, 2.5], "n": None},
        "nothing": None,
    },
    "7": {
        "id": 7,
        "label": "",
        "qty": 0,
        "big": "9223372036854775807",
        "ubig": 9007199254740991,
        "flag": 0,
        "ratio": 2.5,
        "price": "-0.01",
        "at6": "2026-05-01T12:30:00.123456",
        "at0": "2026-05-01T12:30:00",
        "day": "1000-01-01",
        "took": "838:59:59.000000",
        "raw": "",
        "uid": str(UID),
        "doc": [],
        "nothing": None,
    },
}
SYNC_FORMATS = {"at6": "Y-m-d\\TH:i:s.u", "at0": "Y-m-d\\TH:i:s"}


@pytest.fixture(params=["server-built", "python-encoded"])
def synced_keys(
    request: pytest.FixtureRequest, mysql_db: autoops.DbClient, cache: autoops.CacheClient
) -> dict[str, Any]:
    """Full Redis key -> the JSON a consumer must read, written by CacheSync either way (DOUBLE
    is always encoded in Python, so the server-built sync leaves it out)."""
    mysql_db.execute(SYNC_DDL)
    marks = ", ".join(["%s"] * 16)
    mysql_db.executemany(f"INSERT INTO order_items VALUES ({marks})", SYNC_ROWS)
    server_side = request.param == "server-built"
    exclude = ("ratio",) if server_side else ()
    sync = autoops.CacheSync(
        mysql_db, cache, table="order_items", key="item:{id}", exclude=exclude,
        server_side=server_side,
    )  # fmt: skip
    sync.run_once()
    assert sync.plan().server_side is server_side
    return {
        cache.key(f"item:{pk}"): {name: v for name, v in row.items() if name not in exclude}
        for pk, row in SYNC_JSON.items()
    }


def test_node_reads_every_synced_column_type_exactly(synced_keys: dict[str, Any]) -> None:
    seen = read_with_node(list(synced_keys))

    assert seen == {key: described(value) for key, value in synced_keys.items()}


def test_php_reads_every_synced_column_type_with_one_date_format_per_column(
    synced_keys: dict[str, Any],
) -> None:
    seen = read_with_php(list(synced_keys), SYNC_FORMATS)

    assert seen == {key: php_view(value, SYNC_FORMATS) for key, value in synced_keys.items()}


# the codec's modes on their own ------------------------------------------------------------


def test_fraction_digits_refuses_to_cut_digits_off() -> None:
    codec = autoops.JsonCodec(fraction_digits=3)

    assert codec.encode(dt.datetime(2026, 1, 1, 0, 0, 0, 120_000)) == b'"2026-01-01T00:00:00.120"'
    with pytest.raises(autoops.CodecError, match="more than 3 fraction digits"):
        codec.encode(dt.datetime(2026, 1, 1, 0, 0, 0, 120_001))


@pytest.mark.parametrize("digits", [-1, 7, 2.5, True])
def test_fraction_digits_outside_0_to_6_is_a_config_error(digits: object) -> None:
    with pytest.raises(autoops.ConfigError, match="fraction_digits"):
        autoops.JsonCodec(fraction_digits=digits)  # type: ignore[arg-type]


def test_safe_integers_keeps_other_encoding_errors_clear() -> None:
    codec = autoops.JsonCodec(safe_integers=True)

    assert codec.encode([2**53 - 1, -(2**53), 2**80]) == (
        b'[9007199254740991,"-9007199254740992","1208925819614629174706176"]'
    )
    with pytest.raises(autoops.CodecError, match="a set has no JSON form"):
        codec.encode({"ids": {2**60}})
    assert repr(codec) == "JsonCodec(safe_integers=True)"
