"""Freshness checks over what other autoops jobs record: backups in a catalogue, and the
checkpoint of a cache sync.

Both read through small protocols rather than the backup and sync packages, so any object with
the right attributes can be checked (and the monitor does not import what it watches).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import ClassVar, Protocol

from .._errors import ConfigError
from ._check import Check, CheckFindings, DefaultThresholds, ThresholdSpec
from ._status import CheckStatus

__all__ = [
    "BackupCatalogue",
    "BackupFreshnessCheck",
    "BackupRecord",
    "SyncLagCheck",
    "SyncProgress",
]


class BackupRecord(Protocol):
    """What the backup check reads of one backup (``autoops.Backup`` has these)."""

    @property
    def id(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def verified_at(self) -> datetime | None: ...


class BackupCatalogue(Protocol):
    """Anything that lists backups, newest or not, optionally of one source
    (``autoops.Backuper`` is one)."""

    def list(self, source: str | None = None) -> Sequence[BackupRecord]: ...


class SyncProgress(Protocol):
    """What the sync check reads (``autoops.SyncStatus`` has these): when the last successful
    pass finished, and the time as of which the cache holds every change (the start of that
    pass's read); None when no pass has succeeded."""

    @property
    def last_success_at(self) -> datetime | None: ...
    @property
    def synced_as_of(self) -> datetime | None: ...


def _age(moment: datetime, now: datetime) -> float:
    if moment.tzinfo is None:
        raise ConfigError(f"timestamp {moment.isoformat()} has no time zone; expected aware UTC")
    return max(0.0, (now - moment).total_seconds())


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class BackupFreshnessCheck(Check):
    """The newest successful (and, with ``require_verified``, verified) backup of each source is
    younger than the ``age`` thresholds (seconds; default warning over 26 h, critical over 50 h).

    A source in ``sources`` with no such backup is CRITICAL; a newest attempt that failed is a
    WARNING even when an older good backup is still fresh. With no ``sources``, every source in
    the catalogue is checked.
    """

    kind = "backup"
    THRESHOLDS: ClassVar[DefaultThresholds] = {"age": ("93600", "180000")}

    def __init__(
        self,
        name: str,
        catalogue: BackupCatalogue,
        *,
        sources: Sequence[str] = (),
        require_verified: bool = True,
        clock: Callable[[], datetime] | None = None,
        timeout: float = 30.0,
        thresholds: ThresholdSpec | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout, thresholds=thresholds)
        self.catalogue = catalogue
        self.sources = tuple(sources)
        self.require_verified = require_verified
        self._clock = clock or (lambda: datetime.now(UTC))

    @property
    def target(self) -> str:
        # A Backuper says where through its storage; a catalogue of one's own may say it itself.
        storage = getattr(self.catalogue, "storage", self.catalogue)
        return str(getattr(storage, "location", ""))

    def measure(self, findings: CheckFindings) -> None:
        now = self._clock()
        backups = list(self.catalogue.list())
        by_source: dict[str, list[BackupRecord]] = {}
        for backup in backups:
            by_source.setdefault(backup.source, []).append(backup)
        sources = self.sources or tuple(sorted(by_source))
        if not sources:
            findings.problem(CheckStatus.CRITICAL, "the catalogue holds no backups at all")
            return
        for source in sources:
            self._judge_source(findings, source, by_source.get(source, []), now)

    def _judge_source(
        self, findings: CheckFindings, source: str, backups: list[BackupRecord], now: datetime
    ) -> None:
        good = [
            backup
            for backup in backups
            if backup.status == "ok"
            and backup.finished_at is not None
            and (backup.verified_at is not None or not self.require_verified)
        ]
        wanted = "verified successful" if self.require_verified else "successful"
        if not good:
            findings.problem(CheckStatus.CRITICAL, f"{source}: no {wanted} backup")
            return
        newest = max(good, key=lambda backup: backup.finished_at or now)
        assert newest.finished_at is not None
        age = _age(newest.finished_at, now)
        findings.metric(
            f"age {source}",
            age,
            "s",
            text=f"{source}: newest {wanted} backup {newest.id} is {_duration(age)} old",
            threshold="age",
            minimum=0,
            series="age",
            labels={"source": source},
        )
        findings.metric(
            f"last_success {source}",
            newest.finished_at.timestamp(),
            text=None,
            series="last_success_timestamp_seconds",
            labels={"source": source},
        )
        latest = max(backups, key=lambda backup: backup.started_at)
        if latest.status != "ok":
            findings.problem(
                CheckStatus.WARNING, f"{source}: the latest backup {latest.id} is {latest.status}"
            )


class SyncLagCheck(Check):
    """How far a cache sync is behind its table: ``lag`` is the time since the moment the cache
    is known to hold every change (``synced_as_of``; default warning over 5 min, critical over
    15 min). The time since the last successful pass is reported too (``since_success``,
    unjudged by default). ``read_status`` returns the sync's status, for example
    ``lambda: autoops.read_sync_status(cache, "users")``.
    """

    kind = "sync"
    THRESHOLDS: ClassVar[DefaultThresholds] = {"lag": ("300", "900"), "since_success": (None, None)}

    def __init__(
        self,
        name: str,
        read_status: Callable[[], SyncProgress | None],
        *,
        clock: Callable[[], datetime] | None = None,
        timeout: float = 10.0,
        thresholds: ThresholdSpec | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout, thresholds=thresholds)
        self.read_status = read_status
        self._clock = clock or (lambda: datetime.now(UTC))

    def measure(self, findings: CheckFindings) -> None:
        now = self._clock()
        progress = self.read_status()
        as_of = progress.synced_as_of if progress is not None else None
        if progress is None or as_of is None:
            findings.problem(CheckStatus.CRITICAL, "the sync has never completed a pass")
            return
        lag = _age(as_of, now)
        findings.metric(
            "lag", lag, "s", text=f"cache holds changes up to {_duration(lag)} ago", minimum=0
        )
        if progress.last_success_at is not None:
            since = _age(progress.last_success_at, now)
            findings.metric(
                "since_success",
                since,
                "s",
                text=f"last successful pass {_duration(since)} ago",
                minimum=0,
                series="since_last_success",
            )
