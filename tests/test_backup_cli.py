"""The backup commands as cron runs them: quiet on success, one line and exit 1 on failure."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTOOPS_PROGRESS": "0"}
    env.pop("AUTOOPS_CONFIG", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (x)")
    connection.execute("INSERT INTO t VALUES (1)")
    connection.commit()
    connection.close()
    return path


def test_nightly_backup_with_retention_is_silent_and_writes_metrics(
    app_db: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    metrics = tmp_path / "backup.prom"
    for _ in range(3):
        result = _run(
            "autoops-backup", "sqlite", "--url", f"sqlite:///{app_db}", "--storage", str(store),
            "--keep-last", "2", "--metrics-file", str(metrics), "--verify-restore", "local",
        )  # fmt: skip
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    listing = _run("autoops-backups", "list", "--storage", str(store))
    assert listing.returncode == 0
    assert len(listing.stdout.splitlines()) == 2
    text = metrics.read_text()
    assert "autoops_backup_last_success_timestamp_seconds{" in text
    assert "autoops_backup_last_run_success{" in text
    assert "} 1.0" in text


def test_restore_command_restores_by_id_prefix(app_db: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert (
        _run("autoops-backup", "sqlite", "--url", str(app_db), "--storage", str(store)).returncode
        == 0
    )
    backup_id = _run("autoops-backups", "list", "--storage", str(store)).stdout.split()[0]
    target = tmp_path / "restored.db"
    result = _run("autoops-restore", backup_id[:-3], "--url", str(target), "--storage", str(store))
    assert result.returncode == 0, result.stderr
    assert sqlite3.connect(target).execute("SELECT x FROM t").fetchall() == [(1,)]


def test_a_failed_backup_exits_1_with_one_clear_line(tmp_path: Path) -> None:
    result = _run(
        "autoops-backup", "sqlite", "--url", str(tmp_path / "missing.db"), "--storage",
        str(tmp_path / "store"),
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("autoops-backup: error:")
    assert "missing.db" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_storage_is_a_usage_error(app_db: Path) -> None:
    result = _run("autoops-backup", "sqlite", "--url", str(app_db))
    assert result.returncode == 2
    assert "--storage" in result.stderr


def test_prune_dry_run_prints_the_plan_and_removes_nothing(app_db: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    for _ in range(2):
        _run("autoops-backup", "sqlite", "--url", str(app_db), "--storage", str(store))
    result = _run(
        "autoops-backups", "prune", "--storage", str(store), "--keep-last", "1", "--dry-run"
    )
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["keep", "remove"]
    assert "last" in lines[0]
    assert len(_run("autoops-backups", "list", "--storage", str(store)).stdout.splitlines()) == 2


def test_verify_command_fails_on_a_corrupted_backup(app_db: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    _run("autoops-backup", "sqlite", "--url", str(app_db), "--storage", str(store))
    data = next(p for p in store.iterdir() if p.name.endswith(".zst"))
    data.write_bytes(b"x" + data.read_bytes()[1:])
    result = _run("autoops-backups", "verify", "--storage", str(store))
    assert result.returncode == 1
    assert result.stdout.startswith("FAILED")


def test_list_and_prune_read_past_a_malformed_manifest(app_db: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    for _ in range(2):
        _run("autoops-backup", "sqlite", "--url", str(app_db), "--storage", str(store))
    manifest = json.loads(next(store.glob("*.manifest.json")).read_text())
    manifest.update(id="broken", data_file="broken.sqlite.zst", tables=[1, 2])
    (store / "broken.manifest.json").write_text(json.dumps(manifest))
    listing = _run("autoops-backups", "list", "--storage", str(store))
    assert listing.returncode == 0, listing.stderr
    assert len(listing.stdout.splitlines()) == 2
    assert "broken.manifest.json" in listing.stderr
    assert "Traceback" not in listing.stderr
    pruned = _run("autoops-backups", "prune", "--storage", str(store), "--keep-last", "1")
    assert pruned.returncode == 0, pruned.stderr
    assert len(_run("autoops-backups", "list", "--storage", str(store)).stdout.splitlines()) == 1
    assert (store / "broken.manifest.json").exists()


def test_restore_refuses_an_empty_backup_id(app_db: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    _run("autoops-backup", "sqlite", "--url", str(app_db), "--storage", str(store))
    result = _run("autoops-restore", "", "--url", str(tmp_path / "r.db"), "--storage", str(store))
    assert result.returncode == 2
    assert "empty backup id" in result.stderr
    assert not (tmp_path / "r.db").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["autoops-backups", "list"],
        ["autoops-backups", "verify"],
        ["autoops-backups", "prune", "--keep-last", "1"],
        ["autoops-restore", "sqlite-x", "--url", "/nowhere.db"],
    ],
    ids=["list", "verify", "prune", "restore"],
)
def test_read_only_commands_refuse_a_storage_that_does_not_exist(
    command: list[str], tmp_path: Path
) -> None:
    typo = tmp_path / "bakcups"
    result = _run(*command, "--storage", str(typo))
    assert result.returncode == 2, result.stderr
    assert str(typo) in result.stderr
    assert "Traceback" not in result.stderr
    assert not typo.exists()
