"""What :class:`RedisCheck` judges beyond one server: a Redis Cluster's slots, state, failing
nodes and replicas per master, and a Sentinel group's quorum, agreement on the master and
failovers in progress."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .._connection import CacheConnectionSettings
from ..cache._redis import classify_redis_error
from ._check import CheckFindings
from ._status import CheckStatus

__all__ = ["evaluate_cluster", "evaluate_sentinels", "measure_cluster"]

CLUSTER_SLOTS: Final = 16384


def measure_cluster(findings: CheckFindings, settings: CacheConnectionSettings) -> None:
    """Ask the first seed node of ``settings`` that answers for its ``CLUSTER INFO`` and
    ``CLUSTER NODES``, and judge them.

    A plain connection to one node, not redis-py's cluster client: that client refuses a
    cluster whose slots are not all assigned ("All slots are not covered") and fails on the
    first PING when the node it picked is down, which are the states this check must report."""
    arguments = settings.redis_arguments()
    for name in ("host", "port", "db", "unix_socket_path"):
        arguments.pop(name, None)
    arguments["retry"] = Retry(NoBackoff(), 0)
    silent: list[str] = []
    for host, port in settings.hosts:
        where = f"{host}:{port}"
        client = redis.Redis(host=host, port=port, **arguments)
        try:
            # The first PING opens the connection; the second is the round trip alone.
            started = time.perf_counter()
            client.ping()
            connect_time = time.perf_counter() - started
            started = time.perf_counter()
            client.ping()
            latency = time.perf_counter() - started
            info: Any = client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
            nodes: Any = client.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            silent.append(where)
            last: BaseException = exc
            continue
        except redis.RedisError as exc:
            failure = classify_redis_error(
                exc, f"redis CLUSTER INFO on {where}", settings.location, settings.password
            )
            raise failure.build() from exc
        finally:
            client.close()
        findings.metric("connect_time", connect_time, "s", text=None, minimum=0)
        findings.metric("latency", latency, "s", text=f"PING {latency * 1000:.2f} ms", minimum=0)
        if silent:
            findings.note(f"asked {where} ({', '.join(silent)} did not answer)")
        evaluate_cluster(findings, info, nodes)
        return
    failure = classify_redis_error(last, "redis cluster", settings.location, settings.password)
    raise failure.build() from last


def evaluate_cluster(findings: CheckFindings, info: dict[str, Any], nodes: dict[str, Any]) -> None:
    """Judge ``CLUSTER INFO`` and ``CLUSTER NODES`` (as redis-py parses them) of one node."""
    state = str(info.get("cluster_state", "fail"))
    if state != "ok":
        findings.problem(CheckStatus.CRITICAL, f"cluster_state is {state}")
    else:
        findings.note("cluster_state ok")
    slots_ok = float(info.get("cluster_slots_ok", 0))
    unassigned = CLUSTER_SLOTS - int(info.get("cluster_slots_assigned", CLUSTER_SLOTS))
    findings.metric(
        "slots_ok",
        slots_ok,
        text=f"{slots_ok:.0f} of {CLUSTER_SLOTS} slots"
        + (f" ({unassigned} not assigned to any node)" if unassigned > 0 else ""),
        minimum=0,
        maximum=CLUSTER_SLOTS,
        series="cluster_slots_ok",
    )
    pfail = float(info.get("cluster_slots_pfail", 0)) + float(info.get("cluster_slots_fail", 0))
    findings.metric(
        "slots_failing",
        pfail,
        text=f"{pfail:.0f} slots on failing nodes" if pfail else None,
        minimum=0,
        maximum=CLUSTER_SLOTS,
        series="cluster_slots_failing",
    )
    failing = sorted(
        _describe_node(address, node)
        for address, node in nodes.items()
        if "fail" in str(node.get("flags", "")) or not node.get("connected", True)
    )
    findings.metric(
        "failing_nodes",
        float(len(failing)),
        text=f"failing nodes: {', '.join(failing)}" if failing else None,
        minimum=0,
        series="cluster_failing_nodes",
    )
    masters = {
        node.get("node_id"): address.split("@")[0]
        for address, node in nodes.items()
        if "master" in str(node.get("flags", "")) and "fail" not in str(node.get("flags", ""))
        and node.get("slots")
    }  # fmt: skip
    replicas: Counter[str] = Counter(
        str(node.get("master_id"))
        for node in nodes.values()
        if "slave" in str(node.get("flags", "")) and "fail" not in str(node.get("flags", ""))
    )
    counts = {address: replicas.get(str(node_id), 0) for node_id, address in masters.items()}
    fewest = min(counts.values(), default=0)
    bare = sorted(address for address, count in counts.items() if count == fewest)
    findings.metric(
        "replicas_per_master",
        float(fewest),
        text=(
            f"{len(masters)} masters, at least {fewest} replica(s) each"
            + (f" ({', '.join(bare)} has {fewest})" if fewest == 0 else "")
        ),
        minimum=0,
        series="cluster_min_replicas_per_master",
    )


def _describe_node(address: str, node: dict[str, Any]) -> str:
    """``127.0.0.1:7000 (master, fail)``: the address, the role and what is wrong with it."""
    flags = str(node.get("flags", "")).split(",")
    role = "master" if "master" in flags else "replica" if "slave" in flags else "node"
    state = "fail" if "fail" in flags else "pfail" if "fail?" in flags else "disconnected"
    return f"{address.split('@', maxsplit=1)[0]} ({role}, {state})"


def evaluate_sentinels(
    findings: CheckFindings, settings: CacheConnectionSettings
) -> tuple[str, int] | None:
    """Ask every sentinel of ``settings`` about its master: how many answer, whether they
    agree on the master's address, whether the quorum is reachable (``SENTINEL CKQUORUM``),
    whether a failover is under way and how many healthy replicas the master has. Returns the
    master most sentinels name (None when none names one)."""
    name = settings.service or ""
    answers: dict[str, dict[str, Any]] = {}
    healthy_replicas: list[int] = []
    addresses: dict[str, str] = {}
    quorum_ok: list[str] = []
    quorum_errors: list[str] = []
    unreachable: list[str] = []
    for host, port in settings.hosts:
        where = f"{host}:{port}"
        client = redis.Redis(host=host, port=port, **settings.sentinel_arguments())
        try:
            master: Any = client.sentinel_master(name)
            address: Any = client.sentinel_get_master_addr_by_name(name)
            answers[where] = master
            known: Any = client.sentinel_slaves(name)
            healthy_replicas.append(
                sum(
                    1
                    for replica in known
                    if not (replica.get("is_sdown") or replica.get("is_odown"))
                    and not replica.get("is_disconnected")
                )
            )
            if address:
                host_text = address[0].decode() if isinstance(address[0], bytes) else address[0]
                addresses[where] = f"{host_text}:{int(address[1])}"
            try:
                client.execute_command("SENTINEL CKQUORUM", name)  # type: ignore[no-untyped-call]
                quorum_ok.append(where)
            except redis.ResponseError as exc:
                quorum_errors.append(f"{where}: {exc}")
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            unreachable.append(where)
        except redis.ResponseError as exc:
            findings.problem(
                CheckStatus.CRITICAL, f"sentinel {where} does not know {name!r}: {exc}"
            )
        finally:
            client.close()
    findings.metric(
        "sentinels",
        float(len(answers)),
        text=f"{len(answers)} of {len(settings.hosts)} sentinels answer",
        minimum=0,
        maximum=float(len(settings.hosts)),
        series="sentinels_reachable",
    )
    if unreachable:
        findings.problem(
            CheckStatus.WARNING, f"sentinel(s) not answering: {', '.join(unreachable)}"
        )
    if not answers:
        findings.problem(CheckStatus.CRITICAL, f"no sentinel answers for {name!r}")
        return None
    if quorum_ok:
        findings.note("quorum reachable")
    else:
        findings.problem(
            CheckStatus.CRITICAL, f"no quorum for a failover: {'; '.join(quorum_errors)}"
        )
    # The master most sentinels name (on a tie, the first named in the URL's order) is the
    # one judged: a sentinel with a view of its own must not decide which server is checked.
    named = Counter(addresses.values()).most_common()
    majority = named[0][0] if named else None
    if len(named) > 1:
        views = ", ".join(f"{where} says {address}" for where, address in sorted(addresses.items()))
        findings.problem(
            CheckStatus.WARNING,
            f"sentinels disagree on the master: {views} (judging {majority}, "
            f"named by {named[0][1]} of {len(addresses)})",
        )
    elif majority:
        findings.note(f"master {majority}")
    failovers = sorted(
        f"{where}: {master.get('failover-state') or 'started'}"
        for where, master in answers.items()
        if "failover_in_progress" in str(master.get("flags", ""))
        or str(master.get("failover-state", "none")) not in ("none", "")
    )
    if failovers:
        findings.problem(CheckStatus.WARNING, f"failover in progress ({', '.join(failovers)})")
    down = {
        level: sorted(
            where + ("" if addresses.get(where) == majority else f" (of {addresses.get(where)})")
            for where, master in answers.items()
            if level in str(master.get("flags", "")).split(",")
        )
        for level in ("o_down", "s_down")
    }
    if down["o_down"]:
        findings.problem(
            CheckStatus.CRITICAL,
            f"master is objectively down (o_down, says {', '.join(down['o_down'])})",
        )
    elif down["s_down"]:
        findings.problem(
            CheckStatus.WARNING, f"master seen down (s_down) by {', '.join(down['s_down'])}"
        )
    healthy = max(healthy_replicas, default=0)
    findings.metric(
        "replicas",
        float(healthy),
        text=f"{healthy} replica(s)",
        minimum=0,
        series="sentinel_replicas",
    )
    if majority is None:
        return None
    master_host, _, master_port = majority.rpartition(":")
    return master_host, int(master_port)
