"""RedisCheck on a broken Redis Cluster and a troubled Sentinel group: private servers started by
this module (not the session's topologies, which other tests need healthy)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import autoops
from _support.redis_topologies import (
    RedisClusterTopology,
    SentinelTopology,
    _wait_sentinels_see_replicas,
    redis_cluster,
    redis_sentinel,
)
from _support.services import promtool_accepts
from _support.sshd import free_port
from autoops.monitor import CheckStatus, RedisCheck, write_prometheus
from test_monitor_output import parse_plugin_line

#: A quick node timeout: a killed master is marked FAIL about a second after it goes.
NODE_TIMEOUT_MS = 1000


@pytest.fixture(scope="module")
def bare_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterTopology]:
    """Three masters without replicas, so a killed master's slots stay unserved."""
    with redis_cluster(
        tmp_path_factory.mktemp("bare-cluster"),
        masters=3,
        replicas=0,
        node_timeout_ms=NODE_TIMEOUT_MS,
    ) as topology:
        yield topology


@pytest.fixture(scope="module")
def own_sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    """A master, two replicas and three sentinels of this module's own."""
    with redis_sentinel(tmp_path_factory.mktemp("own-sentinels")) as topology:
        yield topology


def _check(url: str) -> RedisCheck:
    # No replicas on purpose: their warning is not what these tests look at.
    return RedisCheck("cluster", url, timeout=2, thresholds={"replicas_per_master": ("", "")})


def _run_until(
    check: RedisCheck, status: CheckStatus, text: str = "", seconds: float = 20
) -> autoops.CheckResult:
    deadline = time.monotonic() + seconds
    while True:
        result = check.run()
        if (result.status is status and text in result.summary) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def _owner_of_slot_zero(topology: RedisClusterTopology) -> tuple[int, int]:
    """The port of the master serving slot 0 and how many slots it serves."""
    with contextlib.closing(topology.nodes[0].client()) as client:
        ranges = client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
    owner = next(int(master[1]) for start, _, master, *_ in ranges if start == 0)
    served = sum(
        int(end) - int(start) + 1 for start, end, master, *_ in ranges if int(master[1]) == owner
    )
    return owner, served


def test_unassigned_slots_are_critical_with_the_slot_count(
    bare_cluster: RedisClusterTopology,
) -> None:
    bare_cluster.wait_healthy()
    owner, _ = _owner_of_slot_zero(bare_cluster)
    # Every node forgets slots 0-99: no node serves them, and the cluster says so.
    for port in bare_cluster.ports:
        with contextlib.closing(bare_cluster.node(port).client()) as client:
            client.execute_command("CLUSTER DELSLOTSRANGE", 0, 99)  # type: ignore[no-untyped-call]
    try:
        result = _run_until(
            _check(bare_cluster.url(seeds=3)), CheckStatus.CRITICAL, "cluster_state is fail"
        )
    finally:
        with contextlib.closing(bare_cluster.node(owner).client()) as client:
            client.execute_command("CLUSTER ADDSLOTSRANGE", 0, 99)  # type: ignore[no-untyped-call]
        bare_cluster.wait_healthy()
    assert result.status is CheckStatus.CRITICAL, result.summary
    assert "16284 of 16384 slots (100 not assigned to any node) (critical 16384:)" in result.summary
    assert "cluster_state is fail" in result.summary
    assert "not covered" not in result.summary  # redis-py's own refusal
    parsed = parse_plugin_line(result.nagios_line())
    assert parsed["metrics"]["slots_ok"]["value"] == "16284"  # type: ignore[index]
    assert parsed["metrics"]["failing_nodes"]["value"] == "0"  # type: ignore[index]


def test_a_killed_master_is_named_then_critical_with_the_slots_still_served(
    bare_cluster: RedisClusterTopology, tmp_path: Path
) -> None:
    bare_cluster.wait_healthy()
    # The master of slot 0 is the node redis-py's cluster client would PING first.
    victim, lost = _owner_of_slot_zero(bare_cluster)
    seeds = [victim, *(port for port in bare_cluster.ports if port != victim)]
    check = _check("redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in seeds))
    bare_cluster.kill(victim)
    try:
        # Before the node timeout: the node asked has lost its link to the victim only.
        early = check.run()
        # A node counts the slots as unserved a moment before it sets cluster_state to fail.
        late = _run_until(check, CheckStatus.CRITICAL, "cluster_state is fail")
    finally:
        bare_cluster.restart(victim)
        bare_cluster.wait_healthy()
    for result in (early, late):
        assert f"127.0.0.1:{victim} did not answer" in result.summary
        assert "failing nodes: 127.0.0.1:" in result.summary
        assert "Traceback" not in result.summary
        parsed = parse_plugin_line(result.nagios_line())
        assert parsed["metrics"]["failing_nodes"]["value"] == "1"  # type: ignore[index]
    if early.status is CheckStatus.WARNING:  # the usual case: still within the node timeout
        assert f"127.0.0.1:{victim} (master, " in early.summary
        assert "cluster_state ok" in early.summary
        assert "16384 of 16384 slots" in early.summary
    assert late.status is CheckStatus.CRITICAL, late.summary
    assert f"{16384 - lost} of 16384 slots (critical 16384:)" in late.summary
    assert "cluster_state is fail" in late.summary
    assert f"failing nodes: 127.0.0.1:{victim} (master, fail)" in late.summary
    assert f"{lost} slots on failing nodes (warning 0)" in late.summary
    metrics = parse_plugin_line(late.nagios_line())["metrics"]
    assert metrics["slots_ok"]["value"] == str(16384 - lost)  # type: ignore[index]
    assert metrics["slots_failing"]["value"] == str(lost)  # type: ignore[index]
    path = tmp_path / "autoops.prom"
    write_prometheus(path, [late])
    promtool_accepts(path.read_bytes())
    assert f'autoops_redis_cluster_slots_ok{{check="cluster"}} {16384 - lost}' in path.read_text()


def test_sentinels_that_disagree_on_the_master_warn_and_the_majority_is_judged(
    own_sentinels: SentinelTopology,
) -> None:
    own_sentinels.wait_settled()
    master = own_sentinels.master_port()
    odd = own_sentinels.sentinels[0]  # the first asked, the worst place for a wrong view
    with contextlib.closing(own_sentinels.sentinels[1].client()) as client:
        state: Any = client.sentinel_master(own_sentinels.name)
    epoch = state["config-epoch"]
    # The others' hellos carry the master's config epoch: after any failover (epoch above 0)
    # they would convert the odd sentinel within a second. Hence this test runs before the
    # failover test on this module's own group.
    assert epoch == 0, "the disagreement test needs a group that has not failed over yet"
    elsewhere = free_port()  # nothing listens there: no other sentinel's hello corrects it
    name = own_sentinels.name
    with contextlib.closing(odd.client()) as client:
        client.execute_command("SENTINEL REMOVE", name)  # type: ignore[no-untyped-call]
        client.execute_command("SENTINEL MONITOR", name, "127.0.0.1", elsewhere, 2)  # type: ignore[no-untyped-call]
        client.execute_command("SENTINEL SET", name, "down-after-milliseconds", 1000)  # type: ignore[no-untyped-call]
    try:
        check = RedisCheck("sentinel", own_sentinels.url(), timeout=2)
        at_once = check.run()
        time.sleep(1.5)  # past down-after-milliseconds: the odd sentinel sees its master down
        later = check.run()
    finally:
        with contextlib.closing(odd.client()) as client:
            client.execute_command("SENTINEL REMOVE", name)  # type: ignore[no-untyped-call]
            client.execute_command("SENTINEL MONITOR", name, "127.0.0.1", master, 2)  # type: ignore[no-untyped-call]
            client.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL SET", name, "down-after-milliseconds", 1000, "failover-timeout", 10000
            )
        _wait_sentinels_see_replicas(own_sentinels)
        own_sentinels.wait_settled()
    for result in (at_once, later):
        assert result.status is CheckStatus.WARNING, result.summary
        assert "sentinels disagree on the master: " in result.summary
        assert f"127.0.0.1:{odd.port} says 127.0.0.1:{elsewhere}" in result.summary
        assert f"(judging 127.0.0.1:{master}, named by 2 of 3)" in result.summary
        assert "3 of 3 sentinels answer" in result.summary
        assert "quorum reachable" in result.summary
        # The master two of three sentinels name is the one judged.
        assert "role master" in result.summary
        parse_plugin_line(result.nagios_line())
    assert f"master seen down (s_down) by 127.0.0.1:{odd.port} (of 127.0.0.1:{elsewhere})" in (
        later.summary
    )


def test_a_failover_in_progress_warns(own_sentinels: SentinelTopology) -> None:
    own_sentinels.wait_settled()
    before = own_sentinels.master_port()
    check = RedisCheck("sentinel", own_sentinels.url(), timeout=2)
    with contextlib.closing(own_sentinels.sentinels[0].client()) as client:
        client.execute_command("SENTINEL FAILOVER", own_sentinels.name)  # type: ignore[no-untyped-call]
    # A forced failover waits for the promoted replica's next INFO (about a second) and then
    # reconfigures the other replica: the check, run at once, finds it under way.
    result = check.run()
    after = own_sentinels.wait_new_master(before)
    own_sentinels.wait_settled()
    assert result.status is CheckStatus.WARNING, result.summary
    assert result.summary.startswith("failover in progress (")
    assert "3 of 3 sentinels answer" in result.summary
    assert "quorum reachable" in result.summary
    parse_plugin_line(result.nagios_line())
    done = _run_until(check, CheckStatus.OK)  # the other sentinels hear of it within a second
    assert done.status is CheckStatus.OK, done.summary
    assert f"master 127.0.0.1:{after}" in done.summary
