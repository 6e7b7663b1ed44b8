"""The commands on Redis Sentinel and Redis Cluster URLs, run as cron runs them: autoops-sync
into each, and autoops-check of both (a real process each time, real servers)."""

from __future__ import annotations

from pathlib import Path

import pytest

import autoops
from _support.redis_topologies import RedisClusterTopology, SentinelTopology
from _support.services import promtool_accepts, run_script
from _support.sync_tables import cached_rows, create_users, expected_cache

SYNC_ARGS = ["--table", "usérs", "--key", "usérs:{id}", "--exclude", "password_hash"]


@pytest.fixture
def users_db(mysql_db: autoops.DbClient) -> autoops.DbClient:
    create_users(mysql_db, 1200)
    mysql_db.execute("RENAME TABLE users TO `usérs`")
    return mysql_db


@pytest.mark.parametrize("kind", ["sentinel", "cluster"])
def test_the_sync_command_syncs_into_sentinel_and_cluster_urls(
    kind: str,
    users_db: autoops.DbClient,
    mysql_url: str,
    redis_sentinel_topology: SentinelTopology,
    redis_cluster_topology: RedisClusterTopology,
    request: pytest.FixtureRequest,
) -> None:
    cache: autoops.CacheClient = request.getfixturevalue(kind)
    url = redis_sentinel_topology.url() if kind == "sentinel" else redis_cluster_topology.url()
    assert cache.namespace
    arguments = [
        "--once", *SYNC_ARGS, "--updated-column", "updated_at", "--batch-size", "200",
        "--namespace", cache.namespace,
    ]  # fmt: skip
    env = {"AUTOOPS_DB_URL": mysql_url, "AUTOOPS_CACHE_URL": url}
    first = run_script("autoops-sync", *arguments, env=env)
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")
    users_db.execute("UPDATE `usérs` SET username = 'changed', updated_at = NOW(6) WHERE id < 100")
    second = run_script("autoops-sync", *arguments, env=env)
    assert second.returncode == 0, second.stderr
    assert cached_rows(cache, "usérs:") == expected_cache(users_db, table="usérs", key="usérs:{id}")


def test_the_check_command_reports_a_cluster_and_a_sentinel_group(
    tmp_path: Path,
    redis_sentinel_topology: SentinelTopology,
    redis_cluster_topology: RedisClusterTopology,
) -> None:
    redis_cluster_topology.wait_healthy()
    redis_sentinel_topology.wait_settled()
    config = tmp_path / "autoops.toml"
    config.write_text(f"""
[monitor]
deadline = 30

[monitor.checks.cache-cluster]
type = "redis"
url = "{redis_cluster_topology.url()}"

[monitor.checks.cache-sentinel]
type = "redis"
url = "{redis_sentinel_topology.url()}"
""")
    result = run_script("autoops-check", "--config", str(config))
    assert result.returncode == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    (cluster_line,) = [line for line in lines if "cache-cluster" in line]
    (sentinel_line,) = [line for line in lines if "cache-sentinel" in line]
    assert "16384 of 16384 slots" in cluster_line
    assert "quorum reachable" in sentinel_line
    textfile = tmp_path / "checks.prom"
    written = run_script("autoops-check", "--config", str(config), "--textfile", str(textfile))
    assert written.returncode == 0, written.stderr
    promtool_accepts(textfile.read_text())
