"""Nagios threshold ranges: ``10``, ``10:``, ``~:10``, ``10:20`` and ``@10:20``.

The grammar is the Monitoring Plugins one: ``[@]start:end`` with inclusive ends, ``start``
defaulting to 0 when there is no colon, an empty ``end`` meaning +infinity and ``~`` as ``start``
meaning -infinity. A value alerts when it lies *outside* the range, or *inside* it with ``@``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from .._errors import ConfigError
from ._status import CheckStatus

__all__ = ["ThresholdRange", "Thresholds"]

_NUMBER: Final = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_RANGE_RE: Final = re.compile(
    rf"^(?P<inside>@)?(?:(?P<start>~|{_NUMBER})?(?P<colon>:))?(?P<end>{_NUMBER})?$"
)
_GRAMMAR: Final = "use N, N:, ~:N, N:M or @N:M (for example 80, 10:, ~:5, 10:20, @10:20)"


def plain_number(value: float) -> str:
    """``value`` in plain decimal, never with an exponent (``0.00005``, not ``5e-05``): the
    range grammar, Nagios's and ours, has no exponents. Exact to the float's shortest repr."""
    if value.is_integer():
        return str(int(value))
    return format(Decimal(repr(value)), "f")


@dataclass(frozen=True, slots=True)
class ThresholdRange:
    """One parsed threshold range; :meth:`alerts` says whether a value breaches it."""

    start: float = 0.0
    end: float = math.inf
    inside: bool = False

    def __post_init__(self) -> None:
        if (
            math.isnan(self.start)
            or math.isnan(self.end)
            or self.start == math.inf
            or (self.end == -math.inf)
        ):
            raise ConfigError("a threshold range's start must be below +inf and its end above -inf")
        if self.start > self.end:
            raise ConfigError(f"threshold range {self} has its start above its end; {_GRAMMAR}")

    @classmethod
    def parse(cls, text: str | int | float) -> ThresholdRange:
        """Parse ``text`` in the Nagios range grammar; anything else is a :class:`ConfigError`."""
        if isinstance(text, bool) or not isinstance(text, str | int | float):
            raise ConfigError(f"a threshold must be text such as '80' or '10:20', got {text!r}")
        raw = str(text).strip()
        match = _RANGE_RE.match(raw)
        if match is None or (match.group("start") is None and match.group("end") is None):
            raise ConfigError(f"malformed threshold {str(text)!r}; {_GRAMMAR}")
        start_text = match.group("start")
        end_text = match.group("end")
        if match.group("colon") is None or start_text is None:
            start = 0.0
        elif start_text == "~":
            start = -math.inf
        else:
            start = float(start_text)
        end = float(end_text) if end_text is not None else math.inf
        if start > end:
            raise ConfigError(f"threshold {raw!r} has its start above its end; {_GRAMMAR}")
        return cls(start=start, end=end, inside=match.group("inside") is not None)

    def alerts(self, value: float) -> bool:
        """True when ``value`` breaches the range (outside it, or inside it with ``@``)."""
        within = self.start <= value <= self.end
        return within if self.inside else not within

    def __str__(self) -> str:
        prefix = "@" if self.inside else ""
        end = "" if math.isinf(self.end) else plain_number(self.end)
        if self.start == 0 and not self.inside and end:
            return end
        start = "~" if math.isinf(self.start) else plain_number(self.start)
        return f"{prefix}{start}:{end}"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A warning and a critical range for one metric; either may be absent."""

    warning: ThresholdRange | None = None
    critical: ThresholdRange | None = None

    @classmethod
    def parse(
        cls, warning: str | int | float | None = None, critical: str | int | float | None = None
    ) -> Thresholds:
        """Build from range texts such as ``Thresholds.parse("80", "90")``."""
        return cls(
            warning=ThresholdRange.parse(warning) if warning is not None else None,
            critical=ThresholdRange.parse(critical) if critical is not None else None,
        )

    def evaluate(self, value: float) -> CheckStatus:
        """CRITICAL if the critical range alerts, else WARNING if the warning one does, else OK."""
        if self.critical is not None and self.critical.alerts(value):
            return CheckStatus.CRITICAL
        if self.warning is not None and self.warning.alerts(value):
            return CheckStatus.WARNING
        return CheckStatus.OK
