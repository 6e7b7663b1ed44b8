"""CacheSync(source="binlog") against a private MariaDB with a row-based binary log: the
preconditions, the snapshot hand-off, and every kind of change, each ending with the cache
equal to the table."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import autoops
from _support.binlog import execute, scratch_database, start_row_logged, steady_writer
from _support.mariadb_pair import MariaDbInstance
from _support.services import promtool_accepts, redis_test_url
from _support.sync_tables import CACHED, cached_rows, create_users, expected_cache

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDbInstance]:
    instance = start_row_logged(tmp_path_factory.mktemp("binlog"))
    yield instance
    instance.stop()


@pytest.fixture
def db(server: MariaDbInstance) -> Iterator[autoops.DbClient]:
    with scratch_database(server) as client:
        yield client


def run(server: MariaDbInstance, db: autoops.DbClient, *statements: str) -> None:
    execute(server, db.connection_settings.database, *statements)


def binlog_sync(
    db: autoops.DbClient, cache: autoops.CacheClient, **options: Any
) -> autoops.CacheSync:
    settings: dict[str, Any] = {
        "table": "users",
        "key": "users:{id}",
        "exclude": ["password_hash"],
        "batch_size": 100,
        "progress": False,
        "source": "binlog",
        **options,
    }
    return autoops.CacheSync(db, cache, **settings)


def assert_cache_equals_table(
    db: autoops.DbClient, cache: autoops.CacheClient, **options: Any
) -> None:
    prefix = options.get("key", "users:{id}").split("{")[0]
    assert cached_rows(cache, prefix) == expected_cache(db, **options)


# preconditions -------------------------------------------------------------------------------


@pytest.fixture
def users(db: autoops.DbClient) -> autoops.DbClient:
    create_users(db, 200)
    return db


@pytest.fixture
def global_setting(server: MariaDbInstance) -> Iterator[Any]:
    """Change a global variable of the private server for one test, restored afterwards."""
    changed: dict[str, Any] = {}
    admin = server.connect()

    def change(name: str, value: str) -> None:
        with admin.cursor() as cursor:
            cursor.execute(f"SELECT @@GLOBAL.{name} AS v")
            row = cursor.fetchone()
            assert row is not None
            changed.setdefault(name, row["v"])
            cursor.execute(f"SET GLOBAL {name} = %s", (value,))

    yield change
    with admin.cursor() as cursor:
        for name, value in changed.items():
            cursor.execute(f"SET GLOBAL {name} = %s", (value,))
    admin.close()


def test_a_server_without_a_binary_log_is_a_config_error_naming_log_bin(
    mysql_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    create_users(mysql_db, 3)
    sync = binlog_sync(mysql_db, cache)
    with pytest.raises(autoops.ConfigError, match=r"log_bin is OFF.*--log-bin"):
        sync.run_once()
    assert cached_rows(cache) == {}


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("binlog_format", "STATEMENT", r"binlog_format is STATEMENT.*binlog_format=ROW"),
        ("binlog_row_image", "MINIMAL", r"binlog_row_image is MINIMAL.*binlog_row_image=FULL"),
        (
            "binlog_row_metadata",
            "MINIMAL",
            r"binlog_row_metadata is MINIMAL.*binlog_row_metadata=FULL",
        ),
    ],
)
def test_a_binary_log_without_full_row_events_is_a_config_error_naming_the_setting(
    users: autoops.DbClient,
    cache: autoops.CacheClient,
    global_setting: Any,
    setting: str,
    value: str,
    message: str,
) -> None:
    global_setting(setting, value)
    with pytest.raises(autoops.ConfigError, match=message):
        binlog_sync(users, cache).run_once()
    assert cached_rows(cache) == {}


def test_a_user_without_replication_privileges_is_told_what_to_grant_by_mariadbs_names(
    server: MariaDbInstance, users: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    database = users.connection_settings.database
    run(server, users, "CREATE USER 'reader'@'%' IDENTIFIED BY 'secret-pw'")
    try:
        run(server, users, f"GRANT SELECT ON `{database}`.* TO 'reader'@'%'")
        reader = autoops.DbClient.from_url(
            f"mysql://reader:secret-pw@127.0.0.1:{server.port}/{database}"
        )
        with reader, pytest.raises(autoops.ConfigError) as caught:
            binlog_sync(reader, cache).run_once()
        text = str(caught.value)
        assert "REPLICATION SLAVE" in text
        assert "BINLOG MONITOR" in text
        assert "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.*" in text
        assert "secret-pw" not in text
        assert cached_rows(cache) == {}
    finally:
        run(server, users, "DROP USER 'reader'@'%'")


def test_a_user_with_both_replication_privileges_may_sync(
    server: MariaDbInstance, users: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    database = users.connection_settings.database
    run(server, users, "CREATE USER 'replica'@'%' IDENTIFIED BY 'pw'")
    try:
        run(
            server,
            users,
            f"GRANT SELECT ON `{database}`.* TO 'replica'@'%'",
            "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'replica'@'%'",
        )
        replica = autoops.DbClient.from_url(
            f"mysql://replica:pw@127.0.0.1:{server.port}/{database}"
        )
        with replica:
            sync = binlog_sync(replica, cache)
            sync.run_once()
            run(server, users, "UPDATE users SET username = 'changed' WHERE id = 7")
            sync.run_once()
        assert_cache_equals_table(users, cache)
    finally:
        run(server, users, "DROP USER 'replica'@'%'")


def test_the_servers_own_server_id_is_a_clash_and_a_config_error(
    users: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    with pytest.raises(autoops.ConfigError, match=r"server_id=1 is the server_id of .* itself"):
        binlog_sync(users, cache, server_id=1).run_once()
    assert cached_rows(cache) == {}


def test_server_id_defaults_to_a_random_id_in_a_high_range(
    users: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    ids = {binlog_sync(users, cache)._binlog.server_id for _ in range(5)}  # type: ignore[union-attr]
    assert len(ids) > 1
    assert all(id_ >= 1_000_000_000 for id_ in ids)


# the snapshot and the hand-off to the stream --------------------------------------------------


def test_a_writer_running_through_the_snapshot_leaves_the_cache_equal_to_the_table(
    server: MariaDbInstance, db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    create_users(db, 20_000)
    database = db.connection_settings.database
    with steady_writer(server, database, max_id=25_000, seed=7) as written:
        first = binlog_sync(db, cache, batch_size=500).run_once()
        writes = written()
    assert first.kind == "snapshot"
    assert writes > 0
    binlog_sync(db, cache).run_once()
    assert_cache_equals_table(db, cache)


def test_the_first_run_takes_a_snapshot_and_deletes_keys_of_rows_that_are_gone(
    users: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    cache.set("users:999999", {"stale": True})
    report = binlog_sync(users, cache).run_once()
    assert report.kind == "snapshot"
    assert report.keys_written == 200
    assert report.keys_deleted == 1
    assert_cache_equals_table(users, cache)


def test_the_report_and_status_show_the_position_and_no_lag_at_the_end(
    server: MariaDbInstance, users: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = binlog_sync(users, cache)
    sync.run_once()
    run(
        server,
        users,
        "UPDATE users SET username = 'x' WHERE id <= 5",
        "DELETE FROM users WHERE id = 9",
    )
    report = sync.run_once()
    assert (report.kind, report.events_read, report.keys_written, report.keys_deleted) == (
        "stream",
        6,
        5,
        1,
    )
    assert report.checkpoint.startswith("binlog.")
    assert report.lag_seconds == 0
    assert report.behind_bytes == 0
    status = sync.status()
    assert status.checkpoint == report.checkpoint
    assert status.behind_bytes == 0
    lag = status.lag_seconds()
    assert lag is not None
    assert lag < 60


# changes ---------------------------------------------------------------------------------------


@pytest.fixture
def synced(users: autoops.DbClient, cache: autoops.CacheClient) -> autoops.CacheSync:
    sync = binlog_sync(users, cache)
    sync.run_once()
    return sync


def test_inserts_updates_and_hard_deletes_are_applied_at_once(
    server: MariaDbInstance, synced: autoops.CacheSync, users: autoops.DbClient
) -> None:
    run(
        server,
        users,
        "INSERT INTO users (id, username, email, password_hash) VALUES (1001, 'n', 'e', 'p')",
        "UPDATE users SET email = 'new@example.com' WHERE id = 3",
        "DELETE FROM users WHERE id = 4",
    )
    synced.run_once()
    assert synced.cache.get("users:4") is None
    assert synced.cache.get("users:3")["email"] == "new@example.com"
    assert_cache_equals_table(users, synced.cache)


def test_replace_and_multi_row_statements_are_applied(
    server: MariaDbInstance, synced: autoops.CacheSync, users: autoops.DbClient
) -> None:
    run(
        server,
        users,
        "REPLACE INTO users (id, username, email, password_hash) VALUES (5, 'r5', 'e', 'p'), "
        "(2000, 'r2000', 'e', 'p')",
        "INSERT INTO users (id, username, email, password_hash) VALUES (2001, 'a', 'e', 'p'), "
        "(2002, 'b', 'e', 'p'), (2003, 'c', 'e', 'p')",
        "UPDATE users SET deleted = 1 WHERE id BETWEEN 10 AND 60",
        "DELETE FROM users WHERE id BETWEEN 100 AND 150",
    )
    report = synced.run_once()
    assert report.keys_deleted == 51
    assert_cache_equals_table(users, synced.cache)


def test_an_update_that_changes_the_primary_key_removes_the_old_key(
    server: MariaDbInstance, synced: autoops.CacheSync, users: autoops.DbClient
) -> None:
    run(server, users, "UPDATE users SET id = 5005 WHERE id = 5")
    synced.run_once()
    assert synced.cache.get("users:5") is None
    assert synced.cache.get("users:5005")["username"] == "user5"
    assert_cache_equals_table(users, synced.cache)


def test_a_rolled_back_transaction_is_never_applied(
    server: MariaDbInstance, synced: autoops.CacheSync, users: autoops.DbClient
) -> None:
    run(
        server,
        users,
        "BEGIN",
        "UPDATE users SET username = 'rolled back' WHERE id = 8",
        "DELETE FROM users WHERE id = 9",
        "ROLLBACK",
        "UPDATE users SET username = 'kept' WHERE id = 10",
    )
    report = synced.run_once()
    assert report.events_read == 1
    assert synced.cache.get("users:8")["username"] == "user8"
    assert_cache_equals_table(users, synced.cache)


def test_changes_to_other_tables_are_ignored_but_the_position_moves_past_them(
    server: MariaDbInstance, synced: autoops.CacheSync, users: autoops.DbClient
) -> None:
    run(
        server,
        users,
        "CREATE TABLE users_archive LIKE users",
        "INSERT INTO users_archive SELECT * FROM users",
        "DELETE FROM users_archive",
    )
    before = synced.status().checkpoint
    report = synced.run_once()
    assert report.events_read == 0
    assert report.keys_written == 0
    assert synced.status().checkpoint != before
    assert_cache_equals_table(users, synced.cache)


def test_a_table_of_the_same_name_in_another_database_is_ignored(
    server: MariaDbInstance, synced: autoops.CacheSync, users: autoops.DbClient
) -> None:
    with scratch_database(server) as other:
        create_users(other, 50, start=5000)
    report = synced.run_once()
    assert report.events_read == 0
    assert_cache_equals_table(users, synced.cache)


def test_a_transaction_of_100000_rows_is_applied_whole(
    server: MariaDbInstance, synced: autoops.CacheSync, users: autoops.DbClient
) -> None:
    run(
        server,
        users,
        "BEGIN",
        "INSERT INTO users (id, username, email, password_hash) "
        "SELECT 100000 + seq, CONCAT('bulk', seq), 'e', 'p' FROM seq_1_to_100000",
        "COMMIT",
    )
    report = synced.run_once()
    assert report.events_read == 100_000
    assert report.keys_written == 100_000
    assert_cache_equals_table(users, synced.cache)


def test_ugly_table_names_and_bigints_past_2_53_round_trip(
    server: MariaDbInstance, db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    for table in ("order-items", "usérs"):
        run(
            server,
            db,
            f"CREATE TABLE `{table}` (id BIGINT UNSIGNED PRIMARY KEY, `näme` VARCHAR(20), "
            "amount DECIMAL(12, 2), big BIGINT, at DATETIME(3), doc JSON, raw VARBINARY(8))",
            f"INSERT INTO `{table}` VALUES (9007199254740993, 'é', 19.99, -9007199254740995, "
            "'2026-01-01 00:00:00.125', '{\"a\": [1, 2]}', x'00ff')",
        )
        sync = autoops.CacheSync(
            db, cache, table=table, key=f"{table}:{{id}}", source="binlog", progress=False
        )
        sync.run_once()
        run(
            server,
            db,
            f"INSERT INTO `{table}` VALUES (18446744073709551615, 'ü', -0.5, 9007199254740993, "
            "'2026-02-01 10:00:00', NULL, x'')",
            f"UPDATE `{table}` SET `näme` = 'ß' WHERE id = 9007199254740993",
        )
        sync.run_once()
        columns = ("id", "näme", "amount", "big", "at", "doc", "raw")
        assert_cache_equals_table(db, cache, table=table, columns=columns, key=f"{table}:{{id}}")
        assert cache.get(f"{table}:18446744073709551615")["id"] == "18446744073709551615"


# schema changes --------------------------------------------------------------------------------


def test_rows_changed_after_add_column_carry_it_and_untouched_rows_keep_their_shape(
    server: MariaDbInstance, synced: autoops.CacheSync, users: autoops.DbClient
) -> None:
    run(
        server,
        users,
        "ALTER TABLE users ADD COLUMN plan VARCHAR(10) NOT NULL DEFAULT 'free'",
        "UPDATE users SET plan = 'pro' WHERE id = 2",
    )
    synced.run_once()
    assert synced.cache.get("users:2")["plan"] == "pro"
    assert "plan" not in synced.cache.get("users:3")
    synced.run_once(full=True)
    assert_cache_equals_table(users, synced.cache, columns=(*CACHED, "plan"))


def test_a_backlog_spanning_add_and_drop_column_is_decoded_with_the_columns_of_its_time(
    server: MariaDbInstance, synced: autoops.CacheSync, users: autoops.DbClient
) -> None:
    run(
        server,
        users,
        "UPDATE users SET username = 'before' WHERE id = 1",
        "ALTER TABLE users ADD COLUMN plan VARCHAR(10) NOT NULL DEFAULT 'free'",
        "UPDATE users SET username = 'between' WHERE id = 2",
        "ALTER TABLE users DROP COLUMN email",
        "UPDATE users SET username = 'after' WHERE id = 3",
    )
    synced.run_once()
    first, second, third = (synced.cache.get(f"users:{pk}") for pk in (1, 2, 3))
    assert first["username"] == "before"
    assert "email" in first
    assert "plan" not in first
    assert second["username"] == "between"
    assert second["plan"] == "free"
    assert "email" in second
    assert third["username"] == "after"
    assert "email" not in third
    assert third["plan"] == "free"


def test_a_renamed_column_is_cached_under_its_new_name_from_the_next_change(
    server: MariaDbInstance, synced: autoops.CacheSync, users: autoops.DbClient
) -> None:
    run(
        server,
        users,
        "ALTER TABLE users RENAME COLUMN username TO login",
        "UPDATE users SET login = 'renamed' WHERE id = 4",
    )
    synced.run_once()
    value = synced.cache.get("users:4")
    assert value["login"] == "renamed"
    assert "username" not in value


def test_dropping_a_configured_column_stops_the_sync_with_an_error_naming_it(
    server: MariaDbInstance, users: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = binlog_sync(users, cache, columns=["id", "username", "email"], exclude=[])
    sync.run_once()
    run(
        server,
        users,
        "ALTER TABLE users DROP COLUMN email",
        "UPDATE users SET username = 'x' WHERE id = 5",
    )
    with pytest.raises(autoops.ConfigError, match=r"no column 'email' any more.*--full"):
        sync.run_once()
    with pytest.raises(autoops.ConfigError, match=r"no column 'email'"):
        sync.run_once()
    assert cache.get("users:5")["username"] == "user5"


def test_renaming_the_key_column_stops_the_sync_with_an_error_naming_the_template(
    server: MariaDbInstance, synced: autoops.CacheSync, users: autoops.DbClient
) -> None:
    run(
        server,
        users,
        "ALTER TABLE users RENAME COLUMN id TO user_id",
        "UPDATE users SET username = 'x' WHERE user_id = 5",
    )
    with pytest.raises(autoops.ConfigError, match=r"no column 'id' any more.*'users:\{id\}'"):
        synced.run_once()
    assert synced.cache.get("users:5")["username"] == "user5"


# the command ------------------------------------------------------------------------------------

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "autoops-sync"


def autoops_sync(
    db_url: str, cache: autoops.CacheClient, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTOOPS_DB_URL": db_url, "AUTOOPS_CACHE_URL": redis_test_url()}
    env.pop("AUTOOPS_CONFIG", None)
    command = [sys.executable, str(SCRIPT), *args, "--namespace", str(cache.namespace)]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_autoops_sync_source_binlog_syncs_quietly_and_writes_its_metrics(
    server: MariaDbInstance, users: autoops.DbClient, cache: autoops.CacheClient, tmp_path: Path
) -> None:
    url = f"{server.url}{users.connection_settings.database}"
    metrics = tmp_path / "sync.prom"
    arguments = ["--source", "binlog", "--table", "users", "--key", "users:{id}"]
    arguments += ["--exclude", "password_hash", "--metrics-file", str(metrics)]
    first = autoops_sync(url, cache, "--once", *arguments)
    run(server, users, "DELETE FROM users WHERE id = 2", "UPDATE users SET username = 'z'")
    second = autoops_sync(url, cache, "--once", *arguments)
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")
    assert (second.returncode, second.stdout, second.stderr) == (0, "", "")
    assert_cache_equals_table(users, cache)
    text = metrics.read_text()
    assert 'autoops_sync_binlog_behind_bytes{sync="users"} 0.0' in text
    assert 'autoops_sync_keys_deleted{sync="users"} 1.0' in text
    promtool_accepts(text)


def test_autoops_sync_source_binlog_without_a_binary_log_exits_2_naming_log_bin(
    mysql_db: autoops.DbClient, mysql_url: str, cache: autoops.CacheClient
) -> None:
    create_users(mysql_db, 3)
    result = autoops_sync(
        mysql_url, cache, "--once", "--source", "binlog", "--table", "users", "--key", "u:{id}"
    )
    assert result.returncode == 2
    assert "log_bin is OFF" in result.stderr
    assert "Traceback" not in result.stderr


# the row decoder -----------------------------------------------------------------------------


def read_changes(
    server: MariaDbInstance,
    start: tuple[str, int],
    *,
    fast: bool,
    key_columns: frozenset[str] | None = None,
) -> list[tuple[Any, Any]]:
    """Every row change after ``start``, decoded by the sync's reader or by the library."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    from autoops.sync._binlog_stream import _changes

    stream = BinLogStreamReader(
        {"host": "127.0.0.1", "port": server.port, "user": "root", "passwd": ""},
        server_id=777_000_001 + fast,
        log_file=start[0],
        log_pos=start[1],
        resume_stream=True,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        enable_logging=False,
    )
    changes: list[tuple[Any, Any]] = []
    for event in stream:
        if fast:
            changes += [(change.before, change.after) for change in _changes(event, key_columns)]
        elif isinstance(event, UpdateRowsEvent):
            changes += [(row["before_values"], row["after_values"]) for row in event.rows]
        elif isinstance(event, WriteRowsEvent):
            changes += [(None, row["values"]) for row in event.rows]
        else:
            changes += [(row["values"], None) for row in event.rows]
    stream.close()
    return changes


def test_the_fast_row_decoder_gives_the_librarys_values_for_every_type_it_takes(
    server: MariaDbInstance, db: autoops.DbClient
) -> None:
    connection = server.connect()
    with connection.cursor() as cursor:
        cursor.execute("SHOW MASTER STATUS")
        status = cursor.fetchone()
    connection.close()
    assert status is not None
    run(
        server,
        db,
        "CREATE TABLE typed (id BIGINT UNSIGNED PRIMARY KEY, t TINYINT, tu TINYINT UNSIGNED, "
        "s SMALLINT, su SMALLINT UNSIGNED, m MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, "
        "iu INT UNSIGNED, b BIGINT, f FLOAT, d DOUBLE, c CHAR(3), v VARCHAR(300), "
        "l VARCHAR(10) CHARACTER SET latin1, vb VARBINARY(10), tx TEXT, bl BLOB, "
        "dt0 DATETIME, dt1 DATETIME(1), dt3 DATETIME(3), dt6 DATETIME(6), ts0 TIMESTAMP NULL, "
        "ts2 TIMESTAMP(2) NULL, ts5 TIMESTAMP(5) NULL, dd DATE) DEFAULT CHARSET = utf8mb4",
        "INSERT INTO typed VALUES (18446744073709551615, -128, 255, -32768, 65535, -8388608, "
        "16777215, -2147483648, 4294967295, -9223372036854775808, 1.5, -2.25e300, 'é', "
        "REPEAT('ü', 300), 'ÿß', x'00ff', 'text ✓', x'deadbeef', '2026-01-02 03:04:05', "
        "'9999-12-31 23:59:59.9', '1000-01-01 00:00:00.001', '2026-11-30 12:00:00.123456', "
        "'2038-01-19 03:14:07', '1970-01-01 00:00:01.99', '2026-06-01 00:00:00.12345', "
        "'2026-02-28')",
        "INSERT INTO typed (id) VALUES (1)",
        "UPDATE typed SET t = 127, v = '', dt6 = NULL, ts5 = '2030-01-01 00:00:00' WHERE id = 1",
        "UPDATE typed SET id = 2, tx = NULL WHERE id = 18446744073709551615",
        "DELETE FROM typed WHERE id = 2",
    )
    start = (str(status["File"]), int(status["Position"]))
    fast = read_changes(server, start, fast=True)
    assert len(fast) == 5
    library = read_changes(server, start, fast=False)
    differences = [
        (index, image, name, value, (library[index][image] or {}).get(name))
        for index, change in enumerate(fast)
        for image in (0, 1)
        for name, value in (change[image] or {}).items()
        if value != (library[index][image] or {}).get(name)
    ]
    assert differences == []
    assert fast == library
    # What the sync asks for: an update's before image and a delete's image only locate a key.
    located = read_changes(server, start, fast=True, key_columns=frozenset({"id"}))
    assert located == [
        (None if before is None else {"id": before["id"]}, after) for before, after in library
    ]


def test_a_server_id_a_connected_replica_uses_is_a_clash_and_a_config_error(
    server: MariaDbInstance, users: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    from pymysqlreplication import BinLogStreamReader

    replica = BinLogStreamReader(
        {"host": "127.0.0.1", "port": server.port, "user": "root", "passwd": ""},
        server_id=3_900_000_123,
        report_slave="replica-host",
        blocking=True,
        enable_logging=False,
    )
    replica.fetchone()  # connects and registers the replica
    try:
        with pytest.raises(
            autoops.ConfigError, match=r"server_id=3900000123 is already used by a replica"
        ):
            binlog_sync(users, cache, server_id=3_900_000_123).run_once()
    finally:
        replica.close()
    assert cached_rows(cache) == {}
