"""What a check says: a status, a one-line summary and metrics with units and thresholds."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from .._deprecation import renamed
from .._display import Numeric, ResultList, format_quantity, format_seconds, html_table
from ._range import ThresholdRange, Thresholds, plain_number
from ._status import CheckStatus

__all__ = ["CheckMetric", "CheckResult", "check_results"]


#: Perfdata units of measure the Monitoring Plugins guidelines allow, and their Prometheus form.
UNITS: Final = frozenset({"", "s", "ms", "us", "%", "B", "KB", "MB", "TB", "c"})


@dataclass(frozen=True, slots=True)
class CheckMetric:
    """One measured value: ``label`` and ``unit`` as in perfdata (``s``, ``%``, ``B``, ``c`` or
    none), its warning/critical ranges, and optional ``minimum``/``maximum``.

    ``series`` and ``labels`` name it for Prometheus (``series`` defaults to ``label``), for
    example label ``"disk /var"`` is series ``"disk_used"`` with ``{"mount": "/var"}``;
    ``scale`` converts a unitless value to the base unit its series names (days to seconds).
    """

    label: str
    value: float
    unit: str = ""
    warning: ThresholdRange | None = None
    critical: ThresholdRange | None = None
    minimum: float | None = None
    maximum: float | None = None
    series: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit {self.unit!r} of metric {self.label!r} is not a perfdata unit")
        if not self.label or "=" in self.label:
            raise ValueError(f"metric label {self.label!r} must be non-empty and have no '='")

    @property
    def status(self) -> CheckStatus:
        """What the thresholds say about the value."""
        return Thresholds(self.warning, self.critical).evaluate(self.value)

    def display(self) -> Numeric:
        """The value for people: ``34.3 ms``, ``7.2 MiB``, ``12.5%``."""
        return Numeric(format_quantity(self.value, self.unit))

    def perfdata(self) -> str:
        """``'label'=value[UOM];[warn];[crit];[min];[max]`` with trailing empty fields dropped."""
        label = self.label.replace("'", "''")
        fields = [
            str(self.warning) if self.warning is not None else "",
            str(self.critical) if self.critical is not None else "",
            format_number(self.minimum) if self.minimum is not None else "",
            format_number(self.maximum) if self.maximum is not None else "",
        ]
        while fields and not fields[-1]:
            fields.pop()
        text = f"'{label}'={format_number(self.value)}{self.unit}"
        return ";".join([text, *fields])


def format_number(value: float) -> str:
    """A number as perfdata wants it: plain decimal, no exponent, no trailing zeros."""
    if isinstance(value, int) or (math.isfinite(value) and float(value).is_integer()):
        return str(int(value))
    if not math.isfinite(value):
        raise ValueError(f"perfdata cannot carry {value!r}")
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in {"", "0", "-0"}:
        # Below a millionth: every digit rather than a rounded 0 (and never an exponent).
        return plain_number(value) if value else "0"
    return text


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check run: ``status``, a one-line ``summary``, ``metrics``, how long it
    took, what remediation (if any) it triggered, and (when a :class:`~autoops.Monitor` keeps
    state) when the check was last OK."""

    name: str
    kind: str
    status: CheckStatus
    summary: str
    metrics: tuple[CheckMetric, ...] = ()
    duration_seconds: float = 0.0
    started_at: datetime | None = None
    remediation: str | None = None
    last_ok_at: datetime | None = None

    @property
    def ok(self) -> bool:
        """True when the status is OK."""
        return self.status == CheckStatus.OK

    @property
    def duration(self) -> float:
        """Deprecated: :attr:`duration_seconds`."""
        renamed("CheckResult.duration", "CheckResult.duration_seconds")
        return self.duration_seconds

    def nagios_line(self) -> str:
        """``NAME STATUS: summary | perfdata``, the first line a Nagios plugin prints."""
        line = f"{self.name} {self.status.name}: {self.summary}"
        if self.remediation:
            line += f" [remediation: {self.remediation}]"
        line = without_semicolons(line.replace("|", "/").replace("\n", " "))
        perfdata = " ".join(metric.perfdata() for metric in self.metrics)
        return f"{line} | {perfdata}" if perfdata else line

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of everything in the result."""
        return {
            "name": self.name,
            "kind": self.kind,
            "status": self.status.name,
            "exit_code": int(self.status),
            "summary": self.summary,
            "duration_seconds": round(self.duration_seconds, 6),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "remediation": self.remediation,
            "last_ok_at": self.last_ok_at.isoformat() if self.last_ok_at else None,
            "metrics": [
                {
                    "label": metric.label,
                    "value": metric.value,
                    "unit": metric.unit,
                    "warning": str(metric.warning) if metric.warning is not None else None,
                    "critical": str(metric.critical) if metric.critical is not None else None,
                    "min": metric.minimum,
                    "max": metric.maximum,
                    "status": metric.status.name,
                }
                for metric in self.metrics
            ],
        }

    def __repr__(self) -> str:
        return (
            f"CheckResult({self.name!r}, {self.status.name}, {self.summary!r}, "
            f"{len(self.metrics)} metrics, {format_seconds(self.duration_seconds)})"
        )

    def _repr_html_(self) -> str:
        rows: list[tuple[str, object]] = [
            ("status", self.status.name),
            ("summary", self.summary),
            ("kind", self.kind),
            ("duration", Numeric(format_seconds(self.duration_seconds))),
        ]
        if self.remediation:
            rows.append(("remediation", self.remediation))
        return html_table(
            f"check {self.name}",
            rows,
            columns=["metric", "value", "warning", "critical", "status"],
            body=[
                (
                    metric.label,
                    metric.display(),
                    metric.warning or "",
                    metric.critical or "",
                    metric.status.name,
                )
                for metric in self.metrics
            ],
        )


def check_results(results: Iterable[CheckResult]) -> ResultList[CheckResult]:
    """``results`` as a list that shows as one table (check, status, summary, metrics)."""
    return ResultList(
        results,
        title="check results",
        columns=["check", "status", "summary", "metrics", "duration"],
        row=lambda result: (
            result.name,
            result.status.name,
            result.summary,
            ", ".join(f"{metric.label} {metric.display()}" for metric in result.metrics),
            Numeric(format_seconds(result.duration_seconds)),
        ),
    )


def without_semicolons(text: str) -> str:
    """``text`` with each ``;`` made a ``,``: Nagios rewrites ``;`` in a plugin's output."""
    return text.replace(";", ",")
