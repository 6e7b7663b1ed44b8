"""Backup freshness and sync lag, read through the monitor's own protocols."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import autoops
from autoops import BackupFreshnessCheck, CheckStatus, SyncLagCheck

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class StubBackup:
    """The fields of a catalogue entry the monitor reads, as the backup contract defines them."""

    id: str
    source: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    verified_at: datetime | None


@dataclass
class ListCatalogue:
    backups: list[StubBackup]

    def list(self, source: str | None = None) -> Sequence[StubBackup]:
        return [backup for backup in self.backups if source in (None, backup.source)]


def backup(
    source: str, hours_ago: float, *, status: str = "ok", verified: bool = True
) -> StubBackup:
    finished = NOW - timedelta(hours=hours_ago)
    return StubBackup(
        id=f"{source}-{hours_ago}",
        source=source,
        status=status,
        started_at=finished - timedelta(minutes=5),
        finished_at=finished,
        verified_at=finished if verified else None,
    )


def check(backups: list[StubBackup], **options: object) -> BackupFreshnessCheck:
    return BackupFreshnessCheck(
        "backups",
        ListCatalogue(backups),
        clock=lambda: NOW,
        **options,  # type: ignore[arg-type]
    )


def test_a_fresh_verified_backup_of_every_source_is_ok() -> None:
    result = check([backup("mysql://db/app", 3), backup("redis://cache:6379", 5)]).run()
    assert result.status is CheckStatus.OK, result.summary
    ages = {
        metric.labels["source"]: metric.value
        for metric in result.metrics
        if metric.label.startswith("age ")
    }
    assert ages == {"mysql://db/app": 3 * 3600, "redis://cache:6379": 5 * 3600}


def test_a_stale_backup_is_critical() -> None:
    result = check([backup("mysql://db/app", 60)]).run()
    assert result.status is CheckStatus.CRITICAL
    assert "2.5 days old" in result.summary


def test_a_backup_between_the_thresholds_warns() -> None:
    assert check([backup("mysql://db/app", 30)]).run().status is CheckStatus.WARNING


def test_an_unverified_backup_does_not_count_by_default() -> None:
    backups = [backup("mysql://db/app", 1, verified=False), backup("mysql://db/app", 40)]
    result = check(backups).run()
    assert result.status is CheckStatus.WARNING
    assert "40.0 h old" in result.summary
    relaxed = check(backups, require_verified=False).run()
    assert relaxed.status is CheckStatus.OK


def test_a_corrupt_latest_backup_warns_even_when_an_older_one_is_fresh() -> None:
    result = check(
        [backup("mysql://db/app", 2), backup("mysql://db/app", 1, status="corrupt")]
    ).run()
    assert result.status is CheckStatus.WARNING
    assert "is corrupt" in result.summary


def test_a_source_with_no_backup_is_critical() -> None:
    result = check(
        [backup("mysql://db/app", 1)], sources=["mysql://db/app", "mysql://db/crm"]
    ).run()
    assert result.status is CheckStatus.CRITICAL
    assert "mysql://db/crm: no verified successful backup" in result.summary


def test_an_empty_catalogue_is_critical() -> None:
    assert check([]).run().status is CheckStatus.CRITICAL


@dataclass(frozen=True)
class StubSyncStatus:
    last_success_at: datetime | None
    synced_as_of: datetime | None


def sync_check(status: StubSyncStatus | None) -> SyncLagCheck:
    return SyncLagCheck("sync", lambda: status, clock=lambda: NOW)


def test_a_sync_that_kept_up_is_ok() -> None:
    status = StubSyncStatus(NOW - timedelta(seconds=20), NOW - timedelta(seconds=65))
    result = sync_check(status).run()
    assert result.status is CheckStatus.OK
    lag = next(metric for metric in result.metrics if metric.label == "lag")
    assert lag.value == 65


def test_an_old_sync_checkpoint_is_critical() -> None:
    status = StubSyncStatus(NOW - timedelta(hours=1), NOW - timedelta(hours=1, minutes=1))
    result = sync_check(status).run()
    assert result.status is CheckStatus.CRITICAL
    assert "61 min ago" in result.summary


def test_a_sync_that_never_ran_is_critical() -> None:
    assert sync_check(None).run().status is CheckStatus.CRITICAL
    assert sync_check(StubSyncStatus(None, None)).run().status is CheckStatus.CRITICAL


def test_a_naive_timestamp_makes_the_check_unknown() -> None:
    naive = StubSyncStatus(None, datetime(2026, 11, 27, 11, 0))
    result = sync_check(naive).run()
    assert result.status is CheckStatus.UNKNOWN
    assert "no time zone" in result.summary


def test_a_real_backup_catalogue_is_checked(mysql_db: autoops.DbClient, tmp_path: Path) -> None:
    mysql_db.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    mysql_db.execute("INSERT INTO t VALUES (1), (2)")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "backups"), progress=False)
    taken = backuper.backup_mysql(mysql_db)  # type: ignore[arg-type]
    fresh = BackupFreshnessCheck("backups", backuper, sources=[taken.source]).run()
    assert fresh.status is CheckStatus.OK, fresh.summary
    assert taken.id in fresh.summary
    three_days_on = datetime.now(UTC) + timedelta(days=3)
    stale = BackupFreshnessCheck("backups", backuper, clock=lambda: three_days_on).run()
    assert stale.status is CheckStatus.CRITICAL
    assert "3.0 days old" in stale.summary


def test_a_real_cache_sync_status_is_checked(
    mysql_db: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    mysql_db.execute(
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20),"
        " updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))"
    )
    mysql_db.execute("INSERT INTO items (id, name) VALUES (1, 'a'), (2, 'b')")
    sync = autoops.CacheSync(
        mysql_db,
        cache,
        table="items",
        key="items:{id}",
        updated_column="updated_at",
        progress=False,
    )
    check = SyncLagCheck("sync", lambda: autoops.read_sync_status(cache, "items"))
    assert check.run().status is CheckStatus.CRITICAL  # never synced yet
    sync.run_once()
    fresh = check.run()
    assert fresh.status is CheckStatus.OK, fresh.summary
    an_hour_on = datetime.now(UTC) + timedelta(hours=1)
    late = SyncLagCheck(
        "sync", lambda: autoops.read_sync_status(cache, "items"), clock=lambda: an_hour_on
    ).run()
    assert late.status is CheckStatus.CRITICAL
    assert "cache holds changes up to 60 min ago" in late.summary
