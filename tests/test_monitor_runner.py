"""Running many checks: parallel, each bounded by its timeout, all by the deadline; on the event
loop (checks that measure without blocking) and in threads (the others) alike."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from _support.monitor_servers import SilentServer, UnacceptingServer, WebServer
from autoops import (
    Check,
    CheckFindings,
    CheckStatus,
    ConfigError,
    HttpCheck,
    MySQLCheck,
    RedisCheck,
    TcpCheck,
    run_checks,
)
from autoops.monitor._runner import parallel_limit


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


class NappingCheck(Check):
    """SleepyCheck on the event loop; with ``stubborn`` it ignores being cancelled."""

    kind = "napping"

    def __init__(
        self, name: str, seconds: float, *, timeout: float = 5.0, stubborn: bool = False
    ) -> None:
        super().__init__(name, timeout=timeout)
        self.seconds = seconds
        self.stubborn = stubborn

    @property
    def measures_async(self) -> bool:
        return True

    def measure(self, findings: CheckFindings) -> None:
        raise AssertionError("run_checks runs this check on its event loop")

    async def measure_async(self, findings: CheckFindings) -> None:
        until = time.monotonic() + self.seconds
        while time.monotonic() < until:
            try:
                await asyncio.sleep(until - time.monotonic())
            except asyncio.CancelledError:
                if not self.stubborn:
                    raise
        findings.note(f"napped {self.seconds} s")


class GatheringCheck(Check):
    """OK once all ``size`` checks of its ``group`` are running at the same time."""

    kind = "gathering"

    def __init__(self, name: str, group: list[str], size: int, *, on_loop: bool) -> None:
        super().__init__(name, timeout=10)
        self.group, self.size, self.on_loop = group, size, on_loop

    @property
    def measures_async(self) -> bool:
        return self.on_loop

    def measure(self, findings: CheckFindings) -> None:
        self.group.append(self.name)
        while len(self.group) < self.size:
            time.sleep(0.01)
        findings.note("all together")

    async def measure_async(self, findings: CheckFindings) -> None:
        self.group.append(self.name)
        while len(self.group) < self.size:
            await asyncio.sleep(0.01)
        findings.note("all together")


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


def test_checks_on_the_loop_and_in_threads_keep_their_order_and_meaning() -> None:
    checks: list[Check] = [
        NappingCheck("loop-ok", 0.1),
        SleepyCheck("thread-ok", 0.1),
        NappingCheck("loop-hung", 3600, timeout=0.5),
        SleepyCheck("thread-hung", 3600, timeout=0.5),
        BrokenCheck("bug"),
    ]
    results = run_checks(checks)
    checks[3].release.set()  # type: ignore[attr-defined]
    assert [result.name for result in results] == [check.name for check in checks]
    assert [result.status for result in results] == [
        CheckStatus.OK,
        CheckStatus.OK,
        CheckStatus.CRITICAL,
        CheckStatus.CRITICAL,
        CheckStatus.UNKNOWN,
    ]
    # A check on the loop ends at its own timeout; one in a thread is abandoned there.
    assert "timed out (no answer within 0.5 s)" in results[2].summary
    assert "no answer within its timeout of 0.5 s (check abandoned)" in results[3].summary


def test_many_hung_targets_all_time_out_and_the_rest_are_ok_in_one_run(
    redis_url: str, mysql_url: str
) -> None:
    silent, unaccepting, web = SilentServer(), UnacceptingServer(), WebServer()
    web.routes["/"] = (200, b"ok")
    hung = f"127.0.0.1:{silent.port}"
    checks: list[Check] = []
    try:
        for index in range(15):
            checks += [
                TcpCheck(f"tcp-hung{index}", "127.0.0.1", unaccepting.port, timeout=0.5),
                HttpCheck(f"http-hung{index}", f"http://{hung}/", timeout=0.5),
                RedisCheck(f"redis-hung{index}", f"redis://{hung}/0", timeout=0.5),
                TcpCheck(f"tcp{index}", "127.0.0.1", web.server_address[1], timeout=5),
                HttpCheck(f"http{index}", web.url("/"), timeout=5),
                RedisCheck(f"redis{index}", redis_url, timeout=5),
            ]
        for index in range(3):
            checks += [
                MySQLCheck(f"mysql-hung{index}", f"mysql://root@{hung}/", timeout=0.5),
                MySQLCheck(f"mysql{index}", mysql_url, timeout=5),
            ]
        results = run_checks(checks, max_parallel=32)
    finally:
        silent.close()
        unaccepting.close()
        web.close()
    for check, result in zip(checks, results, strict=True):
        assert result.name == check.name
        if "hung" in check.name:
            assert result.status is CheckStatus.CRITICAL, result.summary
            # Its own timeout error, or the runner's word when a loaded machine delays that.
            assert any(
                words in result.summary
                for words in ("timed out", "Lost connection", "no answer within")
            ), result.summary
        else:
            assert result.status is CheckStatus.OK, f"{check.name}: {result.summary}"


def test_the_deadline_bounds_checks_on_the_loop_and_in_threads() -> None:
    thread = SleepyCheck("thread", 3600, timeout=30)
    checks: list[Check] = [NappingCheck("loop", 3600, timeout=30), thread, NappingCheck("late", 1)]
    results = run_checks(checks, deadline=0.5, max_parallel=2)
    thread.release.set()
    assert [result.status for result in results] == [
        CheckStatus.CRITICAL,
        CheckStatus.CRITICAL,
        CheckStatus.UNKNOWN,
    ]
    for result in results[:2]:
        assert "still running at the overall deadline of 0.5 s" in result.summary
    assert "not run: the overall deadline" in results[2].summary


def test_a_check_that_ignores_cancellation_does_not_hold_the_run_past_the_deadline() -> None:
    checks: list[Check] = [
        NappingCheck("stubborn", 3600, timeout=0.2, stubborn=True),
        NappingCheck("fine", 0.1),
    ]
    results = run_checks(checks, deadline=1)
    assert results[0].status is CheckStatus.CRITICAL
    assert "still running at the overall deadline of 1 s" in results[0].summary
    assert results[1].status is CheckStatus.OK


@pytest.mark.parametrize("on_loop", [True, False], ids=["event loop", "threads"])
def test_by_default_every_check_runs_at_once(on_loop: bool) -> None:
    group: list[str] = []
    checks = [GatheringCheck(f"g{index}", group, 40, on_loop=on_loop) for index in range(40)]
    results = run_checks(checks)
    assert [result.status for result in results] == [CheckStatus.OK] * 40
    assert parallel_limit(40) == 40


def test_the_default_parallelism_keeps_within_the_open_file_limit() -> None:
    script = textwrap.dedent("""
        import resource
        from autoops.monitor._runner import parallel_limit
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        print(parallel_limit(10), parallel_limit(500), parallel_limit(5000))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        print(parallel_limit(500))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["10", "256", "256", "32"]


def test_run_checks_called_from_a_coroutine_runs_on_a_loop_of_its_own() -> None:
    async def from_a_notebook_cell() -> list[CheckStatus]:
        results = run_checks([NappingCheck("loop", 0.1), SleepyCheck("thread", 0.1)])
        return [result.status for result in results]

    assert asyncio.run(from_a_notebook_cell()) == [CheckStatus.OK, CheckStatus.OK]


def test_abandoned_checks_leave_nothing_that_keeps_the_process_alive(tmp_path: Path) -> None:
    unaccepting = UnacceptingServer()
    script = tmp_path / "hang.py"
    script.write_text(
        textwrap.dedent(f"""
            import asyncio, sys, threading
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from test_monitor_runner import NappingCheck, SleepyCheck
            from autoops import TcpCheck, run_checks

            checks = [
                SleepyCheck("thread", 3600, timeout=0.3),
                NappingCheck("stubborn", 3600, timeout=0.3, stubborn=True),
                TcpCheck("port", "127.0.0.1", {unaccepting.port}, timeout=0.3),
            ]
            for result in run_checks(checks, deadline=1):
                print(result.name, result.status.name)
        """)
    )
    try:
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        unaccepting.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["thread", "CRITICAL", "stubborn", "CRITICAL", "port", "CRITICAL"]
