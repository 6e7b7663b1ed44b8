"""Retry policies: bounded, jittered, and only for failures a classifier calls transient.

The defaults follow stamina's reasoning: a bounded number of attempts *and* a total time budget,
exponential backoff with jitter so a fleet of cron jobs does not retry in lock step. The first
attempt runs outside tenacity, so a call that succeeds pays nothing for its policy.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NoReturn, TypeVar

import tenacity

from ._errors import ConfigError

__all__ = [
    "Failure",
    "RetryEvent",
    "RetryPolicy",
    "add_retry_hook",
    "remove_retry_hook",
    "retry_totals",
    "set_testing",
]

T = TypeVar("T")
log: Final = logging.getLogger("autoops.retry")


@dataclass(frozen=True, slots=True)
class Failure:
    """How a classifier judged an exception: retry it or not, and which error to raise."""

    transient: bool
    error_type: type[Exception]
    message: str
    #: The exception is already the one to raise (an AutoOpsError from an inner layer).
    passthrough: bool = False

    def build(self, suffix: str = "") -> Exception:
        """The autoops error to raise, with ``suffix`` (such as "gave up after ...") appended."""
        return self.error_type(self.message + suffix)


Classifier = Callable[[BaseException], Failure]


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """What a retry hook is told before each wait: what failed, where, and what comes next."""

    operation: str
    where: str
    attempt: int
    next_wait: float
    error_type: str


@dataclass(frozen=True, slots=True)
class _TestingMode:
    active: bool = False
    attempts: int | None = None


_testing = _TestingMode()
_hooks: list[Callable[[RetryEvent], None]] = []
_totals: Counter[str] = Counter()
_totals_lock = threading.Lock()


def set_testing(enabled: bool, *, attempts: int | None = None) -> None:
    """Turn retry waits off (``enabled=True``) for your own test suite, optionally capping attempts.

    With ``attempts=1`` nothing is retried at all; with ``None`` the policies' attempts stand but
    no call sleeps. ``set_testing(False)`` restores normal behaviour.
    """
    global _testing  # noqa: PLW0603 - one process-wide switch is the point
    if attempts is not None and attempts < 1:
        raise ConfigError(f"set_testing attempts must be at least 1, got {attempts}")
    _testing = _TestingMode(active=enabled, attempts=attempts if enabled else None)


def add_retry_hook(hook: Callable[[RetryEvent], None]) -> None:
    """Call ``hook`` before every retry wait, for metrics or structured logs."""
    _hooks.append(hook)


def remove_retry_hook(hook: Callable[[RetryEvent], None]) -> None:
    """Stop calling a hook added with :func:`add_retry_hook`."""
    _hooks.remove(hook)


def retry_totals() -> dict[str, int]:
    """How many retries each operation has needed in this process, e.g. ``{"mysql query": 3}``."""
    with _totals_lock:
        return dict(_totals)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to retry a transient failure.

    ``attempts`` bounds the tries (1 means no retry), ``timeout`` bounds the total time in seconds
    spent retrying, and the wait before try *n* is ``min(wait_initial * 2**(n-1) + U(0, jitter),
    wait_max)``. Use :meth:`none` for a policy that never retries.
    """

    attempts: int = 10
    timeout: float = 45.0
    wait_initial: float = 0.1
    wait_max: float = 5.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigError(
                f"RetryPolicy attempts must be a whole number >= 1, got {self.attempts!r}"
            )
        for name in ("timeout", "wait_initial", "wait_max", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"RetryPolicy {name} must be a number >= 0, got {value!r}")
        if self.wait_max < self.wait_initial:
            raise ConfigError(
                f"RetryPolicy wait_max ({self.wait_max}) is below "
                f"wait_initial ({self.wait_initial})"
            )

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that tries once and never retries."""
        return cls(attempts=1, timeout=0.0, wait_initial=0.0, wait_max=0.0, jitter=0.0)

    @classmethod
    def from_mapping(cls, values: dict[str, object] | None) -> RetryPolicy:
        """Build a policy from a ``[retry]`` settings table; unknown keys are a ConfigError."""
        if not values:
            return cls()
        known = {"attempts", "timeout", "wait_initial", "wait_max", "jitter"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown retry setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)  # type: ignore[arg-type]

    def _wait(self, state: tenacity.RetryCallState) -> float:
        backoff = self.wait_initial * 2 ** (state.attempt_number - 1)
        return float(min(backoff + random.uniform(0, self.jitter), self.wait_max))

    @property
    def effective_attempts(self) -> int:
        """Attempts after the testing switch's cap, if any."""
        cap = _testing.attempts
        return min(self.attempts, cap) if cap is not None else self.attempts

    def call(
        self,
        fn: Callable[[], T],
        *,
        classify: Classifier,
        operation: str,
        where: str,
    ) -> T:
        """Run ``fn``; retry it while ``classify`` calls its failures transient and the policy
        allows; raise the classified :class:`AutoOpsError` (driver exception chained) otherwise."""
        started = time.monotonic()
        try:
            return fn()
        except Exception as exc:
            first_error = exc
        failure = classify(first_error)
        attempts = self.effective_attempts
        if not failure.transient or attempts <= 1:
            if failure.passthrough:
                raise first_error
            raise failure.build() from first_error
        return self._retry(fn, first_error, classify, operation, where, started, attempts)

    def _retry(
        self,
        fn: Callable[[], T],
        first_error: Exception,
        classify: Classifier,
        operation: str,
        where: str,
        started: float,
        attempts: int,
    ) -> T:
        pending = [first_error]

        def replay_then_call() -> T:
            # tenacity counts the attempt that already failed as its first one.
            if pending:
                raise pending.pop()
            return fn()

        def before_sleep(state: tenacity.RetryCallState) -> None:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            event = RetryEvent(
                operation=operation,
                where=where,
                attempt=state.attempt_number,
                next_wait=wait,
                error_type=type(error).__name__,
            )
            with _totals_lock:
                _totals[operation] += 1
            log.warning(
                "%s on %s failed (%s), attempt %d of %d; retrying in %.2f s",
                operation,
                where,
                classify(error).message if error else "?",
                state.attempt_number,
                attempts,
                wait,
            )
            for hook in list(_hooks):
                hook(event)

        testing = _testing.active
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_after_delay(self.timeout),
            wait=tenacity.wait_none() if testing else self._wait,
            retry=tenacity.retry_if_exception(lambda error: classify(error).transient),
            before_sleep=before_sleep,
            sleep=_no_sleep if testing else time.sleep,
            reraise=True,
        )
        try:
            return retrying(replay_then_call)
        except Exception as exc:
            failure = classify(exc)
            if not failure.transient:
                if failure.passthrough:
                    raise
                raise failure.build() from exc
            tries = retrying.statistics.get("attempt_number", attempts)
            elapsed = time.monotonic() - started
            _raise(failure, f" (gave up after {tries} attempts over {elapsed:.1f} s)", exc)


def _raise(failure: Failure, suffix: str, cause: BaseException) -> NoReturn:
    raise failure.build(suffix) from cause


def _no_sleep(_seconds: float) -> None:
    return None
