"""A check's verdict, valued as the Monitoring Plugins exit codes."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final

__all__ = ["CheckStatus"]


class CheckStatus(enum.IntEnum):
    """A check's verdict, valued as the Monitoring Plugins exit codes."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @staticmethod
    def worst(statuses: Iterable[CheckStatus]) -> CheckStatus:
        """The most serious status: CRITICAL, then WARNING, then UNKNOWN, then OK.

        UNKNOWN (3) ranks below CRITICAL (2) and WARNING (1) although its number is higher,
        as in the Monitoring Plugins' ``max_state_alt``: a check that could not run must not hide
        one that found a real problem. No statuses at all is OK.
        """
        return max(statuses, key=lambda status: status.severity, default=CheckStatus.OK)

    @property
    def severity(self) -> int:
        """Rank for :meth:`worst`: OK 0, UNKNOWN 1, WARNING 2, CRITICAL 3."""
        return _SEVERITY[self]


_SEVERITY: Final = {
    CheckStatus.OK: 0,
    CheckStatus.UNKNOWN: 1,
    CheckStatus.WARNING: 2,
    CheckStatus.CRITICAL: 3,
}
