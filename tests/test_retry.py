"""RetryPolicy: bounded, jittered, only for transient failures, observable, and switchable off."""

from __future__ import annotations

import logging

import pytest

import autoops
from autoops import AutoOpsError, ConfigError, ConnectError, QueryError, RetryEvent, RetryPolicy
from autoops._retry import Failure

FAST = RetryPolicy(attempts=4, timeout=5, wait_initial=0.001, wait_max=0.002, jitter=0)


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, TimeoutError):
        return Failure(True, ConnectError, "flaky")
    return Failure(False, QueryError, "broken")


class Flaky:
    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def test_defaults_are_bounded_with_jitter() -> None:
    policy = RetryPolicy()
    assert (
        policy.attempts,
        policy.timeout,
        policy.wait_initial,
        policy.wait_max,
        policy.jitter,
    ) == (10, 45.0, 0.1, 5.0, 1.0)


def test_a_transient_failure_is_retried_until_it_succeeds() -> None:
    flaky = Flaky(2, TimeoutError())
    assert FAST.call(flaky, classify=classify, operation="op", where="here") == "done"
    assert flaky.calls == 3


def test_a_permanent_failure_is_raised_at_once() -> None:
    flaky = Flaky(5, ValueError("no"))
    with pytest.raises(QueryError, match="broken") as caught:
        FAST.call(flaky, classify=classify, operation="op", where="here")
    assert flaky.calls == 1
    assert isinstance(caught.value.__cause__, ValueError)


def test_giving_up_says_how_many_attempts_and_chains_the_cause() -> None:
    flaky = Flaky(99, TimeoutError("socket"))
    with pytest.raises(ConnectError, match="gave up after 4 attempts") as caught:
        FAST.call(flaky, classify=classify, operation="op", where="here")
    assert flaky.calls == 4
    assert isinstance(caught.value.__cause__, TimeoutError)


def test_the_time_budget_stops_retrying() -> None:
    policy = RetryPolicy(attempts=1000, timeout=0.2, wait_initial=0.05, wait_max=0.05, jitter=0)
    flaky = Flaky(10_000, TimeoutError())
    with pytest.raises(ConnectError, match="gave up"):
        policy.call(flaky, classify=classify, operation="op", where="here")
    assert 2 <= flaky.calls < 20


def test_none_never_retries() -> None:
    flaky = Flaky(1, TimeoutError())
    with pytest.raises(ConnectError):
        RetryPolicy.none().call(flaky, classify=classify, operation="op", where="here")
    assert flaky.calls == 1


def test_testing_switch_skips_waits_and_caps_attempts() -> None:
    slow = RetryPolicy(attempts=5, wait_initial=30, wait_max=60)
    autoops.set_testing(True, attempts=2)
    flaky = Flaky(99, TimeoutError())
    with pytest.raises(ConnectError, match="gave up after 2 attempts"):
        slow.call(flaky, classify=classify, operation="op", where="here")
    autoops.set_testing(True)
    flaky = Flaky(4, TimeoutError())
    assert slow.call(flaky, classify=classify, operation="op", where="here") == "done"


def test_each_retry_is_logged_counted_and_hooked(caplog: pytest.LogCaptureFixture) -> None:
    events: list[RetryEvent] = []
    autoops.add_retry_hook(events.append)
    before = autoops.retry_totals().get("test op", 0)
    try:
        with caplog.at_level(logging.WARNING, logger="autoops.retry"):
            FAST.call(Flaky(2, TimeoutError()), classify=classify, operation="test op", where="db1")
    finally:
        autoops.remove_retry_hook(events.append)
    assert [event.attempt for event in events] == [1, 2]
    assert all(event.error_type == "TimeoutError" for event in events)
    assert autoops.retry_totals()["test op"] == before + 2
    assert "test op on db1 failed (flaky), attempt 1 of 4; retrying in" in caplog.text


@pytest.mark.parametrize(
    "kwargs",
    [{"attempts": 0}, {"timeout": -1}, {"wait_initial": 2, "wait_max": 1}, {"jitter": -0.1}],
)
def test_bad_policies_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policies_are_frozen_values() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.attempts = 3  # type: ignore[misc]
    assert policy == RetryPolicy()


def test_every_error_is_one_family() -> None:
    for name in autoops.__all__:
        obj = getattr(autoops, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, AutoOpsError), name
