"""MySQL/MariaDB backups: a faithful round trip, clear failures, nothing half-made left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymysql
import pytest

import autoops
from _support.services import MYSQL_HOST, MYSQL_PORT, mysql_test_url
from autoops.backup import BackupError, BackupVerifyError, RestoreRefusedError

if TYPE_CHECKING:
    Admin = pymysql.connections.Connection[pymysql.cursors.Cursor]

SCHEMA = [
    """CREATE TABLE every_type (
        id INT AUTO_INCREMENT PRIMARY KEY,
        tiny TINYINT, small SMALLINT UNSIGNED, big BIGINT, flag BIT(5),
        price DECIMAL(20, 6), ratio DOUBLE, approx FLOAT,
        name VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
        body LONGTEXT CHARACTER SET utf8mb4, code CHAR(3),
        raw BLOB, rawvar VARBINARY(64), fixed BINARY(4),
        born DATE, at DATETIME(6), ts TIMESTAMP(6) NULL, clock TIME(3), yr YEAR,
        kind ENUM('a', 'b', 'c'), tags SET('x', 'y', 'z'),
        doc JSON, place POINT, shape GEOMETRY,
        price_with_tax DECIMAL(20, 6) AS (price * 1.2) STORED,
        name_length INT AS (CHAR_LENGTH(name)) VIRTUAL,
        INDEX (name_length)
    ) ENGINE=InnoDB""",
    """INSERT INTO every_type (tiny, small, big, flag, price, ratio, approx, name, body, code,
        raw, rawvar, fixed, born, at, ts, clock, yr, kind, tags, doc, place, shape) VALUES
        (-128, 65535, -9223372036854775808, b'10101', 12345678901234.123456, 1.5e300, 3.25,
         'emoji 😀🎉 and ümlauts', REPEAT('long text ', 1000), 'abc',
         UNHEX('00FF0A0D5C27225A1A'), UNHEX('000102FEFF'), UNHEX('DEADBEEF'),
         '2024-02-29', '2024-02-29 23:59:59.123456', '2024-01-01 00:00:00.000001',
         '838:59:59.999', 2155, 'b', 'x,z', '{"a": [1, 2.5, "ü"], "b": null}',
         ST_GeomFromText('POINT(1.5 -2.25)'), ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))')),
        (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (0, 0, 0, b'0', 0, 0, 0, '', '', '', '', '', UNHEX('00000000'), '1000-01-01',
         '1000-01-01 00:00:00', NULL, '00:00:00', 1901, 'a', '', '[]',
         ST_GeomFromText('POINT(0 0)'), ST_GeomFromText('LINESTRING(0 0,1 1)'))""",
    "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(200)) ENGINE=InnoDB",
    """CREATE TRIGGER every_type_insert AFTER INSERT ON every_type FOR EACH ROW
        INSERT INTO audit (note) VALUES (CONCAT('inserted ', NEW.id))""",
    "CREATE VIEW named AS SELECT id, name FROM every_type WHERE name IS NOT NULL",
    "CREATE VIEW named_count AS SELECT COUNT(*) AS n FROM named",
    """CREATE FUNCTION double_it(x INT) RETURNS INT DETERMINISTIC RETURN x * 2""",
    """CREATE PROCEDURE add_note(IN text VARCHAR(200))
        BEGIN INSERT INTO audit (note) VALUES (text); END""",
    """CREATE EVENT nightly_cleanup ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00'
        DISABLE DO DELETE FROM audit WHERE id < 0""",
    "CALL add_note('from a procedure')",
]


def _run_all(admin: Admin, database: str, statements: list[str]) -> None:
    with admin.cursor() as cursor:
        cursor.execute(f"USE `{database}`")
        for statement in statements:
            cursor.execute(statement)


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _definitions(admin: Admin, database: str) -> dict[str, Any]:
    """SHOW CREATE of every object and CHECKSUM TABLE of every table, database name removed."""
    found: dict[str, Any] = {}
    with admin.cursor() as cursor:
        cursor.execute(f"USE `{database}`")
        cursor.execute("SHOW FULL TABLES")
        for name, kind in cursor.fetchall():
            if kind == "VIEW":
                cursor.execute(f"SHOW CREATE VIEW {_q(name)}")
                found[f"view {name}"] = cursor.fetchone()[1]  # type: ignore[index]
            else:
                cursor.execute(f"SHOW CREATE TABLE {_q(name)}")
                found[f"table {name}"] = cursor.fetchone()[1]  # type: ignore[index]
                cursor.execute(f"CHECKSUM TABLE {_q(name)}")
                found[f"checksum {name}"] = cursor.fetchone()[1]  # type: ignore[index]
        for kind, name_query in [
            ("TRIGGER", "SHOW TRIGGERS"),
            ("FUNCTION", "SHOW FUNCTION STATUS WHERE Db = DATABASE()"),
            ("PROCEDURE", "SHOW PROCEDURE STATUS WHERE Db = DATABASE()"),
            ("EVENT", "SHOW EVENTS"),
        ]:
            cursor.execute(name_query)
            names = [row[0] if kind == "TRIGGER" else row[1] for row in cursor.fetchall()]
            for name in names:
                cursor.execute(f"SHOW CREATE {kind} {_q(name)}")
                row = cursor.fetchone()
                assert row is not None
                text = row[2] if kind != "EVENT" else row[3]
                found[f"{kind.lower()} {name}"] = text
    return {key: str(value).replace(database, "<db>") for key, value in found.items()}


@pytest.fixture
def second_db(mysql_admin: Admin) -> Any:
    """A second empty database (the restore target), dropped afterwards."""
    import uuid

    name = f"aot_{uuid.uuid4().hex[:12]}"
    with mysql_admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield name
    with mysql_admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


def test_round_trip_keeps_data_and_every_object_definition(
    mysql_url: str, mysql_admin: Admin, second_db: str, tmp_path: Path
) -> None:
    source = _database(mysql_url)
    _run_all(mysql_admin, source, SCHEMA)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_mysql(mysql_url)
    target_url = mysql_url.rsplit("/", 1)[0] + "/" + second_db
    backuper.restore_mysql(backup, target_url)
    assert _definitions(mysql_admin, second_db) == _definitions(mysql_admin, source)
    assert backup.tables["every_type"].rows == 3
    assert backup.tables["audit"].rows == 1


def test_manifest_records_tool_server_and_table_stats(mysql_url: str, tmp_path: Path) -> None:
    with autoops.DbClient.from_url(mysql_url) as db:
        db.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        db.execute("INSERT INTO t VALUES (1), (2)")
    backup = autoops.Backuper(autoops.LocalStorage(tmp_path)).backup_mysql(mysql_url)
    assert backup.kind == "mysql"
    assert backup.status == "ok"
    assert "mariadb-dump" in backup.tool or "mysqldump" in backup.tool
    assert "MariaDB" in backup.server_version
    assert backup.tables["t"].rows == 2
    assert backup.tables["t"].checksum is not None
    assert backup.source == f"mysql://{MYSQL_HOST}:{MYSQL_PORT}/" + _database(mysql_url)
    assert backup.verified_at is not None
    assert "--single-transaction" in backup.options["dump_options"]


def test_without_binary_log_no_position_is_recorded(mysql_url: str, tmp_path: Path) -> None:
    with autoops.DbClient.from_url(mysql_url) as db:
        log_bin = db.query_one("SELECT @@log_bin AS on_")
    if log_bin and int(log_bin["on_"]):
        pytest.skip("this server has a binary log")
    backup = autoops.Backuper(autoops.LocalStorage(tmp_path)).backup_mysql(mysql_url)
    assert backup.position == {}


def test_non_innodb_tables_are_reported_as_a_warning(mysql_url: str, tmp_path: Path) -> None:
    with autoops.DbClient.from_url(mysql_url) as db:
        db.execute("CREATE TABLE legacy (id INT) ENGINE=MyISAM")
    backup = autoops.Backuper(autoops.LocalStorage(tmp_path)).backup_mysql(mysql_url)
    assert any("legacy (MyISAM)" in warning for warning in backup.warnings)


def test_restore_refuses_a_non_empty_database_unless_replace(
    mysql_url: str, tmp_path: Path
) -> None:
    with autoops.DbClient.from_url(mysql_url) as db:
        db.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        db.execute("INSERT INTO t VALUES (1)")
        backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
        backup = backuper.backup_mysql(mysql_url)
        db.execute("INSERT INTO t VALUES (2)")
        with pytest.raises(RestoreRefusedError, match="not empty"):
            backuper.restore_mysql(backup, mysql_url)
        backuper.restore_mysql(backup, mysql_url, replace=True)
        assert db.query("SELECT id FROM t") == [{"id": 1}]


def test_wrong_password_fails_with_the_tools_message_and_leaves_nothing(
    mysql_url: str, mysql_admin: Admin, tmp_path: Path
) -> None:
    user = f"aot_bk_{os.getpid()}"
    database = _database(mysql_url)
    with mysql_admin.cursor() as cursor:
        cursor.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right-pass'")
        cursor.execute(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'")
    try:
        good = autoops.DbClient.from_url(mysql_test_url(database, user=user, password="right-pass"))
        assert isinstance(good, autoops.MySQLClient)
        run_facts = good.query_one("SELECT 1 AS ok")
        assert run_facts == {"ok": 1}
        with mysql_admin.cursor() as cursor:
            cursor.execute(f"ALTER USER '{user}'@'%' IDENTIFIED BY 'changed-pass'")
        storage = autoops.LocalStorage(tmp_path)
        # The client's connection is open, so only the dump tool meets the new password.
        with pytest.raises(BackupError, match="Access denied") as failure:
            autoops.Backuper(storage).backup_mysql(good)
        assert "right-pass" not in str(failure.value)
        assert storage.names() == []
        good.close()
    finally:
        with mysql_admin.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_unknown_database_fails_with_a_clear_error_and_leaves_nothing(
    mysql_url: str, tmp_path: Path
) -> None:
    storage = autoops.LocalStorage(tmp_path)
    missing = mysql_url.rsplit("/", 1)[0] + "/aot_no_such_database"
    with pytest.raises(autoops.AutoOpsError, match="aot_no_such_database"):
        autoops.Backuper(storage).backup_mysql(missing)
    assert storage.names() == []


def test_credentials_never_reach_the_dump_tools_argv(
    mysql_url: str, mysql_admin: Admin, tmp_path: Path
) -> None:
    user = f"aot_argv_{os.getpid()}"
    database = _database(mysql_url)
    with mysql_admin.cursor() as cursor:
        cursor.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 's3cret-Pa\"ss\\\\word'")
        cursor.execute(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'")
    seen: list[list[str]] = []
    real_popen = subprocess.Popen

    def spy(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        seen.append(list(argv))
        assert "env" not in kwargs
        return real_popen(argv, *args, **kwargs)

    try:
        url = mysql_test_url(database, user=user, password='s3cret-Pa"ss\\word')
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(subprocess, "Popen", spy)
            backup = autoops.Backuper(autoops.LocalStorage(tmp_path)).backup_mysql(url)
        assert backup.status == "ok"
        assert seen
        assert all("s3cret" not in " ".join(argv) for argv in seen)
        dumps = [argv for argv in seen if argv[1] != "--version"]
        assert dumps
        assert dumps[0][1].startswith("--defaults-extra-file=")
        assert not Path(dumps[0][1].split("=", 1)[1]).exists()
        assert "s3cret" not in backup.to_json().decode()
    finally:
        with mysql_admin.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_killed_backup_leaves_no_backup_and_the_next_run_cleans_its_temp_file(
    mysql_url: str, tmp_path: Path
) -> None:
    with autoops.DbClient.from_url(mysql_url) as db:
        db.execute("CREATE TABLE big (id INT PRIMARY KEY, pad VARCHAR(200))")
        db.execute("INSERT INTO big SELECT seq, REPEAT(MD5(seq), 6) FROM seq_1_to_300000")
    store = tmp_path / "store"
    script = textwrap.dedent(
        f"""
        import autoops
        autoops.Backuper(autoops.LocalStorage({str(store)!r}), compression="gzip",
                         compression_level=9).backup_mysql({mysql_url!r}, checksums=False)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not any(p.name.endswith(".partial") and p.stat().st_size > 0 for p in store.glob("*")):
        assert time.monotonic() < deadline, "the backup never started writing"
        assert child.poll() is None, "the backup finished before it could be killed"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    backuper = autoops.Backuper(autoops.LocalStorage(store))
    assert backuper.list() == []
    assert any(name.endswith(".partial") for name in backuper.storage.names())
    backuper.backup_mysql(mysql_url, checksums=False)
    names = backuper.storage.names()
    assert not any(name.endswith(".partial") for name in names)
    assert len(backuper.list()) == 1


def test_corrupted_file_fails_verify_and_is_marked_corrupt(mysql_url: str, tmp_path: Path) -> None:
    with autoops.DbClient.from_url(mysql_url) as db:
        db.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_mysql(mysql_url)
    data = tmp_path / backup.data_file
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0xFF
    data.write_bytes(bytes(content))
    with pytest.raises(BackupVerifyError, match="SHA-256"):
        backuper.verify(backup)
    assert backuper.get(backup.id).status == "corrupt"


def test_verify_with_a_test_restore_compares_rows_and_checksums(
    mysql_url: str, mysql_admin: Admin, tmp_path: Path
) -> None:
    _run_all(mysql_admin, _database(mysql_url), SCHEMA)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_mysql(mysql_url)
    verified = backuper.verify(backup, restore_test=mysql_url)
    assert verified.verified_at is not None
    assert verified.verified_at >= backup.finished_at
    with mysql_admin.cursor() as cursor:
        cursor.execute("SHOW DATABASES LIKE 'autoops_verify_%'")
        assert cursor.fetchall() == ()


def test_a_test_restore_that_differs_from_the_manifest_fails_verify(
    mysql_url: str, tmp_path: Path
) -> None:
    with autoops.DbClient.from_url(mysql_url) as db:
        db.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        db.execute("INSERT INTO t VALUES (1)")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_mysql(mysql_url)
    lying = backup.__class__(
        **{
            **{f: getattr(backup, f) for f in backup.__dataclass_fields__},
            "tables": {"t": autoops.backup.TableStats(rows=2, checksum=None)},
        }
    )
    with pytest.raises(BackupVerifyError, match="t: 1 rows, expected 2"):
        backuper.verify(lying, restore_test=mysql_url)


def test_with_a_binary_log_the_dump_records_its_position(mysql_url: str) -> None:
    from autoops.backup._mysql import DumpRun, MySQLTools

    with autoops.DbClient.from_url(mysql_url) as db:
        assert isinstance(db, autoops.MySQLClient)
        tools = MySQLTools(dump="mariadb-dump", client="mariadb", version="")
        run = DumpRun(db=db, tools=tools, server_version="10.11.19-MariaDB", binlog=True)
        assert "--master-data=2" in run.argv
        assert "--gtid" in run.argv
        run._read_position(
            b"-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000042', MASTER_LOG_POS=1234;\n"
            b"-- SET GLOBAL gtid_slave_pos='0-1-77';\n"
        )
        assert run.position == {
            "binlog_file": "mysql-bin.000042",
            "binlog_position": "1234",
            "gtid": "0-1-77",
        }
        mysql8 = DumpRun(db=db, tools=tools, server_version="8.0.36", binlog=True)
        assert "--source-data=2" in mysql8.argv


def test_a_server_with_a_binary_log_gets_its_position_in_the_manifest(tmp_path: Path) -> None:
    from _support.mariadb_pair import start_with_binlog

    server = start_with_binlog(tmp_path / "mariadb")
    try:
        admin = server.connect()
        with admin.cursor() as cursor:
            cursor.execute("CREATE DATABASE shop")
            cursor.execute("CREATE TABLE shop.orders (id INT PRIMARY KEY) ENGINE=InnoDB")
            cursor.execute("INSERT INTO shop.orders VALUES (1), (2)")
            cursor.execute("SHOW MASTER STATUS")
            status = cursor.fetchone()
            cursor.execute("SELECT @@GLOBAL.gtid_binlog_pos AS gtid")
            gtid = cursor.fetchone()
        admin.close()
        assert status is not None
        assert gtid is not None
        backup = autoops.Backuper(autoops.LocalStorage(tmp_path / "store")).backup_mysql(
            server.url + "shop"
        )
        assert backup.position == {
            "binlog_file": status["File"],
            "binlog_position": str(status["Position"]),
            "gtid": gtid["gtid"],
        }
        assert backup.tables["orders"].rows == 2
    finally:
        server.stop()


def test_a_connection_killed_mid_dump_fails_and_leaves_nothing(
    mysql_url: str, mysql_admin: Admin, tmp_path: Path
) -> None:
    import threading

    with autoops.DbClient.from_url(mysql_url) as db:
        db.execute("CREATE TABLE big (id INT PRIMARY KEY, pad VARCHAR(200))")
        db.execute("INSERT INTO big SELECT seq, REPEAT(MD5(seq), 6) FROM seq_1_to_400000")
    database = _database(mysql_url)
    killed = threading.Event()

    def kill_the_dump() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not killed.is_set():
            with mysql_admin.cursor() as cursor:
                cursor.execute(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s "
                    "AND INFO LIKE 'SELECT /*!40001 SQL_NO_CACHE */%%'",
                    (database,),
                )
                row = cursor.fetchone()
                if row:
                    cursor.execute(f"KILL CONNECTION {int(row[0])}")
                    killed.set()
                    return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_the_dump)
    killer.start()
    storage = autoops.LocalStorage(tmp_path)
    backuper = autoops.Backuper(storage, compression="gzip", compression_level=9)
    with pytest.raises(BackupError, match=r"Lost connection|failed") as failure:
        backuper.backup_mysql(mysql_url, checksums=False)
    killer.join()
    assert killed.is_set()
    assert failure.value.tool_message
    assert storage.names() == []


def test_definer_strip_restores_views_whose_definer_does_not_exist_under_a_new_name(
    mysql_url: str, mysql_admin: Admin, second_db: str, tmp_path: Path
) -> None:
    _run_all(
        mysql_admin,
        _database(mysql_url),
        [
            "CREATE TABLE t (id INT PRIMARY KEY, note VARCHAR(50))",
            "INSERT INTO t VALUES (1, 'DEFINER=`ghost`@`%` stays in data')",
            "CREATE DEFINER=`aot_ghost`@`%` SQL SECURITY DEFINER VIEW v AS SELECT id FROM t",
        ],
    )
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_mysql(mysql_url)
    target_url = mysql_url.rsplit("/", 1)[0] + "/" + second_db
    backuper.restore_mysql(backup, target_url, definer="strip")
    with mysql_admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE `{_database(mysql_url)}`")
    with autoops.DbClient.from_url(target_url) as target:
        assert target.query("SELECT id FROM v") == [{"id": 1}]
        assert target.query("SELECT note FROM t") == [{"note": "DEFINER=`ghost`@`%` stays in data"}]


def test_definer_stripping_spares_data_rows_and_survives_any_chunking() -> None:
    from autoops.backup._mysql import rewrite_definitions

    text = (
        b"/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */\n"
        b"INSERT INTO `t` VALUES\n(1,'DEFINER=`a`@`b`'),\n(2,'`src`.x');\n"
        b"CREATE DEFINER=`root`@`%` FUNCTION `src`.`f`() RETURNS INT RETURN 1;\n"
    )
    expected = (
        b"/*!50013  SQL SECURITY DEFINER */\n"
        b"INSERT INTO `t` VALUES\n(1,'DEFINER=`a`@`b`'),\n(2,'`src`.x');\n"
        b"CREATE  FUNCTION `dst`.`f`() RETURNS INT RETURN 1;\n"
    )
    for size in (1, 7, 50, len(text)):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        rewritten = rewrite_definitions(chunks, strip_definer=True, rename=("src", "dst"))
        assert b"".join(rewritten) == expected, size


def test_the_option_file_carries_credentials_and_tls_settings_privately() -> None:
    import stat as stat_module

    from autoops.backup._mysql import option_file

    client = autoops.MySQLClient(
        host="db.example", user="backup", password='p"a\\ss', ssl_ca="/etc/ca.pem"
    )
    with option_file(client) as path:
        text = Path(path).read_text()
        assert stat_module.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat_module.S_IMODE(os.stat(Path(path).parent).st_mode) == 0o700
    assert 'password="p\\"a\\\\ss"' in text
    assert 'ssl-ca="/etc/ca.pem"' in text
    assert not Path(path).exists()


UGLY_SCHEMA = [
    "CREATE TABLE `order-items` (id INT PRIMARY KEY, sku VARCHAR(20)) ENGINE=InnoDB",
    "CREATE TABLE `2fa_codes` (id INT PRIMARY KEY, code CHAR(6)) ENGINE=InnoDB",
    "CREATE TABLE `usérs` (id INT PRIMARY KEY, name VARCHAR(50)) ENGINE=InnoDB",
    "CREATE TABLE `odd``name` (id INT PRIMARY KEY) ENGINE=InnoDB",
    "INSERT INTO `order-items` VALUES (1, 'a-1'), (2, 'b-2')",
    "INSERT INTO `2fa_codes` VALUES (1, '123456')",
    "INSERT INTO `usérs` VALUES (1, 'Zoë'), (2, 'Jürgen')",
    "INSERT INTO `odd``name` VALUES (7)",
    "CREATE TABLE `100%s_done` (id INT PRIMARY KEY) ENGINE=InnoDB",
    "INSERT INTO `100%s_done` VALUES (1), (2), (3)",
    "CREATE VIEW `big-orders` AS SELECT id FROM `order-items` WHERE id > 1",
    """CREATE TRIGGER `usérs-audit` AFTER INSERT ON `usérs` FOR EACH ROW
        INSERT INTO `2fa_codes` VALUES (NEW.id + 100, '000000')""",
    "CREATE FUNCTION `double-it`(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
]


def test_legal_but_ugly_names_round_trip_with_equal_checksums(
    mysql_url: str, mysql_admin: Admin, second_db: str, tmp_path: Path
) -> None:
    source = _database(mysql_url)
    _run_all(mysql_admin, source, UGLY_SCHEMA)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_mysql(mysql_url)
    assert backup.tables["order-items"].rows == 2
    assert backup.tables["usérs"].rows == 2
    assert backup.tables["odd`name"].rows == 1
    assert backup.tables["100%s_done"].rows == 3
    target_url = mysql_url.rsplit("/", 1)[0] + "/" + second_db
    backuper.restore_mysql(backup, target_url)
    assert _definitions(mysql_admin, second_db) == _definitions(mysql_admin, source)
    assert backuper.verify(backup, restore_test=mysql_url).status == "ok"


def test_only_some_tables_with_ugly_names(
    mysql_url: str, mysql_admin: Admin, tmp_path: Path
) -> None:
    _run_all(mysql_admin, _database(mysql_url), UGLY_SCHEMA)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path))
    backup = backuper.backup_mysql(mysql_url, tables=["order-items", "usérs"])
    assert sorted(backup.tables) == ["order-items", "usérs"]
    assert backuper.verify(backup, restore_test=mysql_url).status == "ok"


def _start_cli_backup_mid_dump(
    mysql_url: str, store: Path, temp: Path
) -> tuple[subprocess.Popen[bytes], list[Path]]:
    """A real autoops-backup process, returned once it is writing its dump; with the option
    file(s) holding the password it wrote under ``temp``."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TMPDIR": str(temp), "AUTOOPS_PROGRESS": "0"}
    env.pop("AUTOOPS_CONFIG", None)
    child = subprocess.Popen(
        [
            sys.executable, str(root / "scripts" / "autoops-backup"), "mysql", "--url", mysql_url,
            "--storage", str(store), "--compression", "gzip",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".partial") and p.stat().st_size > 0 for p in store.glob("*")):
        assert time.monotonic() < deadline, "the backup never started writing"
        assert child.poll() is None, "the backup finished before it could be stopped"
        time.sleep(0.01)
    return child, list(temp.glob("autoops-mysql-*"))


@pytest.fixture
def big_table(mysql_url: str) -> str:
    with autoops.DbClient.from_url(mysql_url) as db:
        db.execute("CREATE TABLE big (id INT PRIMARY KEY, pad VARCHAR(200))")
        db.execute("INSERT INTO big SELECT seq, REPEAT(MD5(seq), 6) FROM seq_1_to_400000")
    return mysql_url


def test_sigterm_mid_dump_removes_the_option_file_and_the_partial(
    big_table: str, tmp_path: Path
) -> None:
    store, temp = tmp_path / "store", tmp_path / "tmp"
    temp.mkdir()
    child, option_dirs = _start_cli_backup_mid_dump(big_table, store, temp)
    assert option_dirs, "the option file was not where the test looks"
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == 130
    assert b"Traceback" not in stderr
    assert list(temp.iterdir()) == []
    assert list(store.iterdir()) == []


def test_the_next_run_removes_the_option_file_of_a_killed_backup(
    big_table: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, temp = tmp_path / "store", tmp_path / "tmp"
    temp.mkdir()
    child, option_dirs = _start_cli_backup_mid_dump(big_table, store, temp)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    assert option_dirs
    assert all(directory.exists() for directory in option_dirs)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    autoops.Backuper(autoops.LocalStorage(store)).backup_mysql(big_table, checksums=False)
    assert list(temp.iterdir()) == []
