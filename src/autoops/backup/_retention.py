"""Retention with restic's documented semantics (``restic forget``), per source.

``keep_last n`` keeps the n newest backups; ``keep_hourly/daily/weekly/monthly/yearly n`` keep the
newest backup in each of the n newest calendar hours/days/weeks/months/years that have one (UTC;
weeks run Monday to Sunday, ISO weeks); ``keep_within d`` keeps every backup started less than d
before the source's newest one. Rules are ORed: a backup any rule keeps is kept. When a rule
cannot be met (fewer buckets than n), it also keeps the oldest backup, so history reaches as far
back as possible. Two guarantees on top: the newest verified backup of each source is never
removed, and nothing of a source is removed while its newest backup is not verified.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from .._display import html_table
from .._errors import ConfigError
from ._binlogs import ArchivedBinlog
from ._model import Backup

__all__ = ["RetentionDecision", "RetentionPlan", "RetentionPolicy", "parse_duration"]

_DURATION_RE: Final = re.compile(r"(\d+)([wdhm])")
_UNITS: Final = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}


def parse_duration(text: str) -> timedelta:
    """``"7d"``, ``"2w3d"``, ``"36h"``, ``"90m"`` -> timedelta (weeks, days, hours, minutes)."""
    cleaned = text.strip().lower()
    if not cleaned or _DURATION_RE.sub("", cleaned):
        raise ConfigError(f"bad duration {text!r}: use a number and a unit, like 7d, 2w3d or 36h")
    total = timedelta()
    for amount, unit in _DURATION_RE.findall(cleaned):
        total += timedelta(**{_UNITS[unit]: int(amount)})
    return total


def _hour(moment: datetime) -> object:
    return (moment.year, moment.month, moment.day, moment.hour)


def _day(moment: datetime) -> object:
    return (moment.year, moment.month, moment.day)


def _week(moment: datetime) -> object:
    iso = moment.isocalendar()
    return (iso.year, iso.week)


def _month(moment: datetime) -> object:
    return (moment.year, moment.month)


def _year(moment: datetime) -> object:
    return moment.year


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Which backups to keep; counts of 0 (and ``keep_within=None``) turn a rule off. At least
    one rule must be on, so an empty policy never deletes everything."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: timedelta | None = None

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}")
        if not isinstance(self.keep_yearly, int) or self.keep_yearly < 0:
            raise ConfigError(f"keep_yearly must be a whole number >= 0, got {self.keep_yearly!r}")
        if self.keep_within is not None and self.keep_within <= timedelta():
            raise ConfigError("keep_within must be a positive duration")
        if not self.rules() and self.keep_within is None:
            raise ConfigError(
                "the retention policy keeps nothing: set at least one of keep_last, keep_hourly, "
                "keep_daily, keep_weekly, keep_monthly, keep_yearly or keep_within"
            )

    def rules(self) -> list[tuple[str, int, Callable[[datetime], object] | None]]:
        """The counted rules that are on: (name, count, bucket function; None for last)."""
        table: list[tuple[str, int, Callable[[datetime], object] | None]] = [
            ("last", self.keep_last, None),
            ("hourly", self.keep_hourly, _hour),
            ("daily", self.keep_daily, _day),
            ("weekly", self.keep_weekly, _week),
            ("monthly", self.keep_monthly, _month),
            ("yearly", self.keep_yearly, _year),
        ]
        return [rule for rule in table if rule[1] > 0]

    def plan(self, backups: Iterable[Backup]) -> RetentionPlan:
        """Decide, per source, which backups to keep and why (nothing is deleted here)."""
        groups: dict[str, list[Backup]] = {}
        for backup in backups:
            groups.setdefault(backup.source, []).append(backup)
        decisions: list[RetentionDecision] = []
        for source in sorted(groups):
            decisions += self._plan_source(groups[source])
        return RetentionPlan(self, decisions)

    def _plan_source(self, backups: Sequence[Backup]) -> list[RetentionDecision]:
        newest_first = sorted(backups, key=lambda b: (b.started_at, b.id), reverse=True)
        reasons: dict[str, list[str]] = {backup.id: [] for backup in newest_first}
        counted = [backup for backup in newest_first if backup.status != "corrupt"]
        for backup in newest_first:
            if backup.status == "corrupt":
                reasons[backup.id].append("corrupt: not counted by the rules, remove it by hand")
        if counted and self.keep_within is not None:
            cutoff = counted[0].started_at - self.keep_within
            for backup in counted:
                if backup.started_at > cutoff:
                    reasons[backup.id].append(f"within {self.keep_within}")
        for name, count, bucket in self.rules():
            remaining = count
            last_bucket: object = object()
            for position, backup in enumerate(counted):
                if remaining == 0:
                    break
                value = position if bucket is None else bucket(backup.started_at)
                is_oldest = position == len(counted) - 1
                if value != last_bucket or is_oldest:
                    last_bucket = value
                    remaining -= 1
                    reasons[backup.id].append(name)
        verified = [b for b in counted if b.ok and b.verified_at is not None]
        if verified:
            reasons[verified[0].id].append("newest verified")
        held = bool(newest_first) and (
            not newest_first[0].ok or newest_first[0].verified_at is None
        )
        decisions = []
        for backup in newest_first:
            why = reasons[backup.id]
            if held and not why:
                why = ["held: the newest backup of this source is not verified"]
            decisions.append(RetentionDecision(backup, bool(why), tuple(dict.fromkeys(why))))
        return decisions


@dataclass(frozen=True, slots=True)
class RetentionDecision:
    """One backup's fate: ``keep`` and the rules that keep it (empty when it is removed)."""

    backup: Backup
    keep: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class RetentionPlan:
    """What a policy keeps and removes, newest first per source; print it for a dry run."""

    policy: RetentionPolicy
    decisions: list[RetentionDecision] = field(default_factory=list)
    binlogs: list[ArchivedBinlog] = field(default_factory=list)
    """Archived binary logs older than every kept full backup's position: removed too."""

    @property
    def keep(self) -> list[Backup]:
        """Backups the policy keeps."""
        return [d.backup for d in self.decisions if d.keep]

    @property
    def remove(self) -> list[Backup]:
        """Backups the policy removes."""
        return [d.backup for d in self.decisions if not d.keep]

    def lines(self) -> list[str]:
        """One line per backup: keep/remove, id, start time, reasons."""
        return [
            f"{'keep  ' if d.keep else 'remove'} {d.backup.id}  "
            f"{d.backup.started_at.isoformat(timespec='seconds')}  {', '.join(d.reasons)}"
            for d in self.decisions
        ] + [
            f"remove binlog {a.server_file} of {a.source}  before every kept backup's position"
            for a in self.binlogs
        ]

    def __repr__(self) -> str:
        return (
            f"RetentionPlan(keep={len(self.keep)}, remove={len(self.remove)}, "
            f"remove_binlogs={len(self.binlogs)})"
        )

    def _repr_html_(self) -> str:
        return html_table(
            "Retention plan",
            [("keep", len(self.keep)), ("remove", len(self.remove))],
            columns=["action", "backup", "started", "reasons"],
            body=[
                [
                    "keep" if d.keep else "remove",
                    d.backup.id,
                    d.backup.started_at.isoformat(timespec="seconds"),
                    ", ".join(d.reasons),
                ]
                for d in self.decisions
            ],
        )
