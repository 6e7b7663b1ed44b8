"""CacheSync on real MariaDB and Redis (and on SQLite + memory://, the embedded default)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis

import autoops
from _support.sync_tables import (
    USERS_DDL,
    add_users,
    cached_rows,
    create_users,
    expected_cache,
)
from _support.sync_tables import make_sync as shared_make_sync


def make_sync(
    db: autoops.DbClient, cache: autoops.CacheClient, **options: Any
) -> autoops.CacheSync:
    # No overlap, so the counts below are exact: a full pass reads every row once.
    return shared_make_sync(db, cache, **{"overlap": 0, **options})


@pytest.fixture
def users_db(mysql_db: autoops.DbClient) -> autoops.DbClient:
    create_users(mysql_db, 1000)
    return mysql_db


@pytest.fixture
def sqlite_memory() -> Iterator[tuple[autoops.DbClient, autoops.CacheClient]]:
    db = autoops.SQLiteClient(":memory:")
    db.execute(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT NOT NULL, email TEXT NOT NULL,"
        " password_hash TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,"
        " updated_at TEXT NOT NULL)"
    )
    add_users(db, range(1, 301))
    cache = autoops.MemoryCache(namespace="app")
    yield db, cache
    db.close()


# full passes ----------------------------------------------------------------------------------


def test_full_pass_caches_every_row_as_the_codec_writes_it(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    report = make_sync(users_db, cache).run_once()

    assert cached_rows(cache) == expected_cache(users_db)
    assert (report.kind, report.rows_read, report.keys_written) == ("full", 1000, 1000)
    assert report.server_side


def test_excluded_columns_are_never_cached(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    make_sync(users_db, cache).run_once()

    assert "password_hash" not in cache.get("users:7")


def test_full_pass_on_sqlite_and_memory_cache_uses_the_codec(
    sqlite_memory: tuple[autoops.DbClient, autoops.CacheClient],
) -> None:
    db, cache = sqlite_memory
    report = make_sync(db, cache).run_once()

    assert cached_rows(cache) == expected_cache(db)
    assert report.keys_written == 300
    assert not report.server_side


def test_mysql_into_the_memory_cache_writes_the_same_values(users_db: autoops.DbClient) -> None:
    cache = autoops.MemoryCache(namespace="app")
    sync = make_sync(users_db, cache, deleted_column="deleted")
    users_db.execute("UPDATE users SET deleted = 1 WHERE id = 3")

    sync.run_once()

    assert sync.plan().server_side
    assert cached_rows(cache) == expected_cache(users_db, deleted_column="deleted")


def test_python_encoding_writes_the_same_values_as_server_encoding(
    users_db: autoops.DbClient, redis_url: str, redis_namespace: str
) -> None:
    server = autoops.CacheClient.from_url(redis_url, namespace=f"{redis_namespace}:server")
    codec = autoops.CacheClient.from_url(redis_url, namespace=f"{redis_namespace}:codec")
    make_sync(users_db, server).run_once()
    make_sync(users_db, codec, server_side=False).run_once()

    assert cached_rows(server) == cached_rows(codec) == expected_cache(users_db)


ALL_TYPES_DDL = """
CREATE TABLE typed (
  id INT UNSIGNED PRIMARY KEY,
  tiny TINYINT, flag TINYINT(1), small SMALLINT, medium MEDIUMINT, big BIGINT,
  ubig BIGINT UNSIGNED,
  name VARCHAR(100), fixed CHAR(10), body TEXT, long_body LONGTEXT, latin VARCHAR(20)
    CHARACTER SET latin1, mood ENUM('happy', 'sad'),
  price DECIMAL(12, 2), ratio DECIMAL(20, 10),
  created DATETIME, created6 DATETIME(6), created3 DATETIME(3), stamp TIMESTAMP(6) NULL,
  day DATE,
  raw VARBINARY(200), blob_ BLOB, bin BINARY(4),
  updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
)
"""
ALL_TYPES_ROWS = [
    (
        1,
        -128,
        1,
        -32768,
        8388607,
        -(2**63),
        2**64 - 1,
        'quote " back \\ slash / tab \t newline \n ctrl \x01 é ü 日本 🎉',
        "abc",
        "x" * 300,
        "long " * 50,
        "café",
        "happy",
        "-12345.67",
        "0.0000000001",
        "2026-03-04 05:06:07",
        "2026-03-04 05:06:07.000000",
        "2026-03-04 05:06:07.120",
        "2026-03-04 05:06:07.000001",
        "2026-12-31",
        b"\x00\xff\x10binary",
        b"b" * 120,
        b"\x01\x02",
    ),
    (
        2,
        0,
        0,
        0,
        0,
        0,
        0,
        "",
        "",
        "",
        "",
        "",
        "sad",
        "0.00",
        "-1.5000000000",
        "1970-01-02 00:00:00",
        "1999-12-31 23:59:59.999999",
        "2000-01-01 00:00:00.000",
        None,
        "1000-01-01",
        b"",
        b"",
        b"\x00\x00\x00\x00",
    ),
    (3,) + (None,) * 22,
]


def test_server_built_json_equals_codec_json_for_every_common_column_type(
    mysql_db: autoops.DbClient, redis_url: str, redis_namespace: str
) -> None:
    mysql_db.execute(ALL_TYPES_DDL)
    columns = (
        "id, tiny, flag, small, medium, big, ubig, name, fixed, body, long_body, latin, mood,"
        " price, ratio, created, created6, created3, stamp, day, raw, blob_, bin"
    )
    marks = ", ".join(["%s"] * 23)
    mysql_db.executemany(
        f"INSERT INTO typed ({columns}) VALUES ({marks})",
        ALL_TYPES_ROWS,
    )
    names = tuple(name.strip() for name in columns.split(","))
    server = autoops.CacheClient.from_url(redis_url, namespace=f"{redis_namespace}:server")
    codec = autoops.CacheClient.from_url(redis_url, namespace=f"{redis_namespace}:codec")
    options: dict[str, Any] = {"table": "typed", "key": "t:{id}", "columns": names}

    fast = autoops.CacheSync(mysql_db, server, **options)
    assert fast.plan().server_side
    fast.run_once()
    autoops.CacheSync(mysql_db, codec, server_side=False, **options).run_once()

    expected = expected_cache(mysql_db, table="typed", columns=names, key="t:{id}")
    assert cached_rows(server, "t:") == expected
    assert cached_rows(codec, "t:") == expected


@pytest.mark.parametrize("column_type", ["FLOAT", "DOUBLE", "YEAR", "BIT(8)"])
def test_types_the_server_writes_differently_fall_back_to_the_codec(
    mysql_db: autoops.DbClient, cache: autoops.CacheClient, column_type: str
) -> None:
    mysql_db.execute(f"CREATE TABLE odd (id INT PRIMARY KEY, v {column_type})")
    value = {"FLOAT": 1.1, "DOUBLE": 0.1, "YEAR": 2024}.get(column_type, b"\x05")
    mysql_db.execute("INSERT INTO odd VALUES (1, %s), (2, NULL)", (value,))
    sync = autoops.CacheSync(mysql_db, cache, table="odd", key="odd:{id}")

    sync.run_once()

    assert not sync.plan().server_side
    assert cached_rows(cache, "odd:") == expected_cache(
        mysql_db, table="odd", columns=("id", "v"), key="odd:{id}"
    )


SPECIAL_DDL = (
    "CREATE TABLE two_factor_codes (id BIGINT PRIMARY KEY, at6 DATETIME(6), at0 DATETIME,"
    " took TIME(3), doc JSON, ubig BIGINT UNSIGNED)"
)
MARKS6 = ", ".join(["%s"] * 6)
SPECIAL_ROWS = [
    (
        2**53 + 1,
        "2026-01-01 00:00:00",
        "2026-01-01 00:00:00",
        "-01:02:03",
        '{"a": [1, 2.5]}',
        2**64 - 1,
    ),
    (-(2**63), "2026-05-01 12:30:00.123456", None, "838:59:59.5", "null", 2**53 - 1),
]


@pytest.mark.parametrize("server_side", [True, False])
def test_big_integers_are_strings_times_keep_their_width_and_json_is_embedded(
    mysql_db: autoops.DbClient, cache: autoops.CacheClient, server_side: bool
) -> None:
    mysql_db.execute(SPECIAL_DDL)
    mysql_db.executemany(f"INSERT INTO two_factor_codes VALUES ({MARKS6})", SPECIAL_ROWS)
    sync = autoops.CacheSync(
        mysql_db, cache, table="two_factor_codes", key="codes:{id}", server_side=server_side
    )

    sync.run_once()

    assert sync.plan().server_side is server_side
    assert cache.get("codes:9007199254740993") == {
        "id": "9007199254740993",
        "at6": "2026-01-01T00:00:00.000000",
        "at0": "2026-01-01T00:00:00",
        "took": "-01:02:03.000",
        "doc": {"a": [1, 2.5]},
        "ubig": "18446744073709551615",
    }
    assert cache.get("codes:-9223372036854775808") == {
        "id": "-9223372036854775808",
        "at6": "2026-05-01T12:30:00.123456",
        "at0": None,
        "took": "838:59:59.500",
        "doc": None,
        "ubig": 9007199254740991,
    }


@pytest.mark.parametrize("server_side", [True, False])
def test_a_codec_made_with_safe_integers_false_keeps_big_integers_as_numbers(
    mysql_db: autoops.DbClient, redis_url: str, redis_namespace: str, server_side: bool
) -> None:
    mysql_db.execute(SPECIAL_DDL)
    mysql_db.executemany(f"INSERT INTO two_factor_codes VALUES ({MARKS6})", SPECIAL_ROWS)
    cache = autoops.CacheClient.from_url(
        redis_url, namespace=redis_namespace, codec=autoops.JsonCodec(safe_integers=False)
    )
    with cache:
        autoops.CacheSync(
            mysql_db, cache, table="two_factor_codes", key="codes:{id}", server_side=server_side
        ).run_once()

        value = cache.get("codes:9007199254740993")

    assert (value["id"], value["ubig"]) == (2**53 + 1, 2**64 - 1)


# incremental passes ---------------------------------------------------------------------------


def test_incremental_pass_reads_only_rows_changed_since_the_checkpoint(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cache, overlap=0)
    sync.run_once()
    users_db.execute(
        "UPDATE users SET email = CONCAT('new', email), updated_at = NOW(6) WHERE id <= 10"
    )

    report = sync.run_once()

    # The ten changed rows, each once: rows stamped at the checkpoint's time are told apart by
    # primary key, so none is read again.
    assert (report.kind, report.rows_read, report.keys_written) == ("incremental", 10, 10)
    assert report.rows_reread == 0
    assert cached_rows(cache) == expected_cache(users_db)


def test_inserts_updates_and_deletes_between_passes_are_all_reflected(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cache)
    sync.run_once()
    users_db.execute("UPDATE users SET username = 'renamed', updated_at = NOW(6) WHERE id = 5")
    add_users(users_db, range(2000, 2010), stamp=None)
    users_db.execute("UPDATE users SET updated_at = NOW(6) WHERE id >= 2000")
    users_db.execute("DELETE FROM users WHERE id IN (7, 8, 9)")

    sync.run_once()
    sync.reconcile()

    assert cached_rows(cache) == expected_cache(users_db)


def test_a_late_commit_with_an_older_timestamp_inside_the_overlap_is_picked_up(
    users_db: autoops.DbClient, cache: autoops.CacheClient, mysql_url: str
) -> None:
    sync = make_sync(users_db, cache, overlap=300)
    sync.run_once()
    late_writer = autoops.DbClient.from_url(mysql_url)
    with late_writer.transaction() as tx:
        # Stamped now, committed only after a newer change has been synced.
        tx.execute("UPDATE users SET username = 'late', updated_at = NOW(6) WHERE id = 3")
        time.sleep(0.05)
        users_db.execute("UPDATE users SET username = 'early', updated_at = NOW(6) WHERE id = 4")
        sync.run_once()
    late_writer.close()
    assert cache.get("users:3")["username"] == "user3"

    sync.run_once()

    assert cache.get("users:3")["username"] == "late"
    assert cached_rows(cache) == expected_cache(users_db)


def test_soft_deleted_rows_lose_their_keys_in_an_incremental_pass(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cache, deleted_column="deleted")
    sync.run_once()
    users_db.execute("UPDATE users SET deleted = 1, updated_at = NOW(6) WHERE id IN (1, 2)")

    report = sync.run_once()

    assert report.keys_deleted == 2
    assert cache.get("users:1") is None
    assert cached_rows(cache) == expected_cache(users_db, deleted_column="deleted")


def test_incremental_and_soft_deletes_work_on_sqlite_and_memory(
    sqlite_memory: tuple[autoops.DbClient, autoops.CacheClient],
) -> None:
    db, cache = sqlite_memory
    sync = make_sync(db, cache, deleted_column="deleted")
    sync.run_once()
    db.execute("UPDATE users SET email = 'x@y', updated_at = '2027-01-01 00:00:00' WHERE id = 9")
    db.execute("UPDATE users SET deleted = 1, updated_at = '2027-01-01 00:00:01' WHERE id = 10")

    report = sync.run_once()

    assert report.kind == "incremental"
    assert cached_rows(cache) == expected_cache(db, deleted_column="deleted")


# reconciliation -------------------------------------------------------------------------------


def test_full_pass_deletes_keys_whose_rows_are_gone(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cache)
    sync.run_once()
    users_db.execute("DELETE FROM users WHERE id > 990 OR id < 3")

    report = sync.run_once(full=True)

    assert report.keys_deleted == 12
    assert cached_rows(cache) == expected_cache(users_db)


def test_full_pass_over_ids_with_gaps_copies_and_reconciles_exactly(
    mysql_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    mysql_db.execute(USERS_DDL)
    add_users(mysql_db, range(1, 3000, 7))
    sync = make_sync(mysql_db, cache)
    sync.run_once()
    cache.set("users:9", "a row deleted long ago")
    mysql_db.execute("DELETE FROM users WHERE id IN (29, 1499, 2997)")

    report = sync.run_once(full=True)

    assert report.keys_deleted == 4
    assert cached_rows(cache) == expected_cache(mysql_db)


def test_text_primary_keys_are_synced_and_reconciled(
    mysql_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    mysql_db.execute("CREATE TABLE codes (code VARCHAR(16) PRIMARY KEY, label VARCHAR(32))")
    mysql_db.executemany(
        "INSERT INTO codes VALUES (%s, %s)", [(f"c-{i:03d}", f"label {i}") for i in range(250)]
    )
    sync = autoops.CacheSync(
        mysql_db, cache, table="codes", key="code:{code}", primary_key="code", batch_size=100
    )
    sync.run_once()
    mysql_db.execute("DELETE FROM codes WHERE code IN ('c-000', 'c-123')")

    report = sync.run_once()

    assert report.keys_deleted == 2
    assert cached_rows(cache, "code:") == expected_cache(
        mysql_db, table="codes", columns=("code", "label"), key="code:{code}", key_column="code"
    )


def test_reconciliation_leaves_bookkeeping_and_foreign_keys_alone(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cache)
    sync.run_once()
    cache.set("users:not-a-number", "someone else's")
    cache.set("users:07", "not a canonical id")
    cache.set("sessions:1", "other prefix")

    report = sync.reconcile()

    assert report.keys_deleted == 0
    assert cache.get("users:not-a-number") == "someone else's"
    assert cache.get("users:07") == "not a canonical id"
    assert cache.get("sessions:1") == "other prefix"
    assert sync.status().checkpoint is not None


# locking and fencing --------------------------------------------------------------------------


def test_a_second_runner_gets_lock_held_error_naming_the_holder(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    holder = make_sync(users_db, cache)
    lock = holder._lock()
    lock.acquire()
    try:
        with pytest.raises(autoops.LockHeldError, match=r"already running on .* pid \d+") as info:
            make_sync(users_db, cache).run_once()
    finally:
        lock.release()
    assert info.value.holder is not None
    assert cached_rows(cache) == {}


def test_a_runner_that_lost_its_lock_writes_nothing(
    users_db: autoops.DbClient, cache: autoops.CacheClient, redis_raw: redis.Redis
) -> None:
    sync = make_sync(users_db, cache)
    original = sync._write_page
    writes = 0

    def write_then_lose_lock(*args: Any) -> None:
        nonlocal writes
        writes += 1
        if writes == 2:
            # As if this process had paused past the lock's expiry and another took it.
            redis_raw.set(cache.key("autoops-sync:users:lock"), b"someone else")
        original(*args)

    sync._write_page = write_then_lose_lock  # type: ignore[method-assign,assignment]
    with pytest.raises(autoops.LockHeldError, match="lost its lock"):
        sync.run_once()
    assert len(cached_rows(cache)) == 100


def test_the_lock_is_renewed_through_a_pass_longer_than_its_ttl(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cache, lock_ttl=1)
    original = sync._write_page

    def slow_write(*args: Any) -> None:
        original(*args)
        time.sleep(0.15)

    sync._write_page = slow_write  # type: ignore[method-assign,assignment]

    report = sync.run_once()

    assert report.ok
    assert cached_rows(cache) == expected_cache(users_db)


def test_the_lock_is_released_after_a_pass(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cache)
    sync.run_once()

    assert sync.status().lock_holder is None
    assert cache.get("autoops-sync:users:lock") is None


# stopping and resuming ------------------------------------------------------------------------


def test_stop_ends_the_pass_after_its_batch_and_the_next_pass_resumes(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cache)
    original = sync._write_page

    def write_then_stop(*args: Any) -> None:
        original(*args)
        sync.stop()

    sync._write_page = write_then_stop  # type: ignore[method-assign,assignment]
    stopped = sync.run_once()
    sync._write_page = original  # type: ignore[method-assign]
    assert not stopped.ok
    assert stopped.keys_written == 100
    assert sync.status().full_pass_in_progress

    resumed = sync.run_once()

    assert resumed.resumed
    assert resumed.keys_written == 900
    assert cached_rows(cache) == expected_cache(users_db)
    assert not sync.status().full_pass_in_progress


def test_run_forever_runs_passes_until_its_stop_event(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cache)
    stop = threading.Event()
    reports: list[autoops.SyncReport] = []

    def collect(report: autoops.SyncReport) -> None:
        reports.append(report)
        if len(reports) == 2:
            stop.set()

    sync.run_forever(0.01, stop_event=stop, on_report=collect, handle_signals=False)

    assert [report.kind for report in reports] == ["full", "incremental"]


def test_run_forever_keeps_going_after_a_failed_pass(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = make_sync(users_db, cache)
    original = sync._run_pass
    calls = 0

    def fail_first(full: bool) -> autoops.SyncReport:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise autoops.ConnectError("cannot reach MySQL (injected)")
        return original(full)

    sync._run_pass = fail_first  # type: ignore[method-assign]
    stop = threading.Event()
    reports: list[autoops.SyncReport] = []

    def collect(report: autoops.SyncReport) -> None:
        reports.append(report)
        stop.set()

    sync.run_forever(0, stop_event=stop, on_report=collect, handle_signals=False)

    assert calls == 2
    assert [report.kind for report in reports] == ["full"]
    assert cached_rows(cache) == expected_cache(users_db)


# configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key": "users:{nickname}"}, "must name the primary key"),
        ({"key": "{id}"}, "literal prefix"),
        ({"columns": ["id", "nickname"]}, "'nickname' is not a column"),
        ({"updated_column": "changed"}, "'changed' is not a column"),
        ({"table": "nobody"}, "does not exist"),
    ],
)
def test_bad_names_fail_before_anything_is_written(
    users_db: autoops.DbClient, cache: autoops.CacheClient, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(autoops.ConfigError, match=message):
        make_sync(users_db, cache, **options).run_once()
    assert cached_rows(cache) == {}


def test_a_table_name_is_quoted_so_it_cannot_carry_sql(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    with pytest.raises(autoops.ConfigError, match="does not exist"):
        make_sync(users_db, cache, table="users`; DROP TABLE users; --").run_once()
    assert users_db.query_one("SELECT COUNT(*) AS n FROM users") == {"n": 1000}


@pytest.mark.parametrize("table", ["users%s", "", "a" * 65, "users\0", "users "])
def test_an_unusable_table_name_is_refused_at_construction(
    users_db: autoops.DbClient, cache: autoops.CacheClient, table: str
) -> None:
    with pytest.raises(autoops.ConfigError, match="not a usable table or column name"):
        make_sync(users_db, cache, table=table)


def test_ttl_is_set_on_every_row_key(
    users_db: autoops.DbClient, cache: autoops.CacheClient, redis_raw: redis.Redis
) -> None:
    make_sync(users_db, cache, ttl=600).run_once()

    assert 0 < redis_raw.pttl(cache.key("users:1")) <= 600_000
    assert redis_raw.pttl(cache.key("autoops-sync:users:checkpoint")) == -1


# reports and status ---------------------------------------------------------------------------


def test_status_is_readable_from_the_cache_alone(
    users_db: autoops.DbClient, cache: autoops.CacheClient, redis_url: str
) -> None:
    make_sync(users_db, cache).run_once()
    monitor_cache = autoops.CacheClient.from_url(redis_url, namespace=cache.namespace)

    status = autoops.read_sync_status(monitor_cache, "users")

    newest = users_db.query_one("SELECT MAX(updated_at) AS m FROM users")
    assert newest is not None
    assert status.checkpoint == newest["m"].isoformat()
    assert status.checkpoint_committed_at is not None
    assert status.checkpoint_committed_at.tzinfo == dt.UTC
    assert status.last_pass is not None
    assert status.last_pass["rows_read"] == 1000
    lag = status.lag_seconds()
    assert lag is not None
    assert 0 <= lag < 60


def test_status_of_a_sync_that_never_ran_says_so(cache: autoops.CacheClient) -> None:
    status = autoops.read_sync_status(cache, "nothing")

    assert status.checkpoint is None
    assert status.lag_seconds() is None


def test_report_reads_well_in_a_terminal_and_in_jupyter(
    users_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    report = make_sync(users_db, cache).run_once()

    assert "rows_read=1000" in repr(report)
    assert "rows/s" in report._repr_html_()
    assert "1,000 rows read" in str(report)
    assert orjson.dumps(report.summary())


# built from settings, as autoops-sync builds it ---------------------------------------------


def test_from_settings_builds_the_sync_the_command_runs(
    users_db: autoops.DbClient, mysql_url: str, redis_url: str, redis_namespace: str, tmp_path: Any
) -> None:
    metrics = tmp_path / "sync.prom"
    path = tmp_path / "autoops.toml"
    path.write_text(
        f'[db]\nurl = "{mysql_url}"\n'
        f'[cache]\nurl = "{redis_url}"\n'
        f'[sync]\ntable = "users"\nkey = "users:{{id}}"\nexclude = ["password_hash"]\n'
        f'updated_column = "updated_at"\nnamespace = "{redis_namespace}"\n'
        f'interval = 5\nmetrics_file = "{metrics}"\n'
    )
    with autoops.CacheSync.from_settings(autoops.load_settings(path), batch_size=100) as sync:
        report = sync.run_once()
        sync.write_metrics(report)
        assert (sync.batch_size, sync.interval, sync.cache.namespace) == (100, 5.0, redis_namespace)
        assert cached_rows(sync.cache) == expected_cache(users_db)
    assert 'autoops_sync_rows_read{sync="users"} 1000.0' in metrics.read_text()


def test_from_settings_refuses_an_unknown_key_before_connecting(tmp_path: Any) -> None:
    path = tmp_path / "autoops.toml"
    path.write_text('[sync]\ntable = "users"\nkey = "users:{id}"\nbatchsize = 5\n')
    with pytest.raises(autoops.ConfigError, match=r"unknown key\(s\) batchsize in \[sync\]"):
        autoops.CacheSync.from_settings(autoops.load_settings(path))


def test_the_old_name_of_ok_still_answers_with_a_deprecation_warning(
    sqlite_memory: tuple[autoops.DbClient, autoops.CacheClient],
) -> None:
    report = make_sync(*sqlite_memory).run_once()
    with pytest.warns(DeprecationWarning, match=r"SyncReport.completed .* use SyncReport.ok"):
        assert report.completed is report.ok is True
