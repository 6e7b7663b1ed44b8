"""SQLite backups: the online backup API, restored whole, checked by integrity_check."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

import autoops
from autoops.backup import BackupVerifyError, RestoreRefusedError


def _make_db(path: Path) -> autoops.SQLiteClient:
    db = autoops.SQLiteClient(path)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, data BLOB)")
    db.executemany(
        "INSERT INTO notes (body, data) VALUES (%s, %s)",
        [("emoji 😀", b"\x00\xff"), ("plain", None)],
    )
    return db


def test_round_trip_of_a_database_in_use(tmp_path: Path) -> None:
    db = _make_db(tmp_path / "app.db")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    backup = backuper.backup_sqlite(db)
    assert backup.source == f"sqlite:///{tmp_path / 'app.db'}"
    assert backup.tables["notes"].rows == 2
    backuper.restore_sqlite(backup, tmp_path / "restored.db")
    restored = sqlite3.connect(tmp_path / "restored.db")
    assert restored.execute("SELECT body, data FROM notes ORDER BY id").fetchall() == [
        ("emoji 😀", b"\x00\xff"),
        ("plain", None),
    ]
    restored.close()
    db.close()


def test_restore_refuses_a_database_with_tables_unless_replace(tmp_path: Path) -> None:
    db = _make_db(tmp_path / "app.db")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    backup = backuper.backup_sqlite(db)
    db.execute("DELETE FROM notes")
    with pytest.raises(RestoreRefusedError):
        backuper.restore_sqlite(backup, db)
    backuper.restore_sqlite(backup, db, replace=True)
    assert db.query("SELECT COUNT(*) AS n FROM notes") == [{"n": 2}]
    db.close()


def test_verify_with_test_restore_checks_integrity_and_row_counts(tmp_path: Path) -> None:
    db = _make_db(tmp_path / "app.db")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"), compression="gzip")
    backup = backuper.backup_sqlite(db)
    assert backuper.verify(backup, restore_test=True).status == "ok"
    db.close()


def test_truncated_backup_fails_verify(tmp_path: Path) -> None:
    db = _make_db(tmp_path / "app.db")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    backup = backuper.backup_sqlite(db)
    data = tmp_path / "store" / backup.data_file
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(BackupVerifyError, match="bytes; the manifest says"):
        backuper.verify(backup)
    db.close()


def test_a_restored_database_file_is_private(tmp_path: Path) -> None:
    db = _make_db(tmp_path / "app.db")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    backup = backuper.backup_sqlite(db)
    target = tmp_path / "restored.db"
    backuper.restore_sqlite(backup, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    db.close()


def test_an_empty_backup_id_is_refused_even_with_one_backup(tmp_path: Path) -> None:
    db = _make_db(tmp_path / "app.db")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    backuper.backup_sqlite(db)
    for empty in ("", "  "):
        with pytest.raises(autoops.ConfigError, match="empty backup id"):
            backuper.get(empty)
    db.close()


def test_from_settings_builds_what_autoops_backup_builds(tmp_path: Path) -> None:
    store = tmp_path / "store"
    source = tmp_path / "app.db"
    sqlite3.connect(source).close()
    config = tmp_path / "autoops.toml"
    config.write_text(
        f'[backup]\nstorage = "{store}"\ncompression = "gzip"\nkeep_last = 2\n',
        encoding="utf-8",
    )
    backuper = autoops.Backuper.from_settings(autoops.load_settings(config))
    try:
        for _ in range(3):
            backuper.verify(backuper.backup_sqlite(str(source)))
        plan = backuper.prune()
        assert backuper.compression == "gzip"
        assert (len(plan.keep), len(plan.remove)) == (2, 1)
    finally:
        backuper.storage.close()


def test_from_settings_lets_keyword_arguments_win(tmp_path: Path) -> None:
    config = tmp_path / "autoops.toml"
    config.write_text(f'[backup]\nstorage = "{tmp_path / "a"}"\n', encoding="utf-8")
    backuper = autoops.Backuper.from_settings(
        autoops.load_settings(config), storage=str(tmp_path / "b"), compression=None
    )
    assert backuper.storage.location == str(tmp_path / "b")
    assert backuper.compression == "zstd"
