"""Running many checks: parallel, each bounded by its timeout, all by the deadline."""

from __future__ import annotations

import threading
import time

import pytest

from autoops import Check, CheckFindings, CheckStatus, ConfigError, TcpCheck, run_checks


class SleepyCheck(Check):
    """A check whose target takes ``seconds`` to answer (or never, when ``forever``)."""

    kind = "sleepy"

    def __init__(self, name: str, seconds: float, *, timeout: float = 5.0) -> None:
        super().__init__(name, timeout=timeout)
        self.seconds = seconds
        self.release = threading.Event()

    def measure(self, findings: CheckFindings) -> None:
        self.release.wait(self.seconds)
        findings.note(f"slept {self.seconds} s")


class BrokenCheck(Check):
    kind = "broken"

    def measure(self, findings: CheckFindings) -> None:
        raise KeyError("a bug")


def test_checks_run_in_parallel() -> None:
    checks = [SleepyCheck(f"c{index}", 0.5) for index in range(8)]
    started = time.monotonic()
    results = run_checks(checks)
    elapsed = time.monotonic() - started
    assert [result.status for result in results] == [CheckStatus.OK] * 8
    assert elapsed < 2.0  # serially it would take 4 s


def test_a_hung_check_is_abandoned_at_its_timeout_and_does_not_block_the_others() -> None:
    hung = SleepyCheck("hung", 3600, timeout=0.5)
    quick = TcpCheck("closed-port", "127.0.0.1", 1)
    started = time.monotonic()
    results = run_checks([hung, quick, SleepyCheck("fine", 0.1)])
    elapsed = time.monotonic() - started
    hung.release.set()
    assert elapsed < 2.0
    assert results[0].status is CheckStatus.CRITICAL
    assert "no answer within its timeout of 0.5 s" in results[0].summary
    assert results[1].status is CheckStatus.CRITICAL
    assert results[2].status is CheckStatus.OK


def test_the_overall_deadline_bounds_the_run() -> None:
    slow = [SleepyCheck(f"slow{index}", 3600, timeout=30) for index in range(3)]
    started = time.monotonic()
    results = run_checks(slow, deadline=0.5, max_parallel=2)
    elapsed = time.monotonic() - started
    for check in slow:
        check.release.set()
    assert elapsed < 2.0
    assert [result.status for result in results] == [
        CheckStatus.CRITICAL,
        CheckStatus.CRITICAL,
        CheckStatus.UNKNOWN,
    ]
    assert "not run: the overall deadline" in results[2].summary


def test_a_check_that_fails_internally_is_unknown_not_a_crash() -> None:
    result = run_checks([BrokenCheck("bug")])[0]
    assert result.status is CheckStatus.UNKNOWN
    assert "check failed internally: KeyError" in result.summary


def test_duplicate_names_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unique"):
        run_checks([SleepyCheck("same", 0), SleepyCheck("same", 0)])
