"""Run many checks at once: each in a daemon thread, each abandoned at its own timeout, all
bounded by an overall deadline, so one hung target never holds up the others or the process."""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import MutableMapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from .._errors import ConfigError
from ._check import Check
from ._result import CheckResult, check_results
from ._status import CheckStatus

__all__ = ["run_checks"]

#: Grace after a check's timeout before it is abandoned, so its own timeout error (which says
#: more) has the chance to arrive first.
_GRACE: Final = 0.25


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


def run_checks(
    checks: Sequence[Check],
    *,
    states: MutableMapping[str, dict[str, Any]] | None = None,
    deadline: float = 60.0,
    max_parallel: int = 32,
) -> list[CheckResult]:
    """Run ``checks`` in parallel (at most ``max_parallel`` at a time) and return their results
    in the same order.

    A check still running at its timeout is abandoned and reported CRITICAL (its thread is a
    daemon, so it never keeps the process alive); checks still running at ``deadline`` seconds
    are CRITICAL, and checks not yet started then are UNKNOWN. ``states`` maps check names to
    their state between runs; only checks that finished have theirs updated.
    """
    if deadline <= 0 or max_parallel < 1:
        raise ConfigError("the deadline must be above 0 s and max_parallel at least 1")
    names = [check.name for check in checks]
    if len(set(names)) != len(names):
        raise ConfigError("check names must be unique")
    states = states if states is not None else {}
    started_all = time.monotonic()
    stop_at = started_all + deadline
    finished: queue.Queue[tuple[int, CheckResult, dict[str, Any]]] = queue.Queue()
    results: list[CheckResult | None] = [None] * len(checks)
    running: dict[int, float] = {}
    pending = list(range(len(checks)))
    pending.reverse()

    def work(index: int, state: dict[str, Any]) -> None:
        finished.put((index, checks[index].run(state), state))

    while pending or running:
        now = time.monotonic()
        while pending and len(running) < max_parallel and now < stop_at:
            index = pending.pop()
            state = copy.deepcopy(states.get(checks[index].name, {}))
            running[index] = time.monotonic()
            threading.Thread(
                target=work, args=(index, state), name=f"check-{checks[index].name}", daemon=True
            ).start()
        if not running:
            break
        wake = min(
            stop_at,
            *(started + checks[index].timeout + _GRACE for index, started in running.items()),
        )
        try:
            index, result, state = finished.get(timeout=max(0.0, wake - time.monotonic()))
        except queue.Empty:
            pass
        else:
            if index in running:
                del running[index]
                results[index] = result
                states[checks[index].name] = state
        now = time.monotonic()
        for index, started in list(running.items()):
            check = checks[index]
            if now >= started + check.timeout + _GRACE:
                results[index] = _abandoned(
                    check,
                    started,
                    now,
                    f"no answer within its timeout of {check.timeout:g} s (check abandoned)",
                    CheckStatus.CRITICAL,
                )
                del running[index]
            elif now >= stop_at:
                results[index] = _abandoned(
                    check,
                    started,
                    now,
                    f"still running at the overall deadline of {deadline:g} s (check abandoned)",
                    CheckStatus.CRITICAL,
                )
                del running[index]
    for index in pending:
        results[index] = _abandoned(
            checks[index],
            time.monotonic(),
            time.monotonic(),
            f"not run: the overall deadline of {deadline:g} s passed first",
            CheckStatus.UNKNOWN,
        )
    return check_results(result for result in results if result is not None)
