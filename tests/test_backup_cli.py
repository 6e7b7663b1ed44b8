"""The backup commands as cron runs them: quiet on success, one line and exit 1 on failure."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

import autoops
from _support.services import promtool_accepts, redis_server, run_script
from _support.sshd import free_port

ROOT = Path(__file__).resolve().parents[1]


def _run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_script(name, *args, timeout=60)


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


def test_the_textfile_of_a_successful_run_passes_promtool(app_db: Path, tmp_path: Path) -> None:
    metrics = tmp_path / "backup.prom"
    for _ in range(2):
        result = _run(
            "autoops-backup", "sqlite", "--url", str(app_db), "--storage", str(tmp_path / "store"),
            "--metrics-file", str(metrics),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    promtool_accepts(metrics.read_text())
    assert "autoops_backup_complete_backups{" in metrics.read_text()
    assert "} 2.0" in metrics.read_text()


def test_the_textfile_of_a_failed_run_passes_promtool(mysql_url: str, tmp_path: Path) -> None:
    metrics = tmp_path / "backup.prom"
    refused = f"mysql://root@127.0.0.1:{free_port()}/"
    result = _run(
        "autoops-backup", "mysql", "--url", mysql_url, "--storage", str(tmp_path / "store"),
        "--verify-restore", refused, "--metrics-file", str(metrics),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    promtool_accepts(metrics.read_text())
    assert "autoops_backup_last_run_success{" in metrics.read_text()
    assert "} 0.0" in metrics.read_text()


@pytest.mark.parametrize("target", ["/proc/x.prom", "/nonexistent-dir/x.prom"])
def test_a_metrics_file_that_cannot_be_written_does_not_undo_a_stored_backup(
    target: str, app_db: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    result = _run(
        "autoops-backup", "sqlite", "--url", str(app_db), "--storage", str(store),
        "--metrics-file", target,
    )  # fmt: skip
    assert result.returncode == 3
    assert result.stderr.startswith("autoops-backup: warning: backup ")
    assert "stored" in result.stderr
    assert target in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    listing = _run("autoops-backups", "list", "--storage", str(store))
    assert len(listing.stdout.splitlines()) == 1


BAD_BACKUP_SETTINGS = {
    "keep-daily-a-word": ('keep_daily = "seven"', "keep_daily"),
    "keep-last-negative": ("keep_last = -1", "keep_last"),
    "keep-weekly-a-fraction": ("keep_weekly = 1.5", "keep_weekly"),
    "keep-monthly-a-bool": ("keep_monthly = true", "keep_monthly"),
    "keep-within-a-number": ("keep_within = 7", "keep_within"),
    "compression-unknown": ('compression = "bzip2"', "compression"),
    "compression-a-number": ("compression = 3", "compression"),
    "key-filename-a-list": ('key_filename = ["a"]', "key_filename"),
}


@pytest.mark.parametrize(
    ("line", "key"), list(BAD_BACKUP_SETTINGS.values()), ids=list(BAD_BACKUP_SETTINGS)
)
def test_a_bad_value_in_the_backup_settings_is_a_one_line_config_error(
    line: str, key: str, app_db: Path, tmp_path: Path
) -> None:
    settings = tmp_path / "autoops.toml"
    store = tmp_path / "store"
    settings.write_text(f'[backup]\nstorage = "{store}"\n{line}\n')
    result = _run("autoops-backup", "sqlite", "--url", str(app_db), "--config", str(settings))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("autoops-backup: configuration error:")
    assert key in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert not store.exists() or not list(store.iterdir())


def test_a_bad_storage_setting_is_a_config_error(app_db: Path, tmp_path: Path) -> None:
    settings = tmp_path / "autoops.toml"
    settings.write_text("[backup]\nstorage = 5\n")
    result = _run("autoops-backups", "list", "--config", str(settings))
    assert result.returncode == 2, result.stderr
    assert "storage" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_the_backup_commands_help_documents_the_metrics_exit_status() -> None:
    result = _run("autoops-backup", "--help")
    assert "3 the backup is stored but the metrics file" in " ".join(result.stdout.split())


def test_restore_logs_the_target_without_a_password_given_as_a_query_parameter(
    cache: autoops.CacheClient, tmp_path: Path
) -> None:
    cache.set("k", "v")
    store = tmp_path / "store"
    backup = autoops.Backuper(autoops.LocalStorage(store)).backup_redis(cache, mode="logical")
    with redis_server(tmp_path, "--requirepass", "s3cret-q") as port:
        result = _run(
            "autoops-restore", backup.id, "--url", f"redis://127.0.0.1:{port}/0?password=s3cret-q",
            "--storage", str(store), "-v",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "restored" in result.stderr
    assert f"127.0.0.1:{port}/0" in result.stderr
    assert "s3cret-q" not in result.stderr


def test_a_renamed_setting_is_one_warning_line_in_the_commands_voice(
    app_db: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    assert (
        _run("autoops-backup", "sqlite", "--url", str(app_db), "--storage", str(store)).returncode
        == 0
    )
    config = tmp_path / "autoops.toml"
    config.write_text(f'[backup]\nstorage = "{store}"\nssh_key = "{tmp_path / "key"}"\n')

    listing = _run("autoops-backups", "list", "--config", str(config))

    assert listing.returncode == 0
    assert listing.stderr == (
        "autoops-backups: warning: [backup]: the setting ssh_key is now called key_filename; "
        "rename it (the old name will stop working in a future release)\n"
    )
    assert len(listing.stdout.splitlines()) == 1
