"""Point-in-time recovery: binary logs archived beside the full backups, replayed to a moment.

One private mariadbd with a binary log serves the whole module (the shared server has none);
each test works in a database and a storage of its own.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pymysql
import pytest

import autoops
from _support.mariadb_pair import MariaDbInstance, start_with_binlog
from autoops.backup import BinlogGapError, BinlogPosition

TABLE = "`order-items`"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDbInstance]:
    instance = start_with_binlog(tmp_path_factory.mktemp("pitr"))
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def database(server: MariaDbInstance) -> Iterator[str]:
    name = f"shop_{secrets.token_hex(3)}"
    with server.connect().cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}`")
        cursor.execute(
            f"CREATE TABLE `{name}`.{TABLE} (id INT AUTO_INCREMENT PRIMARY KEY, "
            "sku VARCHAR(40) NOT NULL, batch CHAR(1) NOT NULL, "
            "created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB"
        )
    yield name
    with server.connect().cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}_restored`")


def _writer(server: MariaDbInstance, database: str) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(
        host="127.0.0.1", port=server.port, user="root", database=database, autocommit=True
    )


def _insert(connection: pymysql.connections.Connection[Any], batch: str, count: int) -> None:
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {TABLE} (sku, batch) VALUES (%s, %s)",
            [(f"sku-{batch}-{n}", batch) for n in range(count)],
        )


def _rows(server: MariaDbInstance, database: str) -> dict[str, int]:
    with server.connect().cursor() as cursor:
        cursor.execute(f"SELECT batch, COUNT(*) AS n FROM `{database}`.{TABLE} GROUP BY batch")
        return {row["batch"]: int(row["n"]) for row in cursor.fetchall()}


def _next_second() -> datetime:
    """Sleep to the start of the next whole second; returns it (local, naive)."""
    now = time.time()
    time.sleep(int(now) + 1 - now + 0.02)
    return datetime.fromtimestamp(int(now) + 1)


def _flush(server: MariaDbInstance) -> None:
    with server.connect().cursor() as cursor:
        cursor.execute("FLUSH BINARY LOGS")


def _url(server: MariaDbInstance, database: str) -> str:
    return server.url + database


def _target(server: MariaDbInstance, database: str) -> str:
    """An empty database to restore into, beside the damaged one."""
    with server.connect().cursor() as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{database}_restored`")
    return server.url + f"{database}_restored"


def _tables(server: MariaDbInstance, database: str) -> list[str]:
    with server.connect().cursor() as cursor:
        cursor.execute(
            "SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
            (database,),
        )
        return [row["name"] for row in cursor.fetchall()]


def test_restore_to_the_second_before_a_dropped_table(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    writer = _writer(server, database)
    _insert(writer, "a", 50)
    full = backuper.backup_mysql(_url(server, database))
    _insert(writer, "b", 30)
    _flush(server)  # the replay crosses a file boundary
    _insert(writer, "c", 20)
    backuper.archive_binlogs(_url(server, database))
    until = _next_second()
    _insert(writer, "d", 25)  # at the `until` second: committed at or after it, not restored
    _next_second()
    with writer.cursor() as cursor:
        cursor.execute(f"DROP TABLE {TABLE}")
    backuper.archive_binlogs(_url(server, database))

    backuper.restore_mysql(full, _target(server, database), until=until)

    assert _rows(server, f"{database}_restored") == {"a": 50, "b": 30, "c": 20}


def test_the_newest_backup_before_the_moment_is_chosen(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    writer = _writer(server, database)
    _insert(writer, "a", 5)
    older = backuper.backup_mysql(_url(server, database))
    _insert(writer, "b", 5)
    newer = backuper.backup_mysql(_url(server, database))
    until = _next_second()
    _insert(writer, "c", 5)
    later = backuper.backup_mysql(_url(server, database))
    backuper.archive_binlogs(_url(server, database))

    chosen = backuper.backup_before(until)

    assert chosen.id == newer.id
    assert chosen.id not in {older.id, later.id}
    backuper.restore_mysql(chosen, _target(server, database), until=until)
    assert _rows(server, f"{database}_restored") == {"a": 5, "b": 5}


def test_an_aware_until_is_read_in_its_own_offset(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    writer = _writer(server, database)
    full = backuper.backup_mysql(_url(server, database))
    _insert(writer, "a", 10)
    local = _next_second()
    _insert(writer, "b", 10)
    backuper.archive_binlogs(_url(server, database))
    until = local.astimezone(timezone(timedelta(hours=5, minutes=30)))

    backuper.restore_mysql(full, _target(server, database), until=until)

    assert _rows(server, f"{database}_restored") == {"a": 10}


def test_until_a_binlog_position_stops_before_the_event_there(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    writer = _writer(server, database)
    _insert(writer, "a", 10)
    full = backuper.backup_mysql(_url(server, database))
    _insert(writer, "b", 10)
    with writer.cursor() as cursor:
        cursor.execute("SHOW MASTER STATUS")
        file, position = cursor.fetchone()[:2]
        cursor.execute(f"DROP TABLE {TABLE}")
    backuper.archive_binlogs(_url(server, database))

    backuper.restore_mysql(
        full, _target(server, database), until=BinlogPosition(file, int(position))
    )

    assert _rows(server, f"{database}_restored") == {"a": 10, "b": 10}


def test_until_a_gtid_includes_that_transaction(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    writer = _writer(server, database)
    full = backuper.backup_mysql(_url(server, database))
    _insert(writer, "a", 10)
    with writer.cursor() as cursor:
        cursor.execute("SELECT @@gtid_binlog_pos")
        gtid = cursor.fetchone()[0]
    _insert(writer, "b", 10)
    backuper.archive_binlogs(_url(server, database))

    backuper.restore_mysql(full, _target(server, database), until=gtid)

    assert _rows(server, f"{database}_restored") == {"a": 10}


def test_a_missing_binlog_is_refused_by_name_before_anything_is_written(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    storage = autoops.LocalStorage(tmp_path / "store")
    backuper = autoops.Backuper(storage)
    writer = _writer(server, database)
    full = backuper.backup_mysql(_url(server, database))
    _flush(server)
    _insert(writer, "a", 10)
    _flush(server)
    _insert(writer, "b", 10)
    backuper.archive_binlogs(_url(server, database))
    until = _next_second()
    backuper.archive_binlogs(_url(server, database))
    missing = backuper.binlogs()[-2]
    storage.delete(missing.manifest_file)
    storage.delete(missing.data_file)

    with pytest.raises(BinlogGapError, match=rf"{missing.server_file} is missing"):
        backuper.restore_mysql(full, _target(server, database), until=until)

    assert _tables(server, f"{database}_restored") == []


def test_an_archive_that_does_not_reach_until_is_refused(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    full = backuper.backup_mysql(_url(server, database))
    backuper.archive_binlogs(_url(server, database))
    until = _next_second()

    with pytest.raises(BinlogGapError, match="run autoops-backup binlogs"):
        backuper.restore_mysql(full, _target(server, database), until=until)
