"""autoops-sync, run as cron and a wrapper would run it: a real process, real services."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import autoops
from _support.services import promtool_accepts, redis_test_url
from _support.sync_tables import cached_rows, create_users, expected_cache
from autoops.cli.sync import main

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "autoops-sync"
ARGS = ["--table", "users", "--key", "users:{id}", "--exclude", "password_hash"]


def run_sync(
    mysql_url: str, cache: autoops.CacheClient, *args: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AUTOOPS_DB_URL": mysql_url,
        "AUTOOPS_CACHE_URL": redis_test_url(),
    }
    env.pop("AUTOOPS_CONFIG", None)
    command = [sys.executable, str(SCRIPT), *args]
    if cache.namespace and "--namespace" not in args:
        command += ["--namespace", cache.namespace]
    if config is not None:
        command += ["--config", str(config)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def users_db(mysql_db: autoops.DbClient) -> autoops.DbClient:
    create_users(mysql_db, 500)
    return mysql_db


def test_once_under_cron_syncs_and_prints_nothing(
    users_db: autoops.DbClient, cache: autoops.CacheClient, mysql_url: str
) -> None:
    result = run_sync(mysql_url, cache, "--once", *ARGS, "--updated-column", "updated_at")

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert cached_rows(cache) == expected_cache(users_db)


def test_settings_come_from_the_sync_table_of_the_config_file(
    users_db: autoops.DbClient, cache: autoops.CacheClient, mysql_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "autoops.toml"
    config.write_text(
        '[sync]\ntable = "users"\nkey = "users:{id}"\nexclude = ["password_hash"]\n'
        'updated_column = "updated_at"\nbatch_size = 50\n'
    )

    result = run_sync(mysql_url, cache, config=config)

    assert result.returncode == 0, result.stderr
    assert cached_rows(cache) == expected_cache(users_db)


def test_reconcile_only_deletes_keys_of_deleted_rows(
    users_db: autoops.DbClient, cache: autoops.CacheClient, mysql_url: str
) -> None:
    run_sync(mysql_url, cache, *ARGS, "--updated-column", "updated_at")
    users_db.execute("DELETE FROM users WHERE id IN (10, 20)")

    result = run_sync(mysql_url, cache, *ARGS, "--reconcile")

    assert result.returncode == 0, result.stderr
    assert cached_rows(cache) == expected_cache(users_db)


def test_metrics_file_holds_last_success_rows_duration_and_lag(
    users_db: autoops.DbClient, cache: autoops.CacheClient, mysql_url: str, tmp_path: Path
) -> None:
    metrics = tmp_path / "sync.prom"

    result = run_sync(mysql_url, cache, *ARGS, "--metrics-file", str(metrics))

    assert result.returncode == 0, result.stderr
    text = metrics.read_text()
    for name in (
        'autoops_sync_last_success_timestamp_seconds{sync="users"}',
        'autoops_sync_rows_read{sync="users"} 500.0',
        'autoops_sync_duration_seconds{sync="users"}',
        'autoops_sync_lag_seconds{sync="users"}',
        'autoops_sync_last_run_success{sync="users"} 1.0',
    ):
        assert name in text
    promtool_accepts(text)


def test_a_held_lock_exits_75_naming_the_holder(
    users_db: autoops.DbClient, cache: autoops.CacheClient, mysql_url: str
) -> None:
    holder = autoops.CacheSync(users_db, cache, table="users", key="users:{id}")._lock()
    holder.acquire()
    try:
        result = run_sync(mysql_url, cache, *ARGS)
    finally:
        holder.release()

    assert result.returncode == 75
    assert "already running on" in result.stderr
    assert cached_rows(cache) == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--key", "users:{id}"], "no table given"),
        (["--table", "users", "--key", "users:{name}"], "must name the primary key"),
        (["--table", "users%s", "--key", "users:{id}"], "not a usable table or column name"),
        (["--table", "users; drop", "--key", "users:{id}"], "does not exist"),
    ],
)
def test_bad_configuration_exits_2_with_one_clear_line(
    users_db: autoops.DbClient,
    cache: autoops.CacheClient,
    mysql_url: str,
    args: list[str],
    message: str,
) -> None:
    result = run_sync(mysql_url, cache, *args)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_database_exits_1(cache: autoops.CacheClient, tmp_path: Path) -> None:
    config = tmp_path / "autoops.toml"
    config.write_text("[retry]\nattempts = 1\n")

    result = run_sync("mysql://root@127.0.0.1:1/nowhere", cache, *ARGS, config=config)

    assert result.returncode == 1
    assert "cannot reach MySQL" in result.stderr


def test_forever_stops_cleanly_on_sigterm(
    users_db: autoops.DbClient, cache: autoops.CacheClient, mysql_url: str
) -> None:
    assert cache.namespace is not None
    env = {
        **os.environ,
        "AUTOOPS_DB_URL": mysql_url,
        "AUTOOPS_CACHE_URL": redis_test_url(),
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "--forever",
            "--interval",
            "0.2",
            *ARGS,
            "--updated-column",
            "updated_at",
            "--namespace",
            cache.namespace,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while (
        time.monotonic() < deadline and autoops.read_sync_status(cache, "users").last_pass is None
    ):
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)

    assert worker.wait(timeout=30) == 0
    assert cached_rows(cache) == expected_cache(users_db)
    assert autoops.read_sync_status(cache, "users").lock_holder is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--overlap", "nan"], "--overlap must be a finite number >= 0, got nan"),
        (["--overlap=-1"], "--overlap must be a finite number >= 0"),
        (["--lock-ttl", "inf"], "--lock-ttl must be a finite number >= 1, got inf"),
        (["--ttl=-inf"], "--ttl must be a finite number above 0"),
        (["--ttl", "0"], "--ttl must be a finite number above 0"),
        (["--interval", "nan"], "--interval must be a finite number >= 0"),
        (["--batch-size", "0"], "--batch-size must be a finite number >= 1"),
    ],
)
def test_non_finite_or_negative_numbers_are_a_usage_error_in_one_line(
    flags: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AUTOOPS_DB_URL", "mysql://root@127.0.0.1:1/nowhere")
    monkeypatch.setenv("AUTOOPS_CACHE_URL", "redis://127.0.0.1:1/0")
    monkeypatch.delenv("AUTOOPS_CONFIG", raising=False)

    code = main([*ARGS, *flags])

    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("overlap = nan", "[sync] overlap must be a finite number >= 0, got nan"),
        ("lock_ttl = inf", "[sync] lock_ttl must be a finite number >= 1, got inf"),
        ("ttl = -5", "[sync] ttl must be a finite number above 0"),
        ("batch_size = -1", "[sync] batch_size must be a finite number >= 1"),
    ],
)
def test_non_finite_or_negative_numbers_in_the_sync_table_are_a_config_error(
    setting: str, message: str, tmp_path: Path, mysql_url: str, cache: autoops.CacheClient
) -> None:
    config = tmp_path / "autoops.toml"
    config.write_text(f'[sync]\ntable = "users"\nkey = "users:{{id}}"\n{setting}\n')

    result = run_sync(mysql_url, cache, config=config)

    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
