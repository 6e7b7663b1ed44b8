"""Names renamed for one vocabulary across results still answer, warning with the new name."""

from __future__ import annotations

import datetime as dt

import pytest

import autoops
from autoops import CheckResult, CheckStatus
from autoops._ssh import CommandResult


def test_a_check_results_duration_is_duration_seconds() -> None:
    result = CheckResult("db", "mysql", CheckStatus.OK, "up", duration_seconds=0.25)
    with pytest.warns(
        DeprecationWarning, match=r"CheckResult.duration is deprecated.*\.duration_seconds"
    ):
        assert result.duration == 0.25


def test_a_check_result_is_ok_when_its_status_is() -> None:
    assert CheckResult("db", "mysql", CheckStatus.OK, "up").ok
    assert not CheckResult("db", "mysql", CheckStatus.WARNING, "slow").ok


def test_a_remote_commands_duration_is_duration_seconds() -> None:
    result = CommandResult("true", 0, "", "", duration_seconds=0.5)
    with pytest.warns(
        DeprecationWarning, match=r"CommandResult.duration is deprecated.*\.duration_seconds"
    ):
        assert result.duration == 0.5


def test_a_sync_reports_completed_is_ok() -> None:
    report = autoops.SyncReport(
        name="users",
        kind="full",
        rows_read=1,
        keys_written=1,
        keys_deleted=0,
        duration_seconds=0.1,
        started_at=dt.datetime.now(dt.UTC),
        checkpoint=None,
        ok=False,
    )
    with pytest.warns(DeprecationWarning, match=r"SyncReport.completed .* SyncReport.ok"):
        assert report.completed is False


def test_a_backups_duration_is_duration_seconds() -> None:
    started = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    backup = autoops.Backup(
        id="sqlite-app-20260501T120000Z",
        kind="sqlite",
        source="app.db",
        started_at=started,
        finished_at=started + dt.timedelta(seconds=90),
        status="ok",
        size=1,
        sha256="0" * 64,
        data_file="sqlite-app-20260501T120000Z.db.zst",
        format="sqlite",
        compression="zstd",
        raw_size=1,
    )
    assert backup.ok
    with pytest.warns(
        DeprecationWarning, match=r"Backup.duration is deprecated.*\.duration_seconds"
    ):
        assert backup.duration == backup.duration_seconds == 90


def test_a_deploys_seconds_are_duration_seconds() -> None:
    host = autoops.HostDeployResult("web1", timings={"upload": 1.5, "switch": 0.5})
    result = autoops.DeployResult("deploy", "r1", [host], duration_seconds=2.5)
    with pytest.warns(DeprecationWarning, match=r"DeployResult.seconds is deprecated"):
        assert result.seconds == 2.5
    with pytest.warns(DeprecationWarning, match=r"HostDeployResult.total_seconds is deprecated"):
        assert host.total_seconds == host.duration_seconds == 2.0
