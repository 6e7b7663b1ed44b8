"""A MySQL backup taken from a replica, on a private MariaDB primary + replica pair under steady
writes: the dump matches the primary's binlog position it records, so the primary's binary log
replayed from there onto a restore gives the primary's tables exactly (CHECKSUM TABLE); the
primary serves none of it; the replica's SQL thread is left as it was found."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote

import pytest

import autoops
from _support.mariadb_pair import MARIADBD, MariaDbInstance, install_datadir, start_pair
from _support.proxy import TcpProxy
from _support.services import require_program
from _support.sshd import free_port
from autoops.backup import BackupError

DATABASE = "shop-replica"
TABLES = ("order-items", "usérs")
# ASCII: pymysql sends a password as latin-1, so a non-ASCII one cannot log in to utf8mb4.
PASSWORD = "back'up\\pw-9%@/"  # a test account's password, checked never to leak
Pair = tuple[MariaDbInstance, MariaDbInstance]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    require_program(MARIADBD, "mariadb-server")
    require_program(shutil.which("mariadb-binlog") or "/usr/bin/mariadb-binlog", "mariadb-client")
    workdir = tmp_path_factory.mktemp("replica-backup")
    primary, replica = start_pair(workdir)
    run_sql(
        primary,
        f"CREATE DATABASE `{DATABASE}`",
        f"CREATE TABLE `{DATABASE}`.`order-items` (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
        "qty INT NOT NULL, note VARCHAR(40), at DATETIME(6) NOT NULL)",
        f"CREATE TABLE `{DATABASE}`.`usérs` (id BIGINT PRIMARY KEY, visits BIGINT NOT NULL)",
        f"INSERT INTO `{DATABASE}`.`usérs` VALUES (9007199254740993, 0), (1, 0), (2, 0)",
        # 127.0.0.1 resolves to localhost, whose anonymous account would shadow 'backup'@'%'.
        ("CREATE USER 'backup'@'localhost' IDENTIFIED BY %s", (PASSWORD,)),
        # What a dump needs, what reading replication status needs (SLAVE MONITOR), and what
        # stopping and starting the SQL thread needs (REPLICATION SLAVE ADMIN).
        f"GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON `{DATABASE}`.* "
        "TO 'backup'@'localhost'",
        "GRANT SLAVE MONITOR, REPLICATION SLAVE ADMIN, PROCESS ON *.* TO 'backup'@'localhost'",
    )
    wait_applied(primary, replica)
    yield primary, replica
    replica.stop()
    primary.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def run_sql(
    server: MariaDbInstance, *statements: str | tuple[str, tuple[object, ...]]
) -> list[dict[str, object]]:
    connection = server.connect()
    rows: list[dict[str, object]] = []
    with connection.cursor() as cursor:
        for statement in statements:
            sql, params = statement if isinstance(statement, tuple) else (statement, None)
            cursor.execute(sql, params)
            rows = [dict(row) for row in cursor.fetchall()]
    connection.close()
    return rows


def slave_status(replica: MariaDbInstance) -> dict[str, object]:
    return run_sql(replica, "SHOW SLAVE STATUS")[0]


def wait_applied(primary: MariaDbInstance, replica: MariaDbInstance) -> None:
    position = run_sql(primary, "SHOW MASTER STATUS")[0]
    deadline = time.monotonic() + 20
    while True:
        row = slave_status(replica)
        if (row["Relay_Master_Log_File"], row["Exec_Master_Log_Pos"]) == (
            position["File"],
            position["Position"],
        ):
            return
        assert time.monotonic() < deadline, f"the replica did not catch up: {row}"
        time.sleep(0.05)


def checksums(server: MariaDbInstance) -> dict[str, object]:
    rows = run_sql(
        server, "CHECKSUM TABLE " + ", ".join(f"`{DATABASE}`.`{table}`" for table in TABLES)
    )
    return {str(row["Table"]): row["Checksum"] for row in rows}


class Writer:
    """Inserts and updates on the primary until stopped: each statement changes the result of
    a replay, so a position one event off gives other checksums."""

    def __init__(self, primary: MariaDbInstance) -> None:
        self.primary = primary
        self.stop = threading.Event()
        self.count = 0
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        connection = self.primary.connect()
        with connection.cursor() as cursor:
            # As an application does: point-in-time recovery replays with --database, which
            # under statement-based logging keeps only statements run in that database.
            cursor.execute(f"USE `{DATABASE}`")
            while not self.stop.is_set():
                cursor.execute(
                    f"INSERT INTO `{DATABASE}`.`order-items` (qty, note, at) "
                    "VALUES (%s, 'écrit', NOW(6))",
                    (self.count,),
                )
                cursor.execute(
                    f"UPDATE `{DATABASE}`.`usérs` SET visits = (visits * 3 + %s) %% 1000000007",
                    (self.count,),
                )
                self.count += 1
                time.sleep(0.002)
        connection.close()

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 30
        while self.count < count:
            assert self.thread.is_alive(), "the writer stopped"
            assert time.monotonic() < deadline, f"the writer is stuck at {self.count} rows"
            time.sleep(0.01)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[MariaDbInstance]:
    """An empty server to restore onto."""
    server = MariaDbInstance(free_port(), tmp_path / "scratch")
    install_datadir(server.datadir)
    server.start("--server-id=3")
    run_sql(server, f"CREATE DATABASE `{DATABASE}`")
    yield server
    server.stop()


def replay_primary_binlog(primary: MariaDbInstance, position: Mapping[str, str], onto: int) -> None:
    """The primary's binary logs from ``position`` on, replayed onto the server at ``onto``:
    point-in-time recovery."""
    first = position["binlog_file"]
    files = sorted(path for path in primary.datadir.glob("binlog.[0-9]*") if path.name >= first)
    decoded = subprocess.run(
        [
            "mariadb-binlog",
            "--no-defaults",
            f"--start-position={position['binlog_position']}",
            *map(str, files),
        ],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(
        ["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{onto}", "-uroot", "--binary-mode"],
        input=decoded,
        check=True,
        capture_output=True,
    )


def backup_url(port: int, database: str = DATABASE) -> str:
    return f"mysql://backup:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/{quote(database)}"


def test_a_backup_from_the_replica_replays_to_the_primarys_checksums(
    pair: Pair, scratch: MariaDbInstance, tmp_path: Path
) -> None:
    primary, replica = pair
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    with Writer(primary) as writer:
        writer.wait_for(50)
        backup = backuper.backup_mysql(
            backup_url(primary.port), from_replica=f"mysql://127.0.0.1:{replica.port}"
        )
        writer.wait_for(100)  # writes after the backup, for the replay to carry
    assert backup.position["read_from"] == f"replica 127.0.0.1:{replica.port}"
    assert backup.source == f"mysql://127.0.0.1:{primary.port}/{DATABASE}"
    backuper.restore_mysql(backup, f"mysql://root@127.0.0.1:{scratch.port}/{DATABASE}")
    replay_primary_binlog(primary, backup.position, scratch.port)
    assert checksums(scratch) == checksums(primary)
    status = slave_status(replica)
    assert (status["Slave_IO_Running"], status["Slave_SQL_Running"]) == ("Yes", "Yes")


def test_the_primary_serves_none_of_a_replica_backup(pair: Pair, tmp_path: Path) -> None:
    primary, replica = pair
    with TcpProxy("127.0.0.1", primary.port) as to_primary:
        backup = autoops.Backuper(autoops.LocalStorage(tmp_path / "store")).backup_mysql(
            backup_url(to_primary.port), from_replica=f"mysql://127.0.0.1:{replica.port}"
        )
        assert to_primary.accepted == 0
    assert backup.tables["usérs"].rows == 3


def test_a_replica_with_its_sql_thread_stopped_is_dumped_at_its_position_and_left_stopped(
    pair: Pair, scratch: MariaDbInstance, tmp_path: Path
) -> None:
    primary, replica = pair
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    with Writer(primary) as writer:
        writer.wait_for(30)
        run_sql(replica, "STOP SLAVE SQL_THREAD")
        try:
            writer.wait_for(60)  # the replica falls behind the primary
            replica_client = autoops.DbClient.from_url(backup_url(replica.port))
            with replica_client:
                backup = backuper.backup_mysql(
                    backup_url(primary.port), from_replica=replica_client
                )
            status = slave_status(replica)
        finally:
            run_sql(replica, "START SLAVE SQL_THREAD")
    assert status["Slave_SQL_Running"] == "No"
    assert backup.position["binlog_position"] == str(status["Exec_Master_Log_Pos"])
    backuper.restore_mysql(backup, f"mysql://root@127.0.0.1:{scratch.port}/{DATABASE}")
    replay_primary_binlog(primary, backup.position, scratch.port)
    assert checksums(scratch) == checksums(primary)


def test_a_server_that_is_no_replica_is_refused_clearly(pair: Pair, tmp_path: Path) -> None:
    primary, _ = pair
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    with pytest.raises(BackupError, match="is not a replica") as failure:
        backuper.backup_mysql(backup_url(primary.port), from_replica=backup_url(primary.port))
    assert PASSWORD not in str(failure.value)
    assert backuper.list() == []


def test_the_manifest_of_a_replica_backup_holds_no_password(pair: Pair, tmp_path: Path) -> None:
    primary, replica = pair
    store = tmp_path / "store"
    autoops.Backuper(autoops.LocalStorage(store)).backup_mysql(
        backup_url(primary.port), from_replica=backup_url(replica.port)
    )
    for path in store.rglob("*"):
        if path.is_file() and path.suffix == ".json":
            text = path.read_text()
            assert PASSWORD not in text
            assert quote(PASSWORD, safe="") not in text


def test_the_backup_command_takes_from_replica_from_the_settings_file(
    pair: Pair, tmp_path: Path
) -> None:
    from autoops.cli.backup import main_backup

    primary, replica = pair
    settings = tmp_path / "autoops.toml"
    settings.write_text(
        f'[db]\nurl = "{backup_url(primary.port)}"\n'
        f'[backup]\nstorage = "{tmp_path / "store"}"\n'
        f'from_replica = "mysql://127.0.0.1:{replica.port}"\n'
    )
    settings.chmod(0o600)
    assert main_backup(["mysql", "--config", str(settings)]) == 0
    (backup,) = autoops.Backuper(autoops.LocalStorage(tmp_path / "store")).list()
    assert backup.position["read_from"] == f"replica 127.0.0.1:{replica.port}"


def test_the_backup_command_refuses_from_replica_for_redis(tmp_path: Path) -> None:
    from autoops.cli.backup import main_backup

    code = main_backup(
        [
            "redis",
            "--url",
            "redis://127.0.0.1:1/0",
            "--storage",
            str(tmp_path),
            "--from-replica",
            "mysql://127.0.0.1:2",
        ]
    )
    assert code == 2


def test_point_in_time_recovery_replays_the_primarys_archived_binlogs_onto_a_replica_backup(
    pair: Pair, scratch: MariaDbInstance, tmp_path: Path
) -> None:
    primary, replica = pair
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    with Writer(primary) as writer:
        writer.wait_for(20)
        backup = backuper.backup_mysql(
            backup_url(primary.port), from_replica=f"mysql://127.0.0.1:{replica.port}"
        )
        writer.wait_for(writer.count + 40)
    end = run_sql(primary, "SHOW MASTER STATUS")[0]
    backuper.archive_binlogs(f"mysql://root@127.0.0.1:{primary.port}/{DATABASE}")
    backuper.restore_mysql(
        backup,
        f"mysql://root@127.0.0.1:{scratch.port}/{DATABASE}",
        until=autoops.BinlogPosition(str(end["File"]), int(str(end["Position"]))),
    )
    assert checksums(scratch) == checksums(primary)
