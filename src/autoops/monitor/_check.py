"""The base of every check: thresholds by metric name, findings, error-to-status mapping."""

from __future__ import annotations

import abc
import asyncio
import logging
import re
import socket
import time
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from .._errors import AutoOpsError, ConfigError
from ._range import ThresholdRange, Thresholds
from ._result import CheckMetric, CheckResult, without_semicolons
from ._status import CheckStatus

__all__ = ["Check", "CheckFindings", "DefaultThresholds", "ThresholdSpec"]

log: Final = logging.getLogger("autoops.monitor")
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")

#: Thresholds as written in code or config: a metric name to a (warning, critical) pair of range
#: texts, or ready-made :class:`Thresholds`.
ThresholdSpec = Mapping[str, Thresholds | tuple[str | float | None, str | float | None]]


#: A check's threshold-able metric names with their default (warning, critical) range texts.
DefaultThresholds = Mapping[str, tuple[str | None, str | None]]


class CheckFindings:
    """What a check found while it ran: metrics, problems and plain notes, plus ``state``, the
    check's own memory between runs. A :class:`Check` subclass records into it in
    :meth:`Check.measure`."""

    def __init__(self, thresholds: Mapping[str, Thresholds], state: MutableMapping[str, Any]):
        self._thresholds = thresholds
        self.state = state
        self.metrics: list[CheckMetric] = []
        self.problems: list[tuple[CheckStatus, str]] = []
        self.notes: list[str] = []

    def metric(
        self,
        label: str,
        value: float,
        unit: str = "",
        *,
        text: str | None,
        threshold: str | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
        series: str = "",
        labels: Mapping[str, str] | None = None,
        scale: float = 1.0,
    ) -> CheckMetric:
        """Record a metric judged by the thresholds named ``threshold`` (default: ``label``);
        ``text`` is how the summary describes it (None: only mentioned when it breaches)."""
        limits = self._thresholds.get(threshold or label, Thresholds())
        metric = CheckMetric(
            label=label,
            value=value,
            unit=unit,
            warning=limits.warning,
            critical=limits.critical,
            minimum=minimum,
            maximum=maximum,
            series=series,
            labels=dict(labels or {}),
            scale=scale,
        )
        self.metrics.append(metric)
        status = metric.status
        if status is CheckStatus.OK:
            if text is not None:
                self.notes.append(text)
        else:
            level, breached = (
                ("critical", limits.critical)
                if status is CheckStatus.CRITICAL
                else ("warning", limits.warning)
            )
            described = text if text is not None else metric.perfdata()
            self.problems.append((status, f"{described} ({level} {breached})"))
        return metric

    def problem(self, status: CheckStatus, text: str) -> None:
        """Record something wrong that is not a number against a threshold."""
        self.problems.append((status, text))

    def note(self, text: str) -> None:
        """Record a fact for the summary."""
        self.notes.append(text)

    def counter_rate(self, key: str, value: float, now: float | None = None) -> float | None:
        """Per-second rate of a server counter since the previous run (kept in the state);
        None on the first run or after the counter went backwards (a server restart)."""
        moment = time.time() if now is None else now
        previous = self.state.get(key)
        self.state[key] = [value, moment]
        if not isinstance(previous, list) or len(previous) != 2:
            return None
        before, then = float(previous[0]), float(previous[1])
        elapsed = moment - then
        if elapsed <= 0 or value < before:
            return None
        return (value - before) / elapsed

    @property
    def status(self) -> CheckStatus:
        """The worst status among the problems recorded (OK when there are none)."""
        return CheckStatus.worst(status for status, _ in self.problems)

    def summary(self) -> str:
        """One line: the problems, most serious first, then the notes; without ``;``, which
        Nagios rewrites to ``:`` (autoops's own and drivers' messages use it)."""
        ordered = sorted(self.problems, key=lambda item: -item[0].severity)
        text = ", ".join([text for _, text in ordered] + self.notes) or "no findings"
        return without_semicolons(text)


class Check(abc.ABC):
    """A health check: :meth:`run` always returns a :class:`CheckResult`, never raises.

    A target that cannot be reached, refuses us or times out is CRITICAL; a check that cannot run
    at all (bad configuration, an internal error) is UNKNOWN. ``timeout`` (seconds) bounds every
    network wait of one run. ``thresholds`` maps metric names (see ``THRESHOLDS`` of each check)
    to (warning, critical) range texts: None keeps that level's default, ``""`` removes it.
    """

    kind: ClassVar[str] = "check"
    #: Threshold-able metric names with their default (warning, critical) ranges.
    THRESHOLDS: ClassVar[DefaultThresholds] = {}

    def __init__(
        self, name: str, *, timeout: float = 10.0, thresholds: ThresholdSpec | None = None
    ) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(
                f"bad check name {name!r}: use letters, digits and _ . : - (no spaces)"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"check {name}: timeout must be a number of seconds above 0")
        self.name = name
        self.timeout = float(timeout)
        self.thresholds = self._merge_thresholds(thresholds or {})

    def _merge_thresholds(self, given: ThresholdSpec) -> dict[str, Thresholds]:
        merged = {
            metric: Thresholds.parse(warning, critical)
            for metric, (warning, critical) in self.THRESHOLDS.items()
        }
        for metric, value in given.items():
            if metric not in self.THRESHOLDS:
                known = ", ".join(sorted(self.THRESHOLDS)) or "none"
                raise ConfigError(
                    f"check {self.name}: unknown threshold {metric!r} for a {self.kind} check; "
                    f"known: {known}"
                )
            if isinstance(value, Thresholds):
                merged[metric] = value
                continue
            try:
                warning, critical = value
            except (TypeError, ValueError):
                raise ConfigError(
                    f"check {self.name}: threshold {metric!r} must be a (warning, critical) pair"
                ) from None
            default = merged[metric]
            try:
                merged[metric] = Thresholds(
                    warning=_level(warning, default.warning),
                    critical=_level(critical, default.critical),
                )
            except ConfigError as exc:
                raise ConfigError(f"check {self.name}, threshold {metric!r}: {exc}") from None
        return merged

    @property
    def target(self) -> str:
        """What the check looks at (a URL, ``host:port``, a path), named in its failures; no
        password ever."""
        return ""

    @abc.abstractmethod
    def measure(self, findings: CheckFindings) -> None:
        """Look at the target and record metrics, problems and notes in ``findings``."""

    @property
    def measures_async(self) -> bool:
        """True where :meth:`measure_async` measures without blocking: :func:`run_checks` then
        runs the check on its event loop instead of in a thread of its own."""
        return False

    async def measure_async(self, findings: CheckFindings) -> None:
        """:meth:`measure` without blocking, for checks whose :attr:`measures_async` is True;
        it waits on the network with ``await`` only, each wait bounded by ``timeout``."""
        raise NotImplementedError(f"{type(self).__name__} measures in a thread (measure())")

    def run(self, state: MutableMapping[str, Any] | None = None) -> CheckResult:
        """Run the check once; ``state`` is this check's own memory between runs (for rates)."""
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        findings = CheckFindings(self.thresholds, state if state is not None else {})
        try:
            self.measure(findings)
        except Exception as exc:
            self._failed(findings, exc)
        return self._result(findings, started_at, started)

    async def run_async(self, state: MutableMapping[str, Any] | None = None) -> CheckResult:
        """:meth:`run` on an event loop, through :meth:`measure_async`."""
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        findings = CheckFindings(self.thresholds, state if state is not None else {})
        try:
            # The whole of it, not each wait: on a loop busy with many checks the waits start
            # late, and the runner gives up on a check at its timeout in any case.
            async with asyncio.timeout(self.timeout):
                await self.measure_async(findings)
        except TimeoutError as exc:
            self._failed(findings, exc if str(exc) else TimeoutError(_no_answer(self.timeout)))
        except Exception as exc:
            self._failed(findings, exc)
        return self._result(findings, started_at, started)

    def _failed(self, findings: CheckFindings, exc: Exception) -> None:
        if isinstance(exc, ConfigError):
            findings.problem(CheckStatus.UNKNOWN, f"cannot run: {self._at_target(str(exc))}")
        elif isinstance(exc, TimeoutError | AutoOpsError | OSError):
            findings.problem(CheckStatus.CRITICAL, self._at_target(_describe(exc)))
        else:
            log.error("check %s failed internally", self.name, exc_info=exc)
            findings.problem(
                CheckStatus.UNKNOWN, f"check failed internally: {type(exc).__name__}: {exc}"
            )

    def _result(self, findings: CheckFindings, started_at: datetime, started: float) -> CheckResult:
        return CheckResult(
            name=self.name,
            kind=self.kind,
            status=findings.status,
            summary=findings.summary(),
            metrics=tuple(findings.metrics),
            duration_seconds=time.perf_counter() - started,
            started_at=started_at,
        )

    def _at_target(self, text: str) -> str:
        target = self.target
        return f"{target}: {text}" if target and target not in text else text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, timeout={self.timeout})"


def _level(value: str | float | None, default: ThresholdRange | None) -> ThresholdRange | None:
    """None keeps the default range, ``""`` removes it, anything else is parsed."""
    if value is None:
        return default
    if value == "":
        return None
    return ThresholdRange.parse(value)


def _no_answer(timeout: float) -> str:
    return f"no answer within {timeout:g} s"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"timed out ({exc})" if str(exc) else "timed out"
    if isinstance(exc, AutoOpsError):
        return str(exc).splitlines()[0]
    return f"{type(exc).__name__}: {exc}"
