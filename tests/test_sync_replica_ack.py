"""CacheSync into Redis Sentinel and Redis Cluster while replicas do not acknowledge: a batch no
replica acknowledged stops the pass with an autoops error, and the checkpoint is never ahead of
the rows it covers (docs/sync.md, "Redis Sentinel and Redis Cluster").

The replicas are frozen with SIGSTOP (their connections stay open, so the master still counts
them and ``WAIT 1`` runs out its ``replica_ack_timeout``), for a few seconds only: the test
cluster's node timeout is 1.5 s, so a longer freeze only gets the replica flagged as failing,
which clears once it answers again. Every test thaws the replicas in ``finally`` and waits for the
topology to be healthy again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import autoops
from _support.redis_topologies import RedisClusterTopology, SentinelTopology
from _support.sync_tables import cached_rows, create_users, expected_cache, make_sync

ROWS = 2000
BATCH = 20
# Two tries of 300 ms each: the pass gives up in about a second rather than after the default
# policy's 45 s.
IMPATIENT = autoops.RetryPolicy(attempts=2, timeout=5.0, wait_initial=0.05, wait_max=0.1)


@contextlib.contextmanager
def impatient_client(url: str) -> Iterator[autoops.CacheClient]:
    """A client of ``url`` under a namespace of its own that waits 0.3 s for a replica's ack and
    tries twice; its keys are removed afterwards."""
    client = autoops.CacheClient.from_url(
        url, f"aot:{uuid.uuid4().hex[:10]}", retry=IMPATIENT, replica_ack_timeout=0.3
    )
    try:
        yield client
    finally:
        client.retry = autoops.RetryPolicy()
        with contextlib.suppress(autoops.AutoOpsError):
            client.delete_prefix("")
        client.close()


@contextlib.contextmanager
def frozen(pids: list[int]) -> Iterator[Callable[[], None]]:
    """Yield a function that SIGSTOPs ``pids``; on leaving, every one stopped is SIGCONTed."""
    stopped: list[int] = []

    def freeze() -> None:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)

    try:
        yield freeze
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)


def _pid(process: subprocess.Popen[bytes] | None) -> int:
    """The pid of a server the topology started and that still runs."""
    assert process is not None
    assert process.poll() is None
    return process.pid


@pytest.fixture
def users_db(mysql_db: autoops.DbClient) -> autoops.DbClient:
    create_users(mysql_db, ROWS)
    return mysql_db


def _rename_some_users(db: autoops.DbClient) -> None:
    """Rename every 20th user (100 rows), each stamped a millisecond after the one before (in
    the past, so every row is settled): an incremental pass writes them in 5 batches, in id
    order, each with a checkpoint further on. (Were a fifth of the table changed, the pass would
    read the changes by key, and only its last batch would move the checkpoint.)"""
    db.execute(
        "UPDATE users SET username = CONCAT('acked-', id),"
        " updated_at = NOW(6) - INTERVAL 10 MINUTE + INTERVAL id * 1000 MICROSECOND"
        " WHERE id % 20 = 0"
    )


def _full_pass_then_renames(
    db: autoops.DbClient, cache: autoops.CacheClient
) -> tuple[autoops.CacheSync, dt.datetime]:
    """A full pass, then 100 rows renamed for the incremental pass under test; returns the
    sync and the checkpoint the full pass left."""
    sync = make_sync(db, cache, batch_size=BATCH)
    assert sync.run_once().ok
    before = _checkpoint(cache, sync)
    _rename_some_users(db)
    return sync, before


def _thawed_pass_ends_equal(
    db: autoops.DbClient, cache: autoops.CacheClient, sync: autoops.CacheSync, was: dt.datetime
) -> None:
    """Once the replicas answer again, a pass completes, the cache equals the table and the
    checkpoint has moved past ``was``."""
    vars(sync).pop("_write_page", None)  # the fault injection, if any
    assert sync.run_once().ok
    assert cached_rows(cache) == expected_cache(db)
    assert _checkpoint(cache, sync) > was


def _checkpoint(cache: autoops.CacheClient, sync: autoops.CacheSync) -> dt.datetime:
    value = autoops.read_sync_status(cache, sync.name).checkpoint
    assert isinstance(value, str)
    return dt.datetime.fromisoformat(value)


def _assert_checkpoint_covers_its_rows(
    db: autoops.DbClient, cache: autoops.CacheClient, checkpoint: dt.datetime
) -> int:
    """Every row stamped up to ``checkpoint`` is in the cache as the table has it; returns how
    many renamed rows that is."""
    expected = expected_cache(db)
    cached = cached_rows(cache)
    covered = [
        f"users:{row['id']}"
        for row in db.query("SELECT id, updated_at FROM users")
        if row["updated_at"] <= checkpoint
    ]
    wrong = [key for key in covered if cached.get(key) != expected[key]]
    assert not wrong, f"the checkpoint {checkpoint} is ahead of its rows: {wrong[:5]}"
    return sum(expected[key]["username"].startswith("acked-") for key in covered)


def _renamed_in_cache(cache: autoops.CacheClient) -> int:
    return sum(value["username"].startswith("acked-") for value in cached_rows(cache).values())


def _assert_not_acknowledged(error: autoops.AutoOpsError) -> None:
    text = str(error)
    assert isinstance(error, autoops.ConnectError), repr(error)
    assert "no replica" in text, text
    assert "acknowledged the batch" in text, text
    assert "Traceback" not in text


# Sentinel ---------------------------------------------------------------------------------------


def test_sentinel_pass_stops_at_a_batch_no_replica_acknowledged(
    users_db: autoops.DbClient, redis_sentinel_topology: SentinelTopology
) -> None:
    topology = redis_sentinel_topology
    topology.wait_settled()
    with impatient_client(topology.url()) as cache:
        sync, before = _full_pass_then_renames(users_db, cache)
        master = topology.master_port()
        replicas = [_pid(server.process) for server in topology.servers if server.port != master]
        assert len(replicas) == 2
        acknowledged: list[dt.datetime] = []
        started: list[float] = []
        try:
            with frozen(replicas) as freeze:
                after_checkpoint_moved(sync, cache, before, acknowledged, started, freeze)
                with pytest.raises(autoops.AutoOpsError) as caught:
                    sync.run_once()
                frozen_for = time.monotonic() - started[0]
                _assert_not_acknowledged(caught.value)
                # The master holds at most the one batch no replica acknowledged, its rows and
                # its checkpoint together (one script): the pass went no further, and the
                # checkpoint covers exactly the renamed rows the cache holds.
                after = _checkpoint(cache, sync)
                covered = _assert_checkpoint_covers_its_rows(users_db, cache, after)
                was = _assert_checkpoint_covers_its_rows(users_db, cache, acknowledged[0])
                assert was == BATCH, acknowledged
                assert covered in (BATCH, 2 * BATCH), (acknowledged, after)
                assert _renamed_in_cache(cache) == covered
        finally:
            topology.wait_settled()
        assert frozen_for < 10
        _thawed_pass_ends_equal(users_db, cache, sync, after)


# Cluster ----------------------------------------------------------------------------------------


def test_cluster_pass_keeps_its_checkpoint_when_one_masters_replica_does_not_acknowledge(
    users_db: autoops.DbClient, redis_cluster_topology: RedisClusterTopology
) -> None:
    topology = redis_cluster_topology
    topology.wait_healthy()
    with impatient_client(topology.url()) as cache:
        sync, before = _full_pass_then_renames(users_db, cache)
        # The replica frozen is one whose master does not hold the checkpoint: a checkpoint
        # written with the rows would be acknowledged there while another node's rows are not.
        holder = topology.master_of_key(cache.key(f"autoops-sync:{sync.name}:checkpoint"))
        victim = next(port for port in topology.masters() if port != holder)
        (replica,) = topology.replicas_of(victim)
        acknowledged: list[dt.datetime] = []
        started: list[float] = []
        try:
            with frozen([_pid(topology.node(replica).process)]) as freeze:
                after_checkpoint_moved(sync, cache, before, acknowledged, started, freeze)
                with pytest.raises(autoops.AutoOpsError) as caught:
                    sync.run_once()
                frozen_for = time.monotonic() - started[0]
                _assert_not_acknowledged(caught.value)
                assert f"127.0.0.1:{victim}" in str(caught.value)
                # Not advanced past the batch every node acknowledged; the rows of the next
                # batch may be on the other masters, but the checkpoint does not cover them.
                after = _checkpoint(cache, sync)
                assert after == acknowledged[0]
                covered = _assert_checkpoint_covers_its_rows(users_db, cache, after)
                assert covered == BATCH
        finally:
            topology.wait_healthy()
        assert frozen_for < 10
        _thawed_pass_ends_equal(users_db, cache, sync, acknowledged[0])


def test_cluster_pass_stops_before_reading_when_its_fence_claim_is_not_acknowledged(
    users_db: autoops.DbClient, redis_cluster_topology: RedisClusterTopology
) -> None:
    """The claim (every slot's fence raised to the new token) is waited for on every master
    before the pass reads anything: with one master's replica frozen from the start, the pass
    stops at the claim, having written no row and no checkpoint."""
    topology = redis_cluster_topology
    topology.wait_healthy()
    with impatient_client(topology.url()) as cache:
        sync, before = _full_pass_then_renames(users_db, cache)
        (replica,) = topology.replicas_of(topology.masters()[0])
        try:
            with frozen([_pid(topology.node(replica).process)]) as freeze:
                freeze()
                started = time.monotonic()
                with pytest.raises(autoops.AutoOpsError) as caught:
                    sync.run_once()
                frozen_for = time.monotonic() - started
                _assert_not_acknowledged(caught.value)
                # The fencing token's INCR or the claim of every slot, whichever reaches the
                # frozen replica's master first.
                assert "fence claim" in str(caught.value) or "fencing token" in str(caught.value)
                assert _checkpoint(cache, sync) == before
                assert _renamed_in_cache(cache) == 0
        finally:
            topology.wait_healthy()
        assert frozen_for < 10
        _thawed_pass_ends_equal(users_db, cache, sync, before)


def after_checkpoint_moved(
    sync: autoops.CacheSync,
    cache: autoops.CacheClient,
    before: dt.datetime,
    acknowledged: list[dt.datetime],
    started: list[float],
    fault: Callable[[], None],
) -> None:
    """Inject ``fault`` right after the first batch write of the sync that returned with the
    checkpoint moved past ``before`` (the first batches of an incremental pass may re-read the
    last pass's window, under the old checkpoint); the checkpoint it left goes in
    ``acknowledged``, the moment in ``started``."""
    original = sync._write_page

    def write(*args: Any) -> None:
        original(*args)
        if not acknowledged and (now := _checkpoint(cache, sync)) > before:
            acknowledged.append(now)
            started.append(time.monotonic())
            fault()

    sync._write_page = write  # type: ignore[method-assign,assignment]
