"""How redis-py's failures are judged: what a failover, a resharding or a loading server
answers is retried; what no retry can fix is not; the password never shows."""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.sentinel import MasterNotFoundError

import autoops
from autoops._config import Secret
from autoops.cache._redis import classify_redis_error

PASSWORD = Secret("s3cret-pw")


@pytest.mark.parametrize(
    "exc",
    [
        MovedError("3999 127.0.0.1:7001"),
        AskError("3999 127.0.0.1:7002"),
        TryAgainError("Multiple keys request during rehashing of slot"),
        ClusterDownError("The cluster is down"),
        SlotNotCoveredError("Slot 3999 is not covered by the cluster"),
        RedisClusterException("All slots are not covered after query all startup_nodes."),
        ReadOnlyError("You can't write against a read only replica."),
        MasterDownError("Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
        BusyLoadingError("Redis is loading the dataset in memory"),
        MasterNotFoundError("No master found for 'mymaster'"),
        redis.ConnectionError("Connection reset by peer"),
        redis.TimeoutError("Timeout reading from socket"),
        ResponseError("CLUSTERDOWN Hash slot not served"),
        ResponseError("BUSY Redis is busy running a script."),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_failover_and_resharding_replies_are_transient(exc: Exception) -> None:
    failure = classify_redis_error(exc, "redis SET", "cluster:127.0.0.1:7000", PASSWORD)
    assert failure.transient, failure.message
    assert failure.error_type is autoops.ConnectError
    assert "cluster:127.0.0.1:7000" in failure.message


@pytest.mark.parametrize(
    ("exc", "error_type"),
    [
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
         autoops.QueryError),
        (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
         autoops.QueryError),
        (AuthenticationError("invalid username-password pair: s3cret-pw"),
         autoops.AuthenticationError),
        (ResponseError("NOPERM this user has no permissions to run the 'set' command"),
         autoops.AuthenticationError),
    ],
    ids=["wrongtype", "oom", "auth", "noperm"],
)  # fmt: skip
def test_what_no_retry_fixes_is_not_retried_and_hides_the_password(
    exc: Exception, error_type: type[Exception]
) -> None:
    failure = classify_redis_error(exc, "redis SET", "127.0.0.1:6379", PASSWORD)
    assert not failure.transient
    assert failure.error_type is error_type
    assert "s3cret-pw" not in failure.message
