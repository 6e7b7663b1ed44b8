"""examples/db_to_cache.py, run as users run it: the embedded demo, real servers, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import redis

from _support.services import redis_test_url

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "db_to_cache.py"


def run_example(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOOPS_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_with_no_configuration_it_runs_the_embedded_demo_and_says_so(tmp_path: Path) -> None:
    result = run_example(tmp_path, clean_env(), "--passes", "2", "--interval", "0")
    assert result.returncode == 0, result.stderr
    assert "demo on SQLite autoops-demo.db + memory cache" in result.stderr
    # A 1,000-row table: 1,000 rows read, each once; the quiet pass after it reads none.
    assert "sync users: full pass, 1,000 rows read, 1,000 keys written" in result.stderr
    assert "sync users: incremental pass, 0 rows read, 0 keys written" in result.stderr
    assert "password" not in result.stderr.split("user:1 is", 1)[1]
    assert (tmp_path / "autoops-demo.db").exists()


def test_against_mysql_and_redis_it_caches_rows_without_passwords(
    tmp_path: Path,
    mysql_db: object,
    mysql_url: str,
    redis_raw: redis.Redis,
    redis_namespace: str,
) -> None:
    import autoops

    assert isinstance(mysql_db, autoops.DbClient)
    mysql_db.execute(
        "CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64), email VARCHAR(128),"
        " password_hash CHAR(60), updated_at TIMESTAMP(6))"
    )
    mysql_db.executemany(
        "INSERT INTO users VALUES (%s, %s, %s, %s, %s)",
        [
            (i, f"u{i}", f"u{i}@example.com", "$2b$" + "h" * 56, "2026-02-03 04:05:06.000007")
            for i in range(1, 301)
        ],
    )
    namespace = redis_namespace  # keys of this test's own, removed by the fixture
    env = clean_env() | {"AUTOOPS_DB_URL": mysql_url, "AUTOOPS_CACHE_URL": redis_test_url()}
    result = run_example(
        tmp_path, env, "--passes", "1", "--batch-size", "64", "--namespace", namespace
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(redis_raw.get(f"{namespace}:user:300") or b"null") == {
        "id": 300,
        "username": "u300",
        "email": "u300@example.com",
        "updated_at": "2026-02-03T04:05:06.000007",
    }
    assert len(list(redis_raw.scan_iter(f"{namespace}:user:*"))) == 300


def test_sigterm_stops_a_long_running_worker_cleanly(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--interval", "0.2"],
        cwd=tmp_path,
        env=clean_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen: list[str] = []
    # Signal once it is working (a pass done), not after a fixed sleep a loaded machine outlasts.
    while not any("pass" in line for line in seen[1:]):
        line = process.stderr.readline()
        assert line, "".join(seen)
        seen.append(line)
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=30)
    stderr = "".join(seen) + rest
    assert process.returncode == 0, stderr
    assert "stopped after" in stderr
