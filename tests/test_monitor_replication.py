"""The MySQL check on a real MariaDB replica: threads, lag, and a non-replica said so."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from _support.mariadb_pair import MARIADBD, MariaDbInstance, start_pair
from _support.services import require_program
from autoops import CheckStatus, MySQLCheck


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[MariaDbInstance, MariaDbInstance]]:
    require_program(MARIADBD, "mariadb-server")
    workdir = tmp_path_factory.mktemp("mariadb-pair")
    primary, replica = start_pair(workdir)
    yield primary, replica
    replica.stop()
    primary.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def replica_sql(replica: MariaDbInstance, *statements: str) -> None:
    connection = replica.connect()
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    connection.close()


def wait_running(replica: MariaDbInstance) -> None:
    connection = replica.connect()
    deadline = time.monotonic() + 15
    try:
        while True:
            with connection.cursor() as cursor:
                cursor.execute("SHOW SLAVE STATUS")
                row = cursor.fetchone()
            if row and row["Slave_IO_Running"] == "Yes" and row["Slave_SQL_Running"] == "Yes":
                return
            assert time.monotonic() < deadline, f"replication did not start: {row}"
            time.sleep(0.05)
    finally:
        connection.close()


def test_a_running_replica_is_ok_with_its_lag(
    pair: tuple[MariaDbInstance, MariaDbInstance],
) -> None:
    _, replica = pair
    wait_running(replica)
    result = MySQLCheck("replica", replica.url).run()
    assert result.status is CheckStatus.OK, result.summary
    assert "replica 0 s behind" in result.summary
    assert any(metric.label == "replica_lag" for metric in result.metrics)


def test_the_primary_is_said_not_to_be_a_replica(
    pair: tuple[MariaDbInstance, MariaDbInstance],
) -> None:
    primary, _ = pair
    result = MySQLCheck("primary", primary.url).run()
    assert result.status is CheckStatus.OK
    assert "not a replica" in result.summary


def test_a_stopped_sql_thread_is_critical(pair: tuple[MariaDbInstance, MariaDbInstance]) -> None:
    _, replica = pair
    wait_running(replica)
    replica_sql(replica, "STOP SLAVE SQL_THREAD")
    try:
        result = MySQLCheck("replica", replica.url).run()
    finally:
        replica_sql(replica, "START SLAVE SQL_THREAD")
    assert result.status is CheckStatus.CRITICAL
    assert "replica SQL thread is No" in result.summary


def test_a_replica_behind_its_source_warns(pair: tuple[MariaDbInstance, MariaDbInstance]) -> None:
    primary, replica = pair
    wait_running(replica)
    # A delayed replica holds each event back, so its lag grows for real while the test waits.
    replica_sql(replica, "STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 3600", "START SLAVE")
    try:
        connection = primary.connect()
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE IF NOT EXISTS lagging")
        connection.close()
        check = MySQLCheck("replica", replica.url, thresholds={"replica_lag": ("1", "3600")})
        deadline = time.monotonic() + 15
        while True:
            result = check.run()
            if result.status is not CheckStatus.OK:
                break
            assert time.monotonic() < deadline, result.summary
            time.sleep(0.25)
    finally:
        replica_sql(replica, "STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 0", "START SLAVE")
    assert result.status is CheckStatus.WARNING, result.summary
    assert "s behind (warning 1)" in result.summary


def test_an_account_that_may_not_see_replication_makes_that_part_unknown(
    pair: tuple[MariaDbInstance, MariaDbInstance],
) -> None:
    _, replica = pair
    replica_sql(
        replica,
        "CREATE USER IF NOT EXISTS 'watcher'@'%' IDENTIFIED BY 'w4tcher'",
        "GRANT USAGE ON *.* TO 'watcher'@'%'",
    )
    result = MySQLCheck("replica", f"mysql://watcher:w4tcher@127.0.0.1:{replica.port}/").run()
    assert result.status is CheckStatus.UNKNOWN, result.summary
    assert "replication not checked: the account needs" in result.summary
    assert "w4tcher" not in result.nagios_line()
