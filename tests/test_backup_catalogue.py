"""The catalogue: a backup exists once its manifest is written, and only then."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

import autoops
from autoops.backup import TableStats


def _backup(
    backup_id: str, started: datetime, source: str = "mysql://db:3306/app"
) -> autoops.Backup:
    return autoops.Backup(
        id=backup_id,
        kind="mysql",
        source=source,
        started_at=started,
        finished_at=started,
        status="ok",
        size=3,
        sha256="0" * 64,
        data_file=backup_id + ".sql.zst",
        format="sql",
        compression="zstd",
        raw_size=3,
        verified_at=started,
        tables={"t": TableStats(rows=2, checksum=123)},
    )


def test_manifest_round_trips_through_json() -> None:
    original = _backup("b1", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert autoops.Backup.from_json(original.to_json(), "b1") == original


def test_list_reads_manifests_oldest_first_and_filters_by_source(tmp_path: Path) -> None:
    storage = autoops.LocalStorage(tmp_path)
    newer = _backup("b2", datetime(2026, 1, 2, tzinfo=UTC))
    older = _backup("b1", datetime(2026, 1, 1, tzinfo=UTC))
    other = _backup("b3", datetime(2026, 1, 3, tzinfo=UTC), source="sqlite:///x.db")
    for backup in (newer, older, other):
        storage.write_bytes(backup.manifest_file, backup.to_json())
    backuper = autoops.Backuper(storage)
    assert [b.id for b in backuper.list()] == ["b1", "b2", "b3"]
    assert [b.id for b in backuper.list(source="mysql://db:3306/app")] == ["b1", "b2"]
    assert all(b.started_at.tzinfo is not None for b in backuper.list())


def test_a_data_file_without_manifest_is_not_a_backup(tmp_path: Path) -> None:
    storage = autoops.LocalStorage(tmp_path)
    storage.write_bytes("orphan.sql.zst", b"data")
    assert autoops.Backuper(storage).list() == []


def test_local_storage_creates_private_directory_and_files(tmp_path: Path) -> None:
    storage = autoops.LocalStorage(tmp_path / "store")
    storage.write_bytes("x", b"secret data")
    assert stat.S_IMODE(os.stat(tmp_path / "store").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "store" / "x").st_mode) == 0o600


def test_an_aborted_upload_leaves_nothing(tmp_path: Path) -> None:
    storage = autoops.LocalStorage(tmp_path)
    upload = storage.create("x")
    upload.write(b"half")
    upload.abort()
    assert storage.names() == []


def test_a_malformed_manifest_is_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = autoops.LocalStorage(tmp_path)
    storage.write_bytes("bad.manifest.json", b"{not json")
    assert autoops.Backuper(storage).list() == []
    assert "bad.manifest.json" in caplog.text
