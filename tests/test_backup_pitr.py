"""Point-in-time recovery: binary logs archived beside the full backups, replayed to a moment.

One private mariadbd with a binary log serves the whole module (the shared server has none);
each test works in a database and a storage of its own.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pymysql
import pytest

import autoops
from _support.mariadb_pair import MariaDbInstance, start_with_binlog
from _support.s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY, moto_server
from _support.services import promtool_accepts
from _support.sshd import SshServer
from autoops._ssh import SshOptions
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


def test_row_based_events_are_replayed_into_a_database_of_another_name(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    writer = _writer(server, database)
    with writer.cursor() as cursor:
        cursor.execute("SET SESSION binlog_format = ROW")
    full = backuper.backup_mysql(_url(server, database))
    _insert(writer, "a", 40)
    with writer.cursor() as cursor:
        cursor.execute(f"UPDATE {TABLE} SET sku = CONCAT(sku, '-x') WHERE id % 2 = 0")
    until = _next_second()
    with writer.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE}")
    backuper.archive_binlogs(_url(server, database))

    backuper.restore_mysql(full, _target(server, database), until=until)

    assert _rows(server, f"{database}_restored") == {"a": 40}
    with server.connect().cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*) AS n FROM `{database}_restored`.{TABLE} WHERE sku LIKE '%-x'"
        )
        assert cursor.fetchone() == {"n": 20}


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


def test_the_active_binlog_is_copied_again_as_it_grows_and_completed_once_closed(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    backuper = autoops.Backuper(autoops.LocalStorage(store))
    url = _url(server, database)
    backuper.archive_binlogs(url)
    first = backuper.binlogs()[-1]
    assert not first.complete
    _insert(_writer(server, database), "a", 10)

    backuper.archive_binlogs(url)
    grown = backuper.binlogs()[-1]
    _flush(server)
    backuper.archive_binlogs(url)
    closed = next(a for a in backuper.binlogs() if a.server_file == first.server_file)

    assert grown.server_file == first.server_file
    assert grown.end_position > first.end_position
    assert closed.complete
    assert closed.end_position > grown.end_position  # the closing rotate event
    assert not backuper.binlogs()[-1].complete
    copies = [p.name for p in store.iterdir() if f"-{first.server_file}-" in p.name]
    assert copies == [closed.data_file]


def test_archive_and_restore_to_a_moment_over_sftp(
    server: MariaDbInstance, database: str, sshd: SshServer, tmp_path: Path
) -> None:
    options = SshOptions(
        key_filename=str(sshd.client_key), known_hosts=str(sshd.known_hosts), connect_timeout=5
    )
    storage = autoops.SftpStorage(sshd.address, str(tmp_path / "remote"), options=options)
    backuper = autoops.Backuper(storage)
    writer = _writer(server, database)
    full = backuper.backup_mysql(_url(server, database))
    _insert(writer, "a", 10)
    backuper.archive_binlogs(_url(server, database))
    _insert(writer, "b", 10)
    until = _next_second()
    _insert(writer, "c", 10)
    backuper.archive_binlogs(_url(server, database))

    backuper.restore_mysql(full, _target(server, database), until=until)

    assert _rows(server, f"{database}_restored") == {"a": 10, "b": 10}
    storage.close()


def test_archive_and_restore_to_a_moment_in_s3(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    with moto_server() as moto:
        bucket = f"autoops-pitr-{secrets.token_hex(4)}"
        storage = autoops.S3Storage(
            bucket,
            prefix="db1",
            endpoint_url=moto.endpoint_url,
            region="us-east-1",
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
        )
        storage.client.create_bucket(Bucket=bucket)
        key = autoops.Encryption.generate_key(tmp_path / "backup.key")
        backuper = autoops.Backuper(storage, encryption=key)
        writer = _writer(server, database)
        full = backuper.backup_mysql(_url(server, database))
        _insert(writer, "a", 10)
        backuper.archive_binlogs(_url(server, database))
        _insert(writer, "b", 10)
        until = _next_second()
        _insert(writer, "c", 10)
        backuper.archive_binlogs(_url(server, database))

        backuper.restore_mysql(full, _target(server, database), until=until)

        assert _rows(server, f"{database}_restored") == {"a": 10, "b": 10}
        assert backuper.verify_binlogs() == backuper.binlogs()


def test_an_archiver_killed_mid_file_resumes_without_a_hole(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    url = _url(server, database)
    with server.connect().cursor() as cursor:
        cursor.execute(f"USE `{database}`")
        cursor.execute("CREATE TABLE big (id INT PRIMARY KEY, pad LONGTEXT)")
        # Random text compresses poorly, so the copy takes long enough to be killed in.
        for start in range(0, 40, 4):
            cursor.executemany(
                "INSERT INTO big VALUES (%s, %s)",
                [(n, os.urandom(250_000).hex()) for n in range(start, start + 4)],
            )
        cursor.execute("SHOW MASTER STATUS")
        status = cursor.fetchone()
        assert status is not None
        big_file = status["File"]
    _flush(server)
    archiver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, autoops; "
            "autoops.Backuper(autoops.LocalStorage(sys.argv[1])).archive_binlogs(sys.argv[2])",
            str(store),
            url,
        ],
    )
    copies = Path(os.environ.get("TMPDIR", "/tmp"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and archiver.poll() is None:
        started = list(copies.glob(f"autoops-binlog-{archiver.pid}-*/{big_file}"))
        if started or any(p.name.endswith(".partial") for p in store.glob("*")):
            archiver.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    assert archiver.wait() == -signal.SIGKILL
    backuper = autoops.Backuper(autoops.LocalStorage(store))
    assert big_file not in {a.server_file for a in backuper.binlogs()}

    backuper.archive_binlogs(url)

    assert not [p for p in store.iterdir() if p.name.endswith(".partial")]
    assert not list(copies.glob(f"autoops-binlog-{archiver.pid}-*"))
    with server.connect().cursor() as cursor:
        cursor.execute("SHOW BINARY LOGS")
        on_server = {row["Log_name"]: int(row["File_size"]) for row in cursor.fetchall()}
    archived = {a.server_file: a for a in backuper.binlogs()}
    assert {name: archived[name].end_position for name in on_server} == on_server
    from autoops.backup._binlogs import chunks_of

    copy = b"".join(chunks_of(backuper, archived[big_file]))
    assert copy == (server.datadir / big_file).read_bytes()


def test_retention_keeps_the_binlogs_from_the_oldest_kept_backup_on(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    writer = _writer(server, database)
    _flush(server)  # a file older than every backup, for prune to remove
    backups = []
    for batch in "abc":
        _insert(writer, batch, 5)
        backups.append(backuper.backup_mysql(_url(server, database)))
        _flush(server)
    backuper.archive_binlogs(_url(server, database))
    before = [a.server_file for a in backuper.binlogs()]
    needed_from = backups[1].position["binlog_file"]
    assert before[0] < backups[0].position["binlog_file"] < needed_from

    plan = backuper.prune(autoops.RetentionPolicy(keep_last=2), dry_run=True)
    assert [b.id for b in plan.remove] == [backups[0].id]
    assert [a.server_file for a in plan.binlogs] == [f for f in before if f < needed_from]
    assert [line for line in plan.lines() if "binlog" in line]
    assert [a.server_file for a in backuper.binlogs()] == before

    backuper.prune(autoops.RetentionPolicy(keep_last=2))

    assert [a.server_file for a in backuper.binlogs()] == [f for f in before if f >= needed_from]
    names = {p.name for p in (tmp_path / "store").iterdir()}
    assert {a.data_file for a in backuper.binlogs()} == {n for n in names if ".binlog.zst" in n}


def test_passwords_never_reach_argv_the_environment_or_messages(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    user = f"pitr_{secrets.token_hex(3)}"
    password = f"s3cret-{secrets.token_hex(4)}"
    with server.connect().cursor() as cursor:
        cursor.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        cursor.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%'")
    url = f"mysql://{user}:{password}@127.0.0.1:{server.port}/{database}"
    target = _target(server, database).replace("root@", f"{user}:{password}@")
    leaks: list[str] = []
    started: list[list[str]] = []
    real_popen = subprocess.Popen
    stop = threading.Event()

    def spy(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        started.append(list(argv))
        if password in " ".join(argv) + " ".join((kwargs.get("env") or {}).values()):
            leaks.append(" ".join(argv))
        return real_popen(argv, *args, **kwargs)

    def watch() -> None:
        while not stop.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    argv = (entry / "cmdline").read_bytes()
                    environment = (entry / "environ").read_bytes()
                except OSError:
                    continue
                if password.encode() in argv + environment:
                    leaks.append(argv.decode(errors="replace"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    patch = pytest.MonkeyPatch()
    patch.setattr(subprocess, "Popen", spy)
    try:
        backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
        full = backuper.backup_mysql(url)
        _insert(_writer(server, database), "a", 5)
        backuper.archive_binlogs(url)
        until = _next_second()
        backuper.archive_binlogs(url)
        backuper.restore_mysql(full, target, until=until)
        with pytest.raises(autoops.AutoOpsError) as refused:
            backuper.archive_binlogs(url.replace(password, password + "-wrong"))
    finally:
        patch.undo()
        stop.set()
        watcher.join()
    assert leaks == []
    tools = {Path(argv[0]).name for argv in started}
    assert {"mariadb-binlog", "mariadb-dump", "mariadb"} <= tools, tools
    assert password not in str(refused.value)
    assert "Access denied" in str(refused.value)
    stored = b"".join(p.read_bytes() for p in (tmp_path / "store").glob("*.json"))
    assert password.encode() not in stored
    assert _rows(server, f"{database}_restored") == {"a": 5}


def test_encrypted_binlogs_restore_with_the_key_and_refuse_without_it(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    key = autoops.Encryption.generate_key(tmp_path / "backup.key")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"), encryption=key)
    full = backuper.backup_mysql(_url(server, database))
    _insert(_writer(server, database), "a", 5)
    backuper.archive_binlogs(_url(server, database))
    until = _next_second()
    backuper.archive_binlogs(_url(server, database))
    assert all(a.data_file.endswith(".binlog.zst.age") for a in backuper.binlogs())
    keyless = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    sealed = keyless.get(full.id)

    with pytest.raises(autoops.EncryptionKeyError):
        keyless.restore_mysql(sealed, _target(server, database), until=until)
    assert _tables(server, f"{database}_restored") == []

    with pytest.raises(autoops.EncryptionKeyError, match="--encryption-key"):
        keyless.backup_before(until)

    chosen = backuper.backup_before(until)
    assert chosen.id == full.id
    backuper.restore_mysql(chosen, _target(server, database), until=until)
    assert _rows(server, f"{database}_restored") == {"a": 5}


def test_a_fraction_of_a_second_is_refused(tmp_path: Path) -> None:
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    with pytest.raises(autoops.ConfigError, match="whole second"):
        backuper.backup_before(datetime(2026, 11, 30, 10, 15, 0, 500000, tzinfo=UTC))


# the commands ----------------------------------------------------------------------------------


def _command(name: str, *args: str, tz: str = "UTC") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTOOPS_PROGRESS": "0", "TZ": tz}
    env.pop("AUTOOPS_CONFIG", None)
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    return subprocess.run(
        [sys.executable, str(scripts / name), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_restore_command_reads_a_naive_until_in_the_local_time_zone(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    url = _url(server, database)
    assert _command("autoops-backup", "mysql", "--url", url, "--storage", store).returncode == 0
    _insert(_writer(server, database), "a", 5)
    local = _next_second()
    _insert(_writer(server, database), "b", 5)
    archived = _command("autoops-backup", "binlogs", "--url", url, "--storage", store)
    assert (archived.returncode, archived.stdout, archived.stderr) == (0, "", "")
    zone = "America/New_York"
    until = local.astimezone().astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")

    restored = _command(
        "autoops-restore", "--until", until, "--url", _target(server, database),
        "--storage", store, tz=zone,
    )  # fmt: skip

    assert (restored.returncode, restored.stderr) == (0, "")
    assert _rows(server, f"{database}_restored") == {"a": 5}
    listing = _command("autoops-backups", "list", "--storage", store)
    assert any(" binlog " in line and "active" in line for line in listing.stdout.splitlines())


def test_binlogs_command_writes_the_recovery_point_to_a_metrics_file(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    metrics = tmp_path / "binlogs.prom"
    before = time.time()

    result = _command(
        "autoops-backup", "binlogs", "--url", _url(server, database),
        "--storage", str(tmp_path / "store"), "--metrics-file", str(metrics),
    )  # fmt: skip

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    text = metrics.read_text()
    promtool_accepts(text)
    assert (
        f'autoops_backup_binlog_last_run_success{{source="mysql://127.0.0.1:{server.port}"}} 1.0'
        in text
    )
    point = next(
        line for line in text.splitlines()
        if line.startswith("autoops_backup_binlog_recovery_point_timestamp_seconds{")
    )  # fmt: skip
    assert before <= float(point.rsplit(" ", 1)[1]) <= time.time()


def test_verify_reads_every_archived_binlog_and_names_a_damaged_one(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    backuper = autoops.Backuper(autoops.LocalStorage(store))
    _insert(_writer(server, database), "a", 5)
    _flush(server)
    backuper.archive_binlogs(_url(server, database))
    assert backuper.verify_binlogs() == backuper.binlogs()
    damaged = backuper.binlogs()[0]
    data = bytearray((store / damaged.data_file).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (store / damaged.data_file).write_bytes(bytes(data))

    result = _command("autoops-backups", "verify", "--storage", str(store))

    assert result.returncode == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1
    assert f"binlog {damaged.server_file} of" in failed[0]
    assert "SHA-256" in failed[0]
    with pytest.raises(autoops.BackupVerifyError, match=damaged.data_file):
        backuper.verify_binlogs()


def test_a_gap_makes_the_restore_command_fail_naming_the_file(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    backuper = autoops.Backuper(autoops.LocalStorage(store))
    full = backuper.backup_mysql(_url(server, database))
    _flush(server)
    _insert(_writer(server, database), "a", 5)
    _flush(server)
    backuper.archive_binlogs(_url(server, database))
    until = _next_second()  # after every rotation, so the whole chain is needed
    backuper.archive_binlogs(_url(server, database))
    gone = backuper.binlogs()[-2]
    (store / gone.manifest_file).unlink()

    result = _command(
        "autoops-restore", full.id, "--until", until.astimezone().isoformat(sep=" "),
        "--url", _target(server, database), "--storage", str(store),
    )  # fmt: skip

    assert result.returncode == 1
    assert f"{gone.server_file} is missing" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_follow_keeps_archiving_until_sigterm(
    server: MariaDbInstance, database: str, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    env = {**os.environ, "AUTOOPS_PROGRESS": "0"}
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    follower = subprocess.Popen(
        [
            sys.executable, str(scripts / "autoops-backup"), "binlogs", "--follow",
            "--interval", "0.2", "--url", _url(server, database), "--storage", str(store),
        ],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    backuper = autoops.Backuper(autoops.LocalStorage(store))
    try:
        _insert(_writer(server, database), "a", 3)
        with server.connect().cursor() as cursor:
            cursor.execute("SHOW MASTER STATUS")
            status = cursor.fetchone()
        assert status is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reached = {a.server_file: a.end_position for a in backuper.binlogs()}
            if reached.get(status["File"], 0) >= status["Position"]:
                break
            time.sleep(0.1)
        assert reached.get(status["File"], 0) >= status["Position"]
    finally:
        follower.send_signal(signal.SIGTERM)
        _, stderr = follower.communicate(timeout=30)
    assert follower.returncode == 130, stderr


def test_binlogs_purged_before_they_were_archived_are_named_in_a_warning(
    server: MariaDbInstance, database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    backuper.archive_binlogs(_url(server, database))
    newest = backuper.binlogs()[-1].server_file
    for _ in range(3):
        _flush(server)
    with server.connect().cursor() as cursor:
        cursor.execute("SHOW MASTER STATUS")
        status = cursor.fetchone()
        assert status is not None
        # A file a binlog dump thread still reads is not purged: end those left by other tests.
        cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog%'")
        for row in cursor.fetchall():
            cursor.execute(f"KILL {int(row['ID'])}")
        deadline = time.monotonic() + 10
        while True:
            cursor.execute(f"PURGE BINARY LOGS TO '{status['File']}'")
            cursor.execute("SHOW BINARY LOGS")
            if len(cursor.fetchall()) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # a killed dump thread lets go of its file when it ends
    base, number = newest.rsplit(".", 1)
    lost = [f"{base}.{n:06d}" for n in range(int(number) + 1, int(number) + 3)]

    backuper.archive_binlogs(_url(server, database))

    assert f"{lost[0]} to {lost[-1]} of mysql://127.0.0.1:{server.port}" in caplog.text
    assert "purged from the server before" in caplog.text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("binlog.000042:1234", BinlogPosition("binlog.000042", 1234)),
        ("2026-11-30 10:15:00+01:00", datetime(2026, 11, 30, 9, 15, tzinfo=UTC)),
        ("2026-11-30", datetime(2026, 11, 30).astimezone().astimezone(UTC)),
    ],
)
def test_until_text_is_a_position_a_moment_or_a_day(text: str, expected: object) -> None:
    from autoops.backup._pitr import parse_until

    assert parse_until(text) == expected


def test_until_text_of_three_numbers_is_a_gtid() -> None:
    from autoops.backup._pitr import parse_until

    assert str(parse_until("0-1-77")) == "0-1-77"


def test_until_text_that_is_none_of_them_is_refused_saying_what_is_accepted() -> None:
    from autoops.backup._pitr import parse_until

    with pytest.raises(autoops.ConfigError, match=r"binlog\.000042:1234.*0-1-77"):
        parse_until("yesterday")


def test_a_reset_binary_log_is_refused_rather_than_taken_for_the_archived_one(
    tmp_path: Path,
) -> None:
    other = start_with_binlog(tmp_path / "reset")
    try:
        backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
        with other.connect().cursor() as cursor:
            cursor.execute("CREATE DATABASE shop")
            cursor.execute("FLUSH BINARY LOGS")
        backuper.archive_binlogs(other.url)
        with other.connect().cursor() as cursor:
            cursor.execute("RESET MASTER")
            cursor.execute("CREATE DATABASE `2fa_codes`")
            cursor.execute("FLUSH BINARY LOGS")

        with pytest.raises(autoops.BackupError, match=r"binlog\.000001 .* was reset"):
            backuper.archive_binlogs(other.url)
    finally:
        other.stop()
