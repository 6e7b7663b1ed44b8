"""The shared progress line, display helpers and Prometheus textfiles."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from _support.services import promtool_accepts
from autoops import ConfigError, Progress
from autoops._display import format_bytes, format_count, format_seconds, html_table
from autoops._metrics import MetricSample, write_textfile


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_silent_when_not_on_a_terminal() -> None:
    stream = io.StringIO()
    with Progress("sync", total=10, stream=stream) as progress:
        progress.advance(10)
    assert stream.getvalue() == ""


def test_progress_draws_counts_rate_and_percent_on_a_terminal() -> None:
    stream = Terminal()
    with Progress("sync", total=200, stream=stream, min_interval=0) as progress:
        progress.advance(50)
    text = stream.getvalue()
    assert "sync: 50 rows of 200 rows (25%)" in text
    assert "rows/s" in text
    assert text.endswith("\n")


def test_a_resumed_run_counts_earlier_work_toward_the_total_but_ends_on_its_own() -> None:
    stream = Terminal()
    with Progress("sync", total=200, stream=stream, min_interval=0, start=100) as progress:
        progress.advance(50)
    text = stream.getvalue()
    assert "sync: 150 rows of 200 rows (75%)" in text
    assert "sync: 50 rows in " in text.rsplit("\r", 1)[-1]


def test_progress_in_bytes_uses_binary_units() -> None:
    stream = Terminal()
    with Progress("backup", unit="bytes", stream=stream, min_interval=0) as progress:
        progress.advance(3 * 1024 * 1024)
    assert "backup: 3.0 MiB" in stream.getvalue()


def test_autoops_progress_zero_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOOPS_PROGRESS", "0")
    stream = Terminal()
    with Progress("sync", stream=stream) as progress:
        progress.advance(5)
    assert stream.getvalue() == ""


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0123, "12.3 ms"), (2.5, "2.50 s"), (75, "1 min 15 s"), (7322, "2 h 2 min")],
)
def test_durations_read_naturally(value: float, text: str) -> None:
    assert format_seconds(value) == text


def test_numbers_and_sizes_read_naturally() -> None:
    assert format_count(1234567) == "1,234,567"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(10) == "10 B"


def test_html_tables_escape_their_content() -> None:
    table = html_table("<report>", [("name", "<b>")], columns=["host"], body=[["a&b"]])
    assert "<b>" not in table.replace("<table>", "")
    assert "&lt;report&gt;" in table
    assert "a&amp;b" in table


def test_a_textfile_passes_promtool(tmp_path: Path) -> None:
    path = tmp_path / "autoops.prom"
    write_textfile(
        path,
        [
            MetricSample(
                "autoops_job_last_success_timestamp_seconds",
                "Last success.",
                1.7e9,
                {"job": "sync"},
            ),
            MetricSample("autoops_job_duration_seconds", "Duration.", 2.5, {"job": "sync"}),
        ],
    )
    text = path.read_text()
    assert 'autoops_job_duration_seconds{job="sync"} 2.5' in text
    promtool_accepts(text)
    assert list(tmp_path.iterdir()) == [path]


def test_a_textfile_in_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        write_textfile(tmp_path / "nope" / "x.prom", [MetricSample("a_b", "h", 1.0)])
