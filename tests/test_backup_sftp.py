"""Backups over SFTP to a real sshd: uploaded as .partial, renamed only once checked."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import autoops
from _support.proxy import TcpProxy
from _support.sshd import SshServer
from autoops._ssh import SshOptions


def _options(server: SshServer, known_hosts: Path | None = None) -> SshOptions:
    return SshOptions(
        key_filename=str(server.client_key),
        known_hosts=str(known_hosts or server.known_hosts),
        connect_timeout=5,
    )


def _sqlite_db(path: Path, megabytes: int) -> autoops.SQLiteClient:
    db = autoops.SQLiteClient(path)
    db.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
    db.executemany(
        "INSERT INTO blobs (data) VALUES (%s)", [(os.urandom(1 << 20),) for _ in range(megabytes)]
    )
    return db


def test_backup_list_verify_restore_over_sftp(sshd: SshServer, tmp_path: Path) -> None:
    remote = tmp_path / "remote" / "backups"
    db = _sqlite_db(tmp_path / "app.db", 1)
    storage = autoops.SftpStorage(sshd.address, str(remote), options=_options(sshd))
    backuper = autoops.Backuper(storage)
    backup = backuper.backup_sqlite(db)
    assert [b.id for b in backuper.list()] == [backup.id]
    assert backuper.verify(backup, restore_test=True).status == "ok"
    backuper.restore_sqlite(backup, tmp_path / "restored.db")
    restored = autoops.SQLiteClient(tmp_path / "restored.db")
    assert restored.query("SELECT COUNT(*) AS n FROM blobs") == [{"n": 1}]
    assert stat.S_IMODE(remote.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in remote.iterdir())
    storage.close()
    restored.close()
    db.close()


def test_dropped_connection_mid_upload_leaves_no_complete_looking_backup(
    sshd: SshServer, tcp_proxy: Callable[[str, int], TcpProxy], tmp_path: Path
) -> None:
    proxy = tcp_proxy("127.0.0.1", sshd.port)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        sshd.host_key_line.replace(f":{sshd.port} ", f":{proxy.port} ", 1) + "\n"
    )
    remote = tmp_path / "remote"
    db = _sqlite_db(tmp_path / "app.db", 24)
    storage = autoops.SftpStorage(
        f"{sshd.user}@127.0.0.1:{proxy.port}", str(remote), options=_options(sshd, known_hosts)
    )
    backuper = autoops.Backuper(storage)

    def cut_when_uploading() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if remote.exists() and any(
                p.name.endswith(".partial") and p.stat().st_size > (1 << 20)
                for p in remote.iterdir()
            ):
                proxy.drop_all()
                return
            time.sleep(0.005)

    cutter = threading.Thread(target=cut_when_uploading)
    cutter.start()
    with pytest.raises(autoops.AutoOpsError, match="SFTP connection"):
        backuper.backup_sqlite(db)
    cutter.join()
    names = sorted(p.name for p in remote.iterdir())
    assert not any(name.endswith(".manifest.json") for name in names)
    assert all(name.endswith(".partial") for name in names)
    # The next run (through a working connection) cleans the stale partial up.
    backup = backuper.backup_sqlite(_sqlite_db(tmp_path / "small.db", 0))
    assert sorted(p.name for p in remote.iterdir()) == sorted(
        [backup.data_file, backup.manifest_file]
    )
    storage.close()
    db.close()


def test_sftp_storage_refuses_an_unknown_host_key(sshd: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    storage = autoops.SftpStorage(sshd.address, str(tmp_path / "r"), options=_options(sshd, empty))
    with pytest.raises(autoops.AuthenticationError, match="not in"):
        storage.names()


def test_sftp_storage_reclaims_only_its_own_dead_partials(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_backup_catalogue import check_partial_reclaim

    remote = tmp_path / "remote"
    storage = autoops.SftpStorage(sshd.address, str(remote), options=_options(sshd))
    storage.names()  # creates the directory
    check_partial_reclaim(storage, lambda name: (remote / name).write_text("x"), monkeypatch)
    storage.close()


def test_a_reader_of_a_missing_sftp_catalogue_gets_an_error_not_a_new_directory(
    sshd: SshServer, tmp_path: Path
) -> None:
    typo = tmp_path / "bakcups"
    storage = autoops.SftpStorage(sshd.address, str(typo), options=_options(sshd), create=False)
    with pytest.raises(autoops.ConfigError, match="no backup catalogue"):
        autoops.Backuper(storage).list()
    assert not typo.exists()
    storage.close()


def test_the_remote_checksum_is_computed_on_the_host_for_an_awkward_path(
    sshd: SshServer, tmp_path: Path
) -> None:
    import hashlib

    remote = tmp_path / "it's a dir"
    remote.mkdir()
    payload = os.urandom(3 << 20)
    (remote / "a b.bin").write_bytes(payload)
    storage = autoops.SftpStorage(sshd.address, str(remote), options=_options(sshd))
    try:
        digest = storage.remote_checksum(str(remote / "a b.bin"))
        assert digest == hashlib.sha256(payload).hexdigest()
        assert storage._hashes_remotely is True
    finally:
        storage.close()
