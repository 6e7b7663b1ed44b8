"""MySQL restores load table data on several connections: the same database as one client would
make, and a failure anywhere stops everything with a message saying what the target holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymysql
import pytest

import autoops
from autoops.backup import BackupError, _mysql_load

if TYPE_CHECKING:
    Admin = pymysql.connections.Connection[pymysql.cursors.Cursor]

# Values a naive splitter of the dump would cut in the wrong place.
NASTY = "x');\nINSERT INTO `usérs` VALUES (9);\nDELIMITER ;;\nLOCK TABLES `a` WRITE;\n"
NASTY_SQL = NASTY.replace("'", "''")

SCHEMA = [
    "CREATE TABLE `order-items` (id INT PRIMARY KEY, sku VARCHAR(20), note TEXT,"
    " at TIMESTAMP(6) NOT NULL, INDEX (sku)) ENGINE=InnoDB",
    "CREATE TABLE `usérs` (id BIGINT PRIMARY KEY, name VARCHAR(50), bio TEXT) ENGINE=InnoDB",
    "CREATE TABLE `audit-log` (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(200))",
    "CREATE TABLE `2fa_codes` (id INT PRIMARY KEY, code CHAR(6), user_id BIGINT,"
    " FOREIGN KEY (user_id) REFERENCES `usérs` (id)) ENGINE=InnoDB",
    # 4,000 rows of ~600 bytes: several INSERT statements (the dump tool cuts them at ~1 MB).
    "INSERT INTO `order-items` SELECT seq, CONCAT('sku-', seq), CONCAT(REPEAT('n', 560), "
    f"'{NASTY_SQL}'), TIMESTAMP'2026-03-29 01:30:00' + INTERVAL seq SECOND FROM seq_1_to_4000",
    "INSERT INTO `usérs` SELECT seq + 9007199254740993, CONCAT('Zoë ', seq), "
    "REPEAT('ü', 700) FROM seq_1_to_3000",
    "INSERT INTO `2fa_codes` VALUES (1, '123456', 9007199254740994)",
    # A body line starting with INSERT INTO `: only DELIMITER tracking keeps it with the client.
    "CREATE TRIGGER `order-items-audit` AFTER INSERT ON `order-items` FOR EACH ROW\n"
    "INSERT INTO `audit-log` (note) VALUES (CONCAT('order ', NEW.id))",
    "CREATE VIEW `big-orders` AS SELECT id, sku FROM `order-items` WHERE id > 3990",
    "CREATE FUNCTION `double-it`(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
    "CREATE PROCEDURE `add-note`(IN text VARCHAR(200))\n"
    "BEGIN\nINSERT INTO `audit-log` (note) VALUES (text);\nEND",
    "CALL `add-note`('from a procedure')",
]


def _run_all(admin: Admin, database: str, statements: list[str]) -> None:
    with admin.cursor() as cursor:
        cursor.execute(f"USE `{database}`")
        for statement in statements:
            cursor.execute(statement)


def _state(admin: Admin, database: str) -> dict[str, Any]:
    """CHECKSUM TABLE and row count of every table, the views and the routines' results."""
    found: dict[str, Any] = {}
    with admin.cursor() as cursor:
        cursor.execute(f"USE `{database}`")
        cursor.execute("SHOW FULL TABLES")
        for name, kind in sorted(cursor.fetchall()):
            quoted = "`" + name.replace("`", "``") + "`"
            cursor.execute(f"SELECT COUNT(*) FROM {quoted}")
            found[f"{kind} {name} rows"] = cursor.fetchone()[0]  # type: ignore[index]
            if kind == "BASE TABLE":
                cursor.execute(f"CHECKSUM TABLE {quoted}")
                found[f"{name} checksum"] = cursor.fetchone()[1]  # type: ignore[index]
        cursor.execute("SELECT `double-it`(21)")
        found["double-it"] = cursor.fetchone()[0]  # type: ignore[index]
        cursor.execute("SHOW TRIGGERS")
        found["triggers"] = [row[0] for row in cursor.fetchall()]
    return found


@pytest.fixture
def target(mysql_admin: Admin, mysql_url: str) -> Iterator[str]:
    """A second empty database (the restore target), dropped afterwards."""
    name = mysql_url.rsplit("/", 1)[1] + "_to"
    with mysql_admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield name
    with mysql_admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def connections_used(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """The server ids of the connections that ran table data during the test."""
    used: set[int] = set()
    run = _mysql_load._Workers._run

    def spy(self: Any, connection: Any, statement: bytes) -> None:
        used.add(connection.thread_id())
        run(self, connection, statement)

    monkeypatch.setattr(_mysql_load._Workers, "_run", spy)
    return used


def test_table_data_loads_on_several_connections_into_an_identical_database(
    mysql_url: str, mysql_admin: Admin, target: str, tmp_path: Path, connections_used: set[int]
) -> None:
    source = mysql_url.rsplit("/", 1)[1]
    _run_all(mysql_admin, source, SCHEMA)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path), progress=False)
    backup = backuper.backup_mysql(mysql_url)
    backuper.restore_mysql(backup, mysql_url.rsplit("/", 1)[0] + "/" + target)
    restored = _state(mysql_admin, target)
    assert restored == _state(mysql_admin, source)
    # The trigger was created after the rows, so loading them did not fire it again.
    assert restored["BASE TABLE audit-log rows"] == 1
    assert len(connections_used) >= 2
    assert backuper.verify(backup, restore_test=mysql_url).status == "ok"


def _dump(*tables: tuple[str, str], then: str = "") -> list[bytes]:
    """A dump as mariadb-dump writes it, of ``(name, rows)`` tables and ``then`` after them, in
    100-byte chunks."""
    text = (
        "/*!40101 SET NAMES utf8mb4 */;\n/*!40103 SET TIME_ZONE='+00:00' */;\n"
        "/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n"
    )
    for name, rows in tables:
        text += (
            f"DROP TABLE IF EXISTS `{name}`;\nCREATE TABLE `{name}` (\n  `id` int NOT NULL,\n"
            f"  PRIMARY KEY (`id`)\n) ENGINE=InnoDB;\nLOCK TABLES `{name}` WRITE;\n"
            f"INSERT INTO `{name}` VALUES\n{rows};\nUNLOCK TABLES;\n"
        )
    data = (text + then + "-- Dump completed on 2026-11-30 12:00:00\n").encode()
    return [data[start : start + 100] for start in range(0, len(data), 100)]


def test_a_failing_table_stops_the_restore_and_names_the_table_and_the_error(
    mysql_url: str, mysql_admin: Admin
) -> None:
    from autoops.backup._mysql import restore_stream

    dump = _dump(("order-items", "(1),\n(2)"), ("usérs", "(1),\n(1)"), ("later", "(1)"))
    client = autoops.DbClient.from_url(mysql_url)
    assert isinstance(client, autoops.MySQLClient)
    try:
        with pytest.raises(BackupError) as raised:
            restore_stream(dump, client)
    finally:
        client.close()
    message = str(raised.value)
    assert "table `usérs`" in message
    assert "Duplicate entry" in message
    assert "holds what was loaded before the failure" in message
    with mysql_admin.cursor() as cursor:
        cursor.execute(f"USE `{mysql_url.rsplit('/', 1)[1]}`")
        cursor.execute("SHOW TABLES")
        tables = sorted(row[0] for row in cursor.fetchall())
        cursor.execute("SELECT COUNT(*) FROM `order-items`")
        loaded = cursor.fetchone()
    # As it says: the tables before the failure are there, nothing after it was started.
    assert tables == ["order-items", "usérs"]
    assert loaded == (2,)


def test_a_definition_the_server_refuses_stops_the_restore_with_the_clients_message(
    mysql_url: str,
) -> None:
    from autoops.backup._mysql import restore_stream

    dump = _dump(("fine", "(1)"), then="CREATE TABLE `broken` (id NOT_A_TYPE);\n")
    client = autoops.DbClient.from_url(mysql_url)
    assert isinstance(client, autoops.MySQLClient)
    try:
        with pytest.raises(BackupError) as raised:
            restore_stream(dump, client)
    finally:
        client.close()
    assert "Unknown data type" in str(raised.value)
    assert "NOT_A_TYPE" in raised.value.tool_message
