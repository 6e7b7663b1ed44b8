"""CacheSync(read_from="replica") on a private MariaDB primary + replica pair and the shared
Redis: rows are read from the replica, yet a pass misses nothing the primary had committed when
it took its horizon, however far (within the bound) the replica lags; a stopped replica leaves
the reading to the primary."""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import autoops
from _support.mariadb_pair import MARIADBD, MariaDbInstance, start_pair
from _support.services import require_program
from _support.sync_tables import add_users, cached_rows, create_users, expected_cache, make_sync

Pair = tuple[MariaDbInstance, MariaDbInstance]
_databases = itertools.count(1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    require_program(MARIADBD, "mariadb-server")
    workdir = tmp_path_factory.mktemp("sync-replica")
    primary, replica = start_pair(workdir)
    yield primary, replica
    replica.stop()
    primary.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def run_sql(server: MariaDbInstance, *statements: str) -> list[dict[str, object]]:
    connection = server.connect()
    rows: list[dict[str, object]] = []
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
            rows = [dict(row) for row in cursor.fetchall()]
    connection.close()
    return rows


def wait_applied(primary: MariaDbInstance, replica: MariaDbInstance) -> None:
    position = run_sql(primary, "SHOW MASTER STATUS")[0]
    deadline = time.monotonic() + 20
    while True:
        row = run_sql(replica, "SHOW SLAVE STATUS")[0]
        if (row["Relay_Master_Log_File"], row["Exec_Master_Log_Pos"]) == (
            position["File"],
            position["Position"],
        ):
            return
        assert time.monotonic() < deadline, f"the replica did not catch up: {row}"
        time.sleep(0.05)


def wait_running(replica: MariaDbInstance) -> None:
    deadline = time.monotonic() + 15
    while True:
        row = run_sql(replica, "SHOW SLAVE STATUS")[0]
        if row["Slave_IO_Running"] == "Yes" and row["Slave_SQL_Running"] == "Yes":
            return
        assert time.monotonic() < deadline, f"replication did not start: {row}"
        time.sleep(0.05)


def selects(server: MariaDbInstance) -> int:
    return int(str(run_sql(server, "SHOW GLOBAL STATUS LIKE 'Com_select'")[0]["Value"]))


@pytest.fixture
def db(pair: Pair) -> Iterator[autoops.DbClient]:
    """A users table of 500 rows in a database of its own, on a client with the replica."""
    primary, replica = pair
    database = f"sync-replica-{next(_databases)}"
    run_sql(primary, f"CREATE DATABASE `{database}`")
    client = autoops.DbClient.from_url(
        f"mysql://root@127.0.0.1:{primary.port}/{database}",
        replicas=[f"mysql://127.0.0.1:{replica.port}"],
        max_replica_lag=10,
    )
    create_users(client, 500)
    wait_applied(primary, replica)
    yield client
    client.close()


def now_stamp() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")


def test_a_sync_from_the_replica_reads_its_rows_there(
    pair: Pair, db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    _, replica = pair
    before = selects(replica)
    report = make_sync(db, cache, read_from="replica").run_once()
    assert cached_rows(cache) == expected_cache(db)
    assert report.rows_read == 500
    assert selects(replica) - before >= 5  # 500 rows in pages of 100


def test_rows_committed_while_the_replica_lags_are_not_missed(
    pair: Pair, db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    _, replica = pair
    sync = make_sync(db, cache, read_from="replica", overlap=0)
    sync.run_once()
    # From here the replica applies each event 2 s after the primary wrote it.
    run_sql(replica, "STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 2", "START SLAVE")
    try:
        wait_running(replica)
        add_users(db, range(501, 601), stamp=now_stamp())
        db.execute(
            "UPDATE users SET email = CONCAT('new-', email), updated_at = NOW(6) WHERE id <= 50"
        )
        before = selects(replica)
        report = sync.run_once()
        assert report.kind == "incremental"
        assert cached_rows(cache) == expected_cache(db)
        # Read on the lagging replica once it caught up, not quietly on the primary.
        assert selects(replica) - before >= 2
    finally:
        run_sql(replica, "STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 0", "START SLAVE")
        wait_running(replica)


def test_a_stopped_replica_leaves_the_reading_to_the_primary(
    pair: Pair, db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    _, replica = pair
    sync = make_sync(db, cache, read_from="replica", overlap=0)
    sync.run_once()
    run_sql(replica, "STOP SLAVE")
    try:
        add_users(db, range(501, 551), stamp=now_stamp())
        report = sync.run_once()
    finally:
        run_sql(replica, "START SLAVE")
        wait_running(replica)
    assert report.rows_read == 50
    assert cached_rows(cache) == expected_cache(db)


def test_reading_from_a_replica_needs_a_client_with_replicas(
    mysql_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    with pytest.raises(autoops.ConfigError, match="replicas"):
        make_sync(mysql_db, cache, read_from="replica")


def test_an_unknown_read_from_is_a_clear_error(
    mysql_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    with pytest.raises(autoops.ConfigError, match="read_from"):
        make_sync(mysql_db, cache, read_from="standby")


def test_read_from_replica_is_for_the_polling_sync(
    db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    with pytest.raises(autoops.ConfigError, match="polling sync"):
        make_sync(db, cache, read_from="replica", source="binlog")


def test_the_settings_file_sends_the_sync_to_the_replica(
    pair: Pair, db: autoops.DbClient, cache: autoops.CacheClient, tmp_path: Path
) -> None:
    primary, replica = pair
    path = tmp_path / "autoops.toml"
    path.write_text(
        "[db]\n"
        f'url = "mysql://root@127.0.0.1:{primary.port}/{db.url.database}"\n'
        f'replicas = ["mysql://127.0.0.1:{replica.port}"]\n'
        '[sync]\ntable = "users"\nkey = "users:{id}"\nupdated_column = "updated_at"\n'
        'read_from = "replica"\n'
    )
    before = selects(replica)
    with autoops.CacheSync.from_settings(autoops.load_settings(path), cache=cache) as sync:
        assert sync.read_from == "replica"
        sync.run_once()
    assert selects(replica) > before
    assert set(cached_rows(cache)) == set(expected_cache(db))
