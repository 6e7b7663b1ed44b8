"""Backups in S3: against moto_server, a real S3-speaking HTTP server on loopback, through boto3
exactly as against S3 (nothing patched). Multipart uploads completed only when whole, abandoned
uploads of dead writers aborted, corruption and bad settings refused with clear errors."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

import autoops
from _support.proxy import TcpProxy
from _support.s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoServer, moto_server
from _support.services import run_script
from autoops.backup._s3 import _process_start, _writer_is_gone

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "nightly/db.prod.example.com"
PART = 5 << 20


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


def _client(endpoint_url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    name = f"autoops-test-{secrets.token_hex(4)}"
    _client(moto.endpoint_url).create_bucket(Bucket=name)
    return name


def _storage(endpoint_url: str, bucket: str, **options: Any) -> autoops.S3Storage:
    settings: dict[str, Any] = {
        "prefix": PREFIX,
        "endpoint_url": endpoint_url,
        "region": "us-east-1",
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
        "part_size": PART,
        "max_attempts": 2,
        "connect_timeout": 2.0,
        "read_timeout": 10.0,
    }
    return autoops.S3Storage(bucket, **{**settings, **options})


def _sqlite_db(path: Path, megabytes: int) -> Path:
    db = autoops.SQLiteClient(path)
    db.execute('CREATE TABLE "order-items" (id INTEGER PRIMARY KEY, data BLOB)')
    db.executemany(
        'INSERT INTO "order-items" (data) VALUES (%s)',
        [(os.urandom(1 << 20),) for _ in range(megabytes)],
    )
    db.close()
    return path


def _objects(moto: MotoServer, bucket: str) -> dict[str, bytes]:
    client = _client(moto.endpoint_url)
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {
        item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for item in listing
    }


# the round trip ------------------------------------------------------------------------------


def test_a_multipart_encrypted_backup_round_trips_and_leaves_no_upload_or_lease(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    storage = _storage(moto.endpoint_url, bucket)
    encryption = autoops.Encryption.generate_key(tmp_path / "key")
    backuper = autoops.Backuper(storage, encryption=encryption)
    backup = backuper.backup_sqlite(_sqlite_db(tmp_path / "app.db", 12))
    assert backup.size > 2 * PART  # three parts at least
    objects = _objects(moto, bucket)
    assert sorted(objects) == sorted(
        [f"{PREFIX}/{backup.data_file}", f"{PREFIX}/{backup.manifest_file}"]
    )
    assert all(backup.id in key for key in objects)
    head = _client(moto.endpoint_url).head_object(Bucket=bucket, Key=f"{PREFIX}/{backup.data_file}")
    assert head["Metadata"]["autoops-writer"].split()[1] == str(os.getpid())
    assert storage.uploads() == []
    listed = autoops.Backuper(storage).list()
    assert [b.id for b in listed] == [backup.id]
    assert backuper.verify(listed[0], restore_test=True).status == "ok"
    backuper.restore_sqlite(listed[0], tmp_path / "restored.db")
    restored = autoops.SQLiteClient(tmp_path / "restored.db")
    assert restored.query('SELECT COUNT(*) AS n FROM "order-items"') == [{"n": 12}]
    restored.close()
    storage.close()


def test_a_mysql_backup_on_s3_restores_and_prunes(
    moto: MotoServer, bucket: str, mysql_db: autoops.DbClient, mysql_url: str, tmp_path: Path
) -> None:
    assert isinstance(mysql_db, autoops.MySQLClient)
    mysql_db.execute("CREATE TABLE order_items (id BIGINT PRIMARY KEY, note VARCHAR(50))")
    mysql_db.executemany(
        "INSERT INTO order_items VALUES (%s, %s)", [(2**53 + i, f"n{i}") for i in range(500)]
    )
    storage = _storage(moto.endpoint_url, bucket)
    backuper = autoops.Backuper(
        storage, encryption=autoops.Encryption.generate_key(tmp_path / "key")
    )
    first = backuper.verify(backuper.backup_mysql(mysql_db), restore_test=mysql_url)
    second = backuper.verify(backuper.backup_mysql(mysql_db))
    for content in _objects(moto, bucket).values():
        assert b"order_items" not in content
    mysql_db.execute("DROP TABLE order_items")
    backuper.restore_mysql(second, mysql_db)
    assert mysql_db.query("SELECT COUNT(*) AS n FROM order_items") == [{"n": 500}]
    plan = backuper.prune(autoops.RetentionPolicy(keep_last=1))
    assert [b.id for b in plan.remove] == [first.id]
    assert sorted(_objects(moto, bucket)) == sorted(
        [f"{PREFIX}/{second.data_file}", f"{PREFIX}/{second.manifest_file}"]
    )


def test_the_freshness_check_reads_an_s3_catalogue_without_a_key(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    backuper = autoops.Backuper(
        _storage(moto.endpoint_url, bucket),
        encryption=autoops.Encryption.generate_key(tmp_path / "key"),
    )
    backup = backuper.verify(backuper.backup_sqlite(_sqlite_db(tmp_path / "app.db", 0)))
    settings = tmp_path / "autoops.toml"
    settings.write_text(
        f"""
[monitor.checks.backups]
type = "backup"
storage = "s3://{bucket}/{PREFIX}"
endpoint_url = "{moto.endpoint_url}"
region = "us-east-1"
access_key_id = "{ACCESS_KEY_ID}"
secret_access_key = "{SECRET_ACCESS_KEY}"
sources = ["{backup.source}"]
"""
    )
    monitor = autoops.monitor_from_settings(autoops.load_settings(settings))
    [result] = monitor.run(notify=False)
    assert result.status is autoops.CheckStatus.OK, result


# faults --------------------------------------------------------------------------------------


def test_a_corrupted_object_is_refused_by_verify_and_restore(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    backuper = autoops.Backuper(_storage(moto.endpoint_url, bucket))
    backup = backuper.backup_sqlite(_sqlite_db(tmp_path / "app.db", 1))
    client = _client(moto.endpoint_url)
    key = f"{PREFIX}/{backup.data_file}"
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x40
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    with pytest.raises(autoops.BackupVerifyError, match="SHA-256"):
        backuper.verify(backup)
    assert backuper.list()[0].status == "corrupt"
    with pytest.raises(autoops.BackupVerifyError):
        backuper.restore_sqlite(backup, tmp_path / "restored.db")
    assert not (tmp_path / "restored.db").exists()


def test_a_missing_bucket_is_a_clear_config_error(moto: MotoServer, tmp_path: Path) -> None:
    backuper = autoops.Backuper(_storage(moto.endpoint_url, "autoops-no-such-bucket"))
    with pytest.raises(autoops.ConfigError, match="'autoops-no-such-bucket' does not exist"):
        backuper.backup_sqlite(_sqlite_db(tmp_path / "app.db", 0))


def test_bad_credentials_are_an_authentication_error_that_names_no_secret(
    tmp_path: Path,
) -> None:
    with moto_server(check_credentials=True) as server:
        storage = _storage(
            server.endpoint_url,
            "autoops-any",
            access_key_id="AKIANOSUCHKEY",
            secret_access_key="s3cr3t-value",
        )
        with pytest.raises(autoops.AuthenticationError, match="InvalidAccessKeyId") as caught:
            autoops.Backuper(storage).backup_sqlite(_sqlite_db(tmp_path / "app.db", 0))
        assert "s3cr3t-value" not in str(caught.value)
        assert "s3cr3t-value" not in repr(storage)


def test_the_server_killed_mid_upload_is_a_clear_error_and_lists_no_backup(
    tmp_path: Path,
) -> None:
    with moto_server() as server:
        name = "autoops-killed"
        _client(server.endpoint_url).create_bucket(Bucket=name)
        storage = _storage(server.endpoint_url, name)
        watcher = _storage(server.endpoint_url, name)

        def kill_when_uploading() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with_parts = [
                    upload
                    for upload in watcher.uploads()
                    if watcher.client.list_parts(
                        Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
                    ).get("Parts")
                ]
                if with_parts:
                    server.kill()
                    return
                time.sleep(0.02)

        killer = threading.Thread(target=kill_when_uploading)
        killer.start()
        with pytest.raises(autoops.ConnectError, match="nothing was left under a final name"):
            autoops.Backuper(storage).backup_sqlite(_sqlite_db(tmp_path / "app.db", 16))
        killer.join()
        assert server.process.poll() is not None


def test_a_connection_cut_mid_upload_lists_nothing_and_the_next_backup_aborts_the_upload(
    moto: MotoServer,
    bucket: str,
    tcp_proxy: Callable[[str, int], TcpProxy],
    tmp_path: Path,
) -> None:
    proxy = tcp_proxy("127.0.0.1", moto.port)
    storage = _storage(f"http://127.0.0.1:{proxy.port}", bucket)
    direct = _storage(moto.endpoint_url, bucket)

    def cut_when_uploading() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if direct.uploads():
                proxy.mode = "refuse"
                proxy.drop_all()
                return
            time.sleep(0.01)

    cutter = threading.Thread(target=cut_when_uploading)
    cutter.start()
    with pytest.raises(autoops.ConnectError):
        autoops.Backuper(storage).backup_sqlite(_sqlite_db(tmp_path / "app.db", 16))
    cutter.join()
    proxy.mode = "forward"
    assert autoops.Backuper(direct).list() == []
    assert len(direct.uploads()) == 1  # the abort could not get through either
    backup = autoops.Backuper(storage).backup_sqlite(_sqlite_db(tmp_path / "small.db", 0))
    assert direct.uploads() == []
    assert sorted(direct.names()) == sorted([backup.data_file, backup.manifest_file])


def test_a_reply_lost_on_the_way_is_retried_and_the_backup_completes(
    moto: MotoServer,
    bucket: str,
    tcp_proxy: Callable[[str, int], TcpProxy],
    tmp_path: Path,
) -> None:
    proxy = tcp_proxy("127.0.0.1", moto.port)
    storage = _storage(f"http://127.0.0.1:{proxy.port}", bucket, max_attempts=3)
    proxy.drop_next_reply()
    backup = autoops.Backuper(storage).backup_sqlite(_sqlite_db(tmp_path / "app.db", 0))
    assert proxy.accepted >= 2  # the first connection was cut, botocore opened another
    assert [b.id for b in autoops.Backuper(storage).list()] == [backup.id]


_WRITER = """
import os, sys, time
from autoops import S3Storage
# Credentials come from boto3's chain (the environment), never from argv.
storage = S3Storage(sys.argv[1], prefix=sys.argv[2], endpoint_url=sys.argv[3],
                    region="us-east-1", part_size=5 << 20)
upload = storage.create("writer-test.sqlite.zst")
upload.write(os.urandom(6 << 20))
print("uploading", flush=True)
time.sleep(300)
"""


def test_a_dead_writers_upload_is_aborted_by_the_next_prune_and_a_live_ones_is_not(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, bucket, PREFIX, moto.endpoint_url],
        stdout=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        },
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "uploading"
        storage = _storage(moto.endpoint_url, bucket)
        backuper = autoops.Backuper(storage)
        backuper.prune(autoops.RetentionPolicy(keep_last=1))
        assert [u["Key"] for u in storage.uploads()] == [f"{PREFIX}/writer-test.sqlite.zst"]
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=10)
        if writer.stdout is not None:
            writer.stdout.close()
    backuper.prune(autoops.RetentionPolicy(keep_last=1))
    assert storage.uploads() == []
    assert not [name for name in storage.names() if name.endswith(".partial")]


def test_a_reused_pid_does_not_keep_an_upload_alive(moto: MotoServer) -> None:
    host = os.uname().nodename
    live = moto.process.pid
    lease = {"key": "k", "host": host, "pid": live, "start": _process_start(live)}
    assert not _writer_is_gone("x.partial", lease)
    assert _writer_is_gone("x.partial", {**lease, "start": "1"})
    assert not _writer_is_gone("x.partial", {**lease, "host": "other-host.example.com"})


# the commands ------------------------------------------------------------------------------


def _run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_script(name, *args, timeout=120)


def test_the_commands_back_up_list_verify_and_restore_with_s3_settings(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    db = _sqlite_db(tmp_path / "app.db", 1)
    key = tmp_path / "backup.key"
    assert _run("autoops-backup", "keygen", str(key)).returncode == 0
    config = tmp_path / "autoops.toml"
    config.touch(mode=0o600)  # it holds the secret key: others may not read it
    config.write_text(
        f"""
[backup]
storage = "s3://{bucket}/{PREFIX}"
endpoint_url = "{moto.endpoint_url}"
region = "us-east-1"
access_key_id = "{ACCESS_KEY_ID}"
secret_access_key = "{SECRET_ACCESS_KEY}"
encryption_key = "{key}"
"""
    )
    taken = _run("autoops-backup", "sqlite", "--url", f"sqlite:///{db}", "--config", str(config))
    assert taken.returncode == 0, taken.stderr
    listed = _run("autoops-backups", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    backup_id = listed.stdout.split()[0]
    verified = _run("autoops-backups", "verify", "--config", str(config))
    assert verified.returncode == 0, verified.stdout
    assert verified.stdout.startswith("ok"), verified.stdout
    target = tmp_path / "restored.db"
    restored = _run(
        "autoops-restore", backup_id, "--url", f"sqlite:///{target}", "--config", str(config)
    )
    assert restored.returncode == 0, restored.stderr
    assert target.exists()
    wrong = _run(
        "autoops-backups", "list", "--config", str(config), "--storage", "s3://autoops-nope/x"
    )
    assert wrong.returncode == 2
    assert wrong.stderr.strip().count("\n") == 0
    assert "does not exist" in wrong.stderr
