"""How results look in Jupyter and a REPL: lists of results as one table, units for people,
text aligned left and numbers right."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest

import autoops
from autoops._display import format_quantity, format_seconds
from autoops.monitor import CheckMetric, CheckResult, CheckStatus
from autoops.sync import SyncStatus


class Cells(HTMLParser):
    """Every table of an HTML fragment as rows of (tag, text, text-align)."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, str, str]]]] = []
        self._cell: tuple[str, str] | None = None
        self._text = ""
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            style = dict(attrs).get("style") or ""
            align = style.partition("text-align:")[2].strip().rstrip(";") or "(default)"
            self._cell, self._text = (tag, align), ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append((self._cell[0], self._text, self._cell[1]))
            self._cell = None


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.034284, "s", "34.3 ms"),
        (7566248, "B", "7.2 MiB"),
        (250, "ms", "250.0 ms"),
        (12, "us", "12 µs"),
        (2048, "KB", "2.0 MiB"),
        (12.5, "%", "12.5%"),
        (1234567, "c", "1,234,567"),
        (0.25, "", "0.25"),
    ],
)
def test_metric_values_show_in_units_people_read(value: float, unit: str, text: str) -> None:
    assert format_quantity(value, unit) == text


def test_check_results_from_run_checks_are_a_list_shown_as_one_table(redis_url: str) -> None:
    checks = [autoops.RedisCheck("cache", redis_url), autoops.RedisCheck("cache-again", redis_url)]

    results = autoops.run_checks(checks)

    assert isinstance(results, list)
    assert [result.name for result in results] == ["cache", "cache-again"]
    assert json.dumps([result.to_dict() for result in results])
    [table] = Cells(results._repr_html_()).tables  # type: ignore[attr-defined]
    header, *rows = table
    assert [text for _, text, _ in header] == ["check", "status", "summary", "metrics", "duration"]
    assert len(rows) == 2
    for row in rows:
        aligns = {header[i][1]: align for i, (_, _, align) in enumerate(row)}
        assert aligns == {
            "check": "left",
            "status": "left",
            "summary": "left",
            "metrics": "left",
            "duration": "right",
        }
        assert row[3][1]
        assert "B;" not in row[3][1]
        assert "MiB" in row[3][1]
    text = repr(results)
    assert text.splitlines()[0] == "check results (2):"
    assert text.splitlines()[1].split() == ["check", "status", "summary", "metrics", "duration"]


def test_a_check_result_shows_its_metrics_humanly_numbers_right_text_left() -> None:
    result = CheckResult(
        "web",
        "redis",
        CheckStatus.OK,
        "fine",
        metrics=(CheckMetric("latency", 0.034284, "s"), CheckMetric("used_memory", 7566248, "B")),
        duration_seconds=0.05,
    )

    summary, metrics = Cells(result._repr_html_()).tables

    assert ("th", "summary", "left") in summary[1]
    assert ("td", "fine", "left") in summary[1]
    assert ("td", "50.0 ms", "right") in summary[3]
    assert metrics[1][:2] == [("td", "latency", "left"), ("td", "34.3 ms", "right")]
    assert metrics[2][:2] == [("td", "used_memory", "left"), ("td", "7.2 MiB", "right")]
    assert ("th", "value", "right") in metrics[0]


def test_backuper_list_is_a_list_shown_as_one_table(tmp_path: Path) -> None:
    database = sqlite3.connect(tmp_path / "usérs.db")
    database.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    database.commit()
    database.close()
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path / "store"))
    made = [backuper.backup_sqlite(tmp_path / "usérs.db") for _ in range(2)]

    listed = backuper.list()

    assert isinstance(listed, list)
    assert listed == sorted(made, key=lambda b: b.started_at)
    [table] = Cells(listed._repr_html_()).tables  # type: ignore[attr-defined]
    header, *rows = table
    names = [text for _, text, _ in header]
    assert names == ["id", "kind", "source", "status", "started", "size", "verified"]
    assert rows[0][names.index("size")][2] == "right"
    assert rows[0][names.index("source")] == ("td", made[0].source, "left")
    assert repr(listed).splitlines()[0] == "backups (2):"
    assert repr(autoops.Backuper(autoops.LocalStorage(tmp_path / "empty")).list()) == (
        "backups: none"
    )


def test_sync_status_shows_the_last_pass_as_a_sentence() -> None:
    status = SyncStatus(
        name="users",
        checkpoint=12,
        checkpoint_committed_at=None,
        last_success_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        synced_as_of=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        last_pass={
            "kind": "full",
            "rows_read": 300000,
            "keys_written": 299990,
            "keys_deleted": 3,
            "duration_seconds": 12.25,
        },
        full_pass_in_progress=False,
        lock_holder=None,
    )

    [table] = Cells(status._repr_html_()).tables
    cells = {row[0][1]: row[1] for row in table}

    assert cells["last pass"] == (
        "td",
        f"full: 300,000 rows read, 299,990 keys written, 3 deleted in {format_seconds(12.25)}",
        "left",
    )
    assert cells["checkpoint"] == ("td", "12", "right")
