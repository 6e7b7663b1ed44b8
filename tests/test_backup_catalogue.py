"""The catalogue: a backup exists once its manifest is written, and only then."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import autoops
from autoops.backup import BackupError, TableStats
from autoops.backup._model import files_digest


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


def _good_document(backup_id: str) -> dict[str, object]:
    document: dict[str, object] = json.loads(
        _backup(backup_id, datetime(2026, 1, 1, tzinfo=UTC)).to_json()
    )
    return document


MALFORMED = {
    "tables-a-list": {"tables": [1, 2]},
    "table-stats-not-an-object": {"tables": {"t": 5}},
    "rows-a-string": {"tables": {"t": {"rows": "many", "checksum": None}}},
    "size-a-string": {"size": "12"},
    "size-a-bool": {"size": True},
    "size-negative": {"size": -1},
    "id-missing": {"id": None},
    "started-not-a-time": {"started_at": "yesterday"},
    "warnings-a-string": {"warnings": "disk almost full"},
    "position-a-list": {"position": ["mysql-bin.000001", 4]},
    "options-a-list": {"options": [1]},
    "key-count-a-float": {"key_count": 1.5},
    "data-file-outside": {"data_file": "../etc/passwd"},
    "data-file-of-another-backup": {"data_file": "good.sql.zst"},
    "sha256-not-hex": {"sha256": "x" * 64},
    "status-unknown": {"status": "half-done"},
    "kind-unknown": {"kind": "postgres"},
}


@pytest.mark.parametrize("change", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_manifest_with_wrong_types_is_refused_naming_the_file(change: dict[str, object]) -> None:
    document = {**_good_document("bad"), **change}
    if change.get("id", "") is None:
        del document["id"]
    with pytest.raises(BackupError, match=r"bad\.manifest\.json"):
        autoops.Backup.from_json(json.dumps(document).encode(), "bad.manifest.json")


@pytest.fixture
def store_with_one_bad_manifest(tmp_path: Path) -> Path:
    """Two good backups of one source with their data, and a bad manifest whose data is there."""
    storage = autoops.LocalStorage(tmp_path)
    for day, backup_id in ((1, "good-old"), (2, "good")):
        backup = _backup(backup_id, datetime(2026, 1, day, tzinfo=UTC))
        storage.write_bytes(backup.data_file, b"abc")
        storage.write_bytes(backup.manifest_file, backup.to_json())
    storage.write_bytes("broken.sql.zst", b"data nobody can account for")
    bad = {**_good_document("broken"), "tables": [1, 2]}
    storage.write_bytes("broken.manifest.json", json.dumps(bad).encode())
    storage.write_bytes("worse.manifest.json", b"\xff{not json")
    return tmp_path


def test_list_skips_a_malformed_manifest_with_a_warning_naming_it(
    store_with_one_bad_manifest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backuper = autoops.Backuper(autoops.LocalStorage(store_with_one_bad_manifest))
    assert [b.id for b in backuper.list()] == ["good-old", "good"]
    assert "broken.manifest.json" in caplog.text
    assert "worse.manifest.json" in caplog.text


def test_a_manifest_that_names_another_id_is_skipped(tmp_path: Path) -> None:
    storage = autoops.LocalStorage(tmp_path)
    backup = _backup("b1", datetime(2026, 1, 1, tzinfo=UTC))
    storage.write_bytes("copy-of-b1.manifest.json", backup.to_json())
    assert autoops.Backuper(storage).list() == []


def test_prune_leaves_what_it_cannot_account_for(store_with_one_bad_manifest: Path) -> None:
    backuper = autoops.Backuper(autoops.LocalStorage(store_with_one_bad_manifest))
    plan = backuper.prune(autoops.RetentionPolicy(keep_last=1))
    assert [b.id for b in plan.remove] == ["good-old"]
    assert sorted(backuper.storage.names()) == [
        "broken.manifest.json",
        "broken.sql.zst",
        "good.manifest.json",
        "good.sql.zst",
        "worse.manifest.json",
    ]


def test_the_freshness_check_reads_past_a_malformed_manifest(
    store_with_one_bad_manifest: Path,
) -> None:
    backuper = autoops.Backuper(autoops.LocalStorage(store_with_one_bad_manifest))
    result = autoops.BackupFreshnessCheck(
        "backups", backuper, clock=lambda: datetime(2026, 1, 2, 1, tzinfo=UTC)
    ).run()
    assert result.status == autoops.CheckStatus.OK, result.summary


def dead_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def check_partial_reclaim(
    storage: autoops.Storage, put: Callable[[str], object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only autoops's own partials of dead writers on this host go; the host name has dots."""
    monkeypatch.setattr(socket, "gethostname", lambda: "web1.example.com")
    dead, alive = dead_pid(), os.getppid()
    stale = f"mysql-x.sql.zst.web1.example.com.{dead}.partial"
    kept = [
        "notes.partial",
        "report.2024.partial",
        f"notes.{dead}.partial",
        f"mysql-x.sql.zst.web2.example.com.{dead}.partial",
        f"mysql-y.sql.zst.web1.example.com.{alive}.partial",
        f"mysql-z.sql.zst.example.com.{dead}.partial",
    ]
    for name in [stale, *kept]:
        put(name)
    assert storage.clean_partials() == [stale]
    assert sorted(storage.names()) == sorted(kept)


def test_local_storage_reclaims_only_its_own_dead_partials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_partial_reclaim(
        autoops.LocalStorage(tmp_path), lambda name: (tmp_path / name).write_text("x"), monkeypatch
    )


def _files_document(backup_id: str) -> dict[str, object]:
    """A manifest of a backup of two files, as the Backuper writes it."""
    files = tuple(
        autoops.DataFile(
            f"{backup_id}.master-{n}.rdb.zst", 10 * n, f"{n}" * 64, 20 * n, f"10.0.0.{n}:7000",
            ((0, 8191),) if n == 1 else ((8192, 16383),), n,
        )
        for n in (1, 2)
    )  # fmt: skip
    backup = autoops.Backup(
        id=backup_id,
        kind="redis",
        source="redis+cluster://10.0.0.1:7000",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        finished_at=datetime(2026, 1, 1, tzinfo=UTC),
        status="ok",
        size=30,
        sha256=files_digest(files),
        data_file="",
        format="rdb",
        compression="zstd",
        raw_size=60,
        key_count=3,
        files=files,
    )
    document: dict[str, object] = json.loads(backup.to_json())
    return document


def test_a_manifest_of_several_files_round_trips_as_version_2() -> None:
    document = _files_document("c1")
    assert document["manifest_version"] == 2
    backup = autoops.Backup.from_json(json.dumps(document).encode(), "c1.manifest.json")
    assert [f.node for f in backup.files] == ["10.0.0.1:7000", "10.0.0.2:7000"]
    assert backup.files[1].slots == ((8192, 16383),)
    assert backup.data_files == backup.files
    assert json.loads(backup.to_json()) == document
    single = _backup("b1", datetime(2026, 1, 1, tzinfo=UTC))
    assert json.loads(single.to_json())["manifest_version"] == 1
    assert single.data_files == (autoops.DataFile("b1.sql.zst", 3, "0" * 64, 3),)


def _file_change(index: int, **change: object) -> Callable[[dict[str, Any]], None]:
    def apply(document: dict[str, Any]) -> None:
        document["files"][index].update(change)

    return apply


MALFORMED_FILES: dict[str, Callable[[dict[str, Any]], None]] = {
    "file-outside": _file_change(0, name="../c2.master-1.rdb.zst"),
    "file-of-another-backup": _file_change(1, name="other.master-2.rdb.zst"),
    "file-twice": _file_change(1, name="c2.master-1.rdb.zst"),
    "file-size-a-string": _file_change(0, size="10"),
    "file-sha256-short": _file_change(0, sha256="ab"),
    "file-slots-not-pairs": _file_change(0, slots=[[0, 1, 2]]),
    "files-empty": lambda document: document.update(files=[]),
    "files-a-dict": lambda document: document.update(files={}),
    "size-not-the-total": lambda document: document.update(size=31),
    "sha256-not-of-the-files": _file_change(0, sha256="f" * 64),
    "data-file-beside-files": lambda document: document.update(data_file="c2.rdb.zst"),
    "version-3": lambda document: document.update(manifest_version=3),
}


@pytest.mark.parametrize("change", list(MALFORMED_FILES.values()), ids=list(MALFORMED_FILES))
def test_a_manifest_of_several_files_is_checked_naming_the_manifest(
    change: Callable[[dict[str, Any]], None],
) -> None:
    document = _files_document("c2")
    change(document)
    with pytest.raises(BackupError, match=r"c2\.manifest\.json"):
        autoops.Backup.from_json(json.dumps(document).encode(), "c2.manifest.json")
