"""RedisCheck on a Redis Cluster and a Sentinel group (private servers, started once a session)."""

from __future__ import annotations

import time

import autoops
from _support.redis_topologies import RedisClusterTopology, SentinelTopology
from autoops.monitor import CheckStatus, RedisCheck


def _run_until(check: RedisCheck, status: CheckStatus, seconds: float = 30) -> autoops.CheckResult:
    deadline = time.monotonic() + seconds
    while True:
        result = check.run()
        if result.status is status or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


def test_a_healthy_cluster_is_ok_with_every_slot_served(
    redis_cluster_topology: RedisClusterTopology,
) -> None:
    redis_cluster_topology.wait_healthy()
    result = RedisCheck("cluster", redis_cluster_topology.url()).run()
    assert result.status is CheckStatus.OK, result.summary
    assert "16384 of 16384 slots" in result.summary
    assert "cluster_state ok" in result.summary
    assert "3 masters, at least 1 replica(s) each" in result.summary
    assert "'slots_ok'=16384;;16384:;0;16384" in result.nagios_line()


def test_a_cluster_with_a_replica_down_warns_naming_it(
    redis_cluster_topology: RedisClusterTopology,
) -> None:
    redis_cluster_topology.wait_healthy()
    master = redis_cluster_topology.masters()[0]
    (replica,) = redis_cluster_topology.replicas_of(master)
    redis_cluster_topology.kill(replica)
    try:
        result = _run_until(
            RedisCheck("cluster", redis_cluster_topology.url(seeds=6)), CheckStatus.WARNING
        )
    finally:
        redis_cluster_topology.restart(replica)
        redis_cluster_topology.wait_healthy()
    assert result.status is CheckStatus.WARNING, result.summary
    assert f"127.0.0.1:{replica}" in result.summary
    assert "16384 of 16384 slots" in result.summary


def test_a_healthy_sentinel_group_is_ok(redis_sentinel_topology: SentinelTopology) -> None:
    redis_sentinel_topology.wait_settled()
    result = RedisCheck("sentinel", redis_sentinel_topology.url()).run()
    assert result.status is CheckStatus.OK, result.summary
    assert "3 of 3 sentinels answer" in result.summary
    assert "quorum reachable" in result.summary
    assert f"master 127.0.0.1:{redis_sentinel_topology.master_port()}" in result.summary
    assert "2 replica(s)" in result.summary
    assert "role master" in result.summary


def test_sentinel_replicas_are_judged_by_nagios_ranges(
    redis_sentinel_topology: SentinelTopology,
) -> None:
    redis_sentinel_topology.wait_settled()
    check = RedisCheck(
        "sentinel", redis_sentinel_topology.url(), thresholds={"replicas": ("3:", "1:")}
    )
    result = check.run()
    assert result.status is CheckStatus.WARNING, result.summary
    assert "2 replica(s) (warning 3:)" in result.summary


def test_sentinels_without_a_quorum_are_critical(
    redis_sentinel_topology: SentinelTopology,
) -> None:
    redis_sentinel_topology.wait_settled()
    stopped = redis_sentinel_topology.sentinels[1:]
    for sentinel in stopped:
        sentinel.kill()
    try:
        result = _run_until(
            RedisCheck("sentinel", redis_sentinel_topology.url(), timeout=2), CheckStatus.CRITICAL
        )
    finally:
        for sentinel in stopped:
            sentinel.start()
    assert result.status is CheckStatus.CRITICAL, result.summary
    assert "1 of 3 sentinels answer" in result.summary
    assert "no quorum" in result.summary
