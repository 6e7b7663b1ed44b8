"""A full disk, for real: a 1 MiB tmpfs. Backups and restores fail with one clear error and leave
nothing half-written behind."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import autoops
from _support.services import REDIS_URL, require_tcp
from autoops.backup import BackupError

ROOT = Path(__file__).resolve().parents[1]


def fill(directory: Path) -> None:
    """Take every free byte of the filesystem holding ``directory``."""
    free = os.statvfs(directory)
    with (directory / "filler").open("wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, free.f_bavail * free.f_frsize)
    assert os.statvfs(directory).f_bavail == 0


def big_sqlite(path: Path) -> autoops.SQLiteClient:
    """A database of 3 MiB that does not compress, so its backup cannot fit in 1 MiB."""
    db = autoops.SQLiteClient(path)
    db.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
    db.executemany("INSERT INTO blobs (data) VALUES (%s)", [(os.urandom(1 << 20),) for _ in "abc"])
    return db


def test_a_backup_onto_a_full_disk_fails_clearly_and_leaves_nothing(
    small_disk: Path, tmp_path: Path
) -> None:
    db = big_sqlite(tmp_path / "app.db")
    backuper = autoops.Backuper(autoops.LocalStorage(small_disk / "store"))
    with pytest.raises(BackupError, match=f"no space left on {small_disk}/store: needed about"):
        backuper.backup_sqlite(db)
    assert backuper.storage.names() == []
    assert backuper.list() == []
    db.close()


def test_the_backup_command_on_a_full_disk_exits_1_with_one_line(
    small_disk: Path, tmp_path: Path
) -> None:
    big_sqlite(tmp_path / "app.db").close()
    env = {**os.environ, "AUTOOPS_PROGRESS": "0"}
    env.pop("AUTOOPS_CONFIG", None)
    result = subprocess.run(
        [
            sys.executable, str(ROOT / "scripts" / "autoops-backup"), "sqlite",
            "--url", str(tmp_path / "app.db"), "--storage", str(small_disk / "store"),
        ],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("autoops-backup: error: no space left on")
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert os.listdir(small_disk / "store") == []


def test_an_sqlite_restore_onto_a_full_disk_fails_clearly_and_leaves_no_target(
    small_disk: Path, tmp_path: Path
) -> None:
    db = big_sqlite(tmp_path / "app.db")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    backup = backuper.backup_sqlite(db)
    target = small_disk / "restored.db"
    with pytest.raises(BackupError, match=f"no space left on {small_disk}"):
        backuper.restore_sqlite(backup, target)
    assert os.listdir(small_disk) == []
    db.close()


def test_an_rdb_restore_onto_a_full_disk_fails_clearly_and_leaves_no_partial(
    small_disk: Path, tmp_path: Path
) -> None:
    require_tcp("Redis", REDIS_URL)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    backup = backuper.backup_redis(REDIS_URL, mode="rdb")
    fill(small_disk)
    target = small_disk / f"dump-{uuid.uuid4().hex[:6]}.rdb"
    with pytest.raises(BackupError, match=f"no space left on {small_disk}: needed about"):
        backuper.restore_redis(backup, target)
    assert os.listdir(small_disk) == ["filler"]
