"""Run many checks at once on one event loop: a check that measures without blocking (TCP,
HTTP, a single Redis server) as a task, any other in a daemon thread of its own. Each is
abandoned at its own timeout and all are bounded by an overall deadline, so one hung target
never holds up the others or the process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import resource
import threading
import time
from collections import deque
from collections.abc import Callable, MutableMapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, ParamSpec, TypeVar

from .._errors import ConfigError
from ._check import Check, log
from ._result import CheckResult, check_results
from ._status import CheckStatus

__all__ = ["parallel_limit", "run_checks"]

#: Grace after a check's timeout before it is abandoned, so its own timeout error (which says
#: more) has the chance to arrive first.
_GRACE: Final = 0.25
#: The fewest checks at once that the sizing by the open-file limit gives.
_MIN_PARALLEL: Final = 32

_P = ParamSpec("_P")
_T = TypeVar("_T")


def parallel_limit(count: int) -> int:
    """How many of ``count`` checks :func:`run_checks` runs at once when ``max_parallel`` is
    not given: all of them, as far as a quarter of the process's open-file limit allows (a
    running check holds a socket or two; the rest stays for the process), and at least 32."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = count if soft == resource.RLIM_INFINITY else max(_MIN_PARALLEL, soft // 4)
    return max(1, min(count, room))


def run_checks(
    checks: Sequence[Check],
    *,
    states: MutableMapping[str, dict[str, Any]] | None = None,
    deadline: float = 60.0,
    max_parallel: int | None = None,
) -> list[CheckResult]:
    """Run ``checks`` in parallel (at most ``max_parallel`` at a time; by default as many as
    :func:`parallel_limit` gives) and return their results in the same order.

    A check still running at its timeout is abandoned and reported CRITICAL (a thread it ran in
    is a daemon, so it never keeps the process alive); checks still running at ``deadline``
    seconds are CRITICAL, and checks not yet started then are UNKNOWN. ``states`` maps check
    names to their state between runs; only checks that finished have theirs updated.
    """
    if deadline <= 0 or (max_parallel is not None and max_parallel < 1):
        raise ConfigError("the deadline must be above 0 s and max_parallel at least 1")
    names = [check.name for check in checks]
    if len(set(names)) != len(names):
        raise ConfigError("check names must be unique")
    run = _Run(
        checks,
        states if states is not None else {},
        deadline,
        max_parallel if max_parallel is not None else parallel_limit(len(checks)),
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run.on_new_loop()
    # Called from a coroutine (a notebook cell runs in one), which this call blocks as it
    # always has: the run gets a loop of its own in another thread.
    answer: list[list[CheckResult]] = []
    thread = threading.Thread(target=lambda: answer.append(run.on_new_loop()), daemon=True)
    thread.start()
    thread.join()
    if not answer:
        raise RuntimeError("the checks' event loop failed; see the error above")
    return answer[0]


class _DaemonThreads(concurrent.futures.ThreadPoolExecutor):
    """Each call in a new daemon thread: a check, or a host name lookup, that hangs past the
    run never keeps the process alive (a pool's threads are waited for at exit), and never
    waits for a free thread behind hung ones. A ThreadPoolExecutor only because asyncio takes
    no other kind as a loop's default executor (the one its name lookups run in)."""

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> concurrent.futures.Future[_T]:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=work, name="autoops-check", daemon=True).start()
        return future


class _Run:
    def __init__(
        self,
        checks: Sequence[Check],
        states: MutableMapping[str, dict[str, Any]],
        deadline: float,
        limit: int,
    ) -> None:
        self.checks = checks
        self.states = states
        self.deadline = deadline
        self.limit = limit
        self.results: list[CheckResult | None] = [None] * len(checks)
        self.threads = _DaemonThreads()
        #: When each check that started did (time.monotonic()).
        self.started: dict[int, float] = {}
        self.stop_at = 0.0

    def on_new_loop(self) -> list[CheckResult]:
        loop = asyncio.new_event_loop()
        loop.set_default_executor(self.threads)
        loop.set_exception_handler(_loop_trouble)
        try:
            loop.run_until_complete(self._all())
        finally:
            try:
                # An abandoned task was cancelled: a moment to close its sockets, no more.
                leftovers = asyncio.all_tasks(loop)
                for task in leftovers:
                    task.cancel()
                if leftovers:
                    loop.run_until_complete(asyncio.wait(leftovers, timeout=_GRACE))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
        return check_results(result for result in self.results if result is not None)

    async def _all(self) -> None:
        self.stop_at = time.monotonic() + self.deadline
        pending = deque(range(len(self.checks)))
        running: set[asyncio.Task[None]] = set()
        while pending or running:
            while pending and len(running) < self.limit and time.monotonic() < self.stop_at:
                index = pending.popleft()
                name = f"check {self.checks[index].name}"
                running.add(asyncio.create_task(self._one(index), name=name))
            if not running:
                break
            # Every check gives up by the deadline; the grace is for one that, cancelled, would
            # not stop.
            done, running = await asyncio.wait(
                running,
                timeout=max(0.0, self.stop_at + _GRACE - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in done:
                task.result()  # a check's BaseException (SystemExit) ends the run, as it would
            if not done:
                break
        now = time.monotonic()
        for index, check in enumerate(self.checks):
            if self.results[index] is not None:
                continue
            if index in self.started:
                why = f"still running at the overall deadline of {self.deadline:g} s"
                self.results[index] = _abandoned(
                    check,
                    self.started[index],
                    now,
                    f"{why} (check abandoned)",
                    CheckStatus.CRITICAL,
                )
            else:
                self.results[index] = _abandoned(
                    check,
                    now,
                    now,
                    f"not run: the overall deadline of {self.deadline:g} s passed first",
                    CheckStatus.UNKNOWN,
                )

    async def _one(self, index: int) -> None:
        """Run one check, and give up on it at its timeout or the deadline, whichever first."""
        check = self.checks[index]
        state = copy.deepcopy(self.states.get(check.name, {}))
        # Taken when this task first runs, as the check's own timeout in run_async() is: on a
        # loop busy starting many checks that can be a while after the task was made.
        started = self.started[index] = time.monotonic()
        given_up_at = min(started + check.timeout + _GRACE, self.stop_at)
        result: CheckResult | None = None
        if check.measures_async:
            try:
                async with asyncio.timeout(max(0.0, given_up_at - started)):
                    result = await check.run_async(state)
            except TimeoutError:
                pass
        else:
            work = asyncio.get_running_loop().run_in_executor(self.threads, check.run, state)
            await asyncio.wait({work}, timeout=max(0.0, given_up_at - time.monotonic()))
            if work.done():
                result = work.result()
            else:
                work.cancel()  # the thread runs on; its result is dropped
        if result is not None:
            self.results[index] = result
            self.states[check.name] = state
            return
        now = time.monotonic()
        if now >= started + check.timeout + _GRACE:
            why = f"no answer within its timeout of {check.timeout:g} s (check abandoned)"
        else:
            why = f"still running at the overall deadline of {self.deadline:g} s (check abandoned)"
        self.results[index] = _abandoned(check, started, now, why, CheckStatus.CRITICAL)


def _loop_trouble(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # Mostly the task of a check that would not stop when abandoned, dropped with the loop: it
    # belongs in the monitor's log, with the check's name, not as asyncio's dump on stderr.
    task = context.get("task")
    log.warning(
        "%s%s",
        f"{task.get_name()}: " if isinstance(task, asyncio.Task) else "",
        context.get("message", "trouble on the checks' event loop"),
        exc_info=context.get("exception"),
    )


def _abandoned(
    check: Check, started: float, now: float, why: str, status: CheckStatus
) -> CheckResult:
    return CheckResult(
        name=check.name,
        kind=check.kind,
        status=status,
        summary=why,
        duration_seconds=now - started,
        started_at=datetime.now(UTC) - timedelta(seconds=now - started),
    )
