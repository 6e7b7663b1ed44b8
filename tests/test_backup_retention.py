"""Retention follows restic's documented semantics, checked against a straightforward model."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import autoops
from autoops.backup import RetentionPolicy
from autoops.backup._retention import parse_duration

START = datetime(2024, 1, 1, tzinfo=UTC)


def _backup(
    index: int, started: datetime, *, source: str = "s", verified: bool = True
) -> autoops.Backup:
    return autoops.Backup(
        id=f"b{index:04d}",
        kind="sqlite",
        source=source,
        started_at=started,
        finished_at=started,
        status="ok",
        size=1,
        sha256="0" * 64,
        data_file=f"b{index:04d}.sqlite.zst",
        format="sqlite",
        compression="zstd",
        raw_size=1,
        verified_at=started if verified else None,
    )


# The model: each rule keeps the newest backup of each of its n newest distinct buckets, plus
# the oldest backup when there are fewer than n buckets; written without restic's loop.
BUCKETS: dict[str, Callable[[datetime], object]] = {
    "hourly": lambda t: t.strftime("%Y-%m-%d %H"),
    "daily": lambda t: t.date(),
    "weekly": lambda t: (t - timedelta(days=t.weekday())).date(),  # the Monday of its week
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: t.year,
}


def model(policy: RetentionPolicy, backups: list[autoops.Backup]) -> dict[str, set[str]]:
    reasons: dict[str, set[str]] = {b.id: set() for b in backups}
    for source in {b.source for b in backups}:
        group = sorted(
            (b for b in backups if b.source == source),
            key=lambda b: (b.started_at, b.id),
            reverse=True,
        )
        counts = {
            "last": policy.keep_last,
            "hourly": policy.keep_hourly,
            "daily": policy.keep_daily,
            "weekly": policy.keep_weekly,
            "monthly": policy.keep_monthly,
            "yearly": policy.keep_yearly,
        }
        for rule, count in counts.items():
            if count == 0:
                continue
            firsts: dict[object, autoops.Backup] = {}
            for position, backup in enumerate(group):
                bucket = position if rule == "last" else BUCKETS[rule](backup.started_at)
                firsts.setdefault(bucket, backup)
            chosen = list(firsts.values())[:count]
            if count > len(firsts):
                chosen.append(group[-1])
            for backup in chosen:
                reasons[backup.id].add(rule)
        if policy.keep_within is not None:
            for backup in group:
                if backup.started_at > group[0].started_at - policy.keep_within:
                    reasons[backup.id].add(f"within {policy.keep_within}")
        verified = [b for b in group if b.verified_at is not None]
        if verified:
            reasons[verified[0].id].add("newest verified")
        if group[0].verified_at is None:
            for backup in group:
                if not reasons[backup.id]:
                    reasons[backup.id].add("held: the newest backup of this source is not verified")
    return reasons


histories = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3 * 365 * 24 * 60),
        st.sampled_from(["a", "b"]),
        st.booleans(),
    ),
    min_size=1,
    max_size=40,
)


@st.composite
def _policy(draw: st.DrawFn) -> RetentionPolicy:
    values = {
        name: draw(st.integers(0, top))
        for name, top in [
            ("keep_last", 4),
            ("keep_hourly", 4),
            ("keep_daily", 6),
            ("keep_weekly", 4),
            ("keep_monthly", 6),
            ("keep_yearly", 3),
        ]
    }
    within = draw(st.one_of(st.none(), st.integers(1, 24 * 400)))
    assume(any(values.values()) or within is not None)
    return RetentionPolicy(
        **values, keep_within=timedelta(hours=within) if within is not None else None
    )


@settings(max_examples=300, deadline=None)
@given(history=histories, policy=_policy())
def test_plan_matches_the_model_of_restics_semantics(
    history: list[tuple[int, str, bool]], policy: RetentionPolicy
) -> None:
    backups = [
        _backup(index, START + timedelta(minutes=minutes), source=source, verified=verified)
        for index, (minutes, source, verified) in enumerate(history)
    ]
    plan = policy.plan(backups)
    expected = model(policy, backups)
    assert {d.backup.id: set(d.reasons) for d in plan.decisions} == expected
    assert {d.backup.id for d in plan.decisions if d.keep} == {
        key for key, why in expected.items() if why
    }


@settings(max_examples=200, deadline=None)
@given(history=histories, policy=_policy())
def test_the_newest_verified_backup_of_each_source_is_always_kept(
    history: list[tuple[int, str, bool]], policy: RetentionPolicy
) -> None:
    backups = [
        _backup(index, START + timedelta(minutes=minutes), source=source, verified=verified)
        for index, (minutes, source, verified) in enumerate(history)
    ]
    kept = {b.id for b in policy.plan(backups).keep}
    for source in {b.source for b in backups}:
        verified = [b for b in backups if b.source == source and b.verified_at is not None]
        if verified:
            newest = max(verified, key=lambda b: (b.started_at, b.id))
            assert newest.id in kept


def test_weeks_run_monday_to_sunday() -> None:
    saturday, sunday, monday = (datetime(2026, 11, day, 12, tzinfo=UTC) for day in (28, 29, 30))
    backups = [_backup(1, saturday), _backup(2, sunday), _backup(3, monday)]
    plan = RetentionPolicy(keep_weekly=2).plan(backups)
    assert [b.id for b in plan.keep] == ["b0003", "b0002"]


def test_a_rule_that_cannot_be_met_keeps_the_oldest() -> None:
    backups = [_backup(i, START + timedelta(hours=i)) for i in range(3)]  # all on one day
    plan = RetentionPolicy(keep_daily=7).plan(backups)
    assert {b.id for b in plan.keep} == {"b0002", "b0000"}


def test_nothing_is_removed_while_the_newest_backup_is_unverified() -> None:
    backups = [_backup(i, START + timedelta(days=i), verified=i < 4) for i in range(5)]
    plan = RetentionPolicy(keep_last=1).plan(backups)
    assert plan.remove == []


def test_an_empty_policy_is_refused() -> None:
    with pytest.raises(autoops.ConfigError, match="keeps nothing"):
        RetentionPolicy()


def test_durations_parse_weeks_days_hours_minutes() -> None:
    assert parse_duration("2w3d") == timedelta(days=17)
    assert parse_duration("36h") == timedelta(hours=36)
    with pytest.raises(autoops.ConfigError):
        parse_duration("3 months")


def test_prune_removes_manifest_and_data_and_dry_run_removes_nothing(tmp_path: Path) -> None:
    db = autoops.SQLiteClient(tmp_path / "app.db")
    db.execute("CREATE TABLE t (x)")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    for _ in range(3):
        backuper.backup_sqlite(db)
    db.close()
    plan = backuper.prune(RetentionPolicy(keep_last=1), dry_run=True)
    assert len(plan.remove) == 2
    assert len(backuper.list()) == 3
    backuper.prune(RetentionPolicy(keep_last=1))
    assert len(backuper.list()) == 1
    assert len(backuper.storage.names()) == 2  # one manifest, one data file
