"""The three outputs: Nagios plugin lines parsed back by a perfdata grammar, JSON, and
Prometheus text that promtool accepts, written atomically."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from _support.services import promtool_accepts
from autoops import CheckMetric, CheckResult, CheckStatus, ConfigError, RedisCheck, ThresholdRange
from autoops.monitor import (
    prometheus_registry,
    results_as_json,
    results_as_nagios,
    write_prometheus,
)

# The Monitoring Plugins perfdata grammar: 'label'=value[UOM];[warn];[crit];[min];[max]
_NUMBER = r"-?\d+(?:\.\d+)?"
_RANGE = rf"@?(?:(?:~|{_NUMBER})?:)?(?:{_NUMBER})?"
_PERFDATA = re.compile(
    rf"'(?P<label>(?:[^']|'')+)'=(?P<value>{_NUMBER})(?P<unit>s|ms|us|%|B|KB|MB|TB|c)?"
    rf"(?:;(?P<warn>{_RANGE})(?:;(?P<crit>{_RANGE})(?:;(?P<min>{_NUMBER})?"
    rf"(?:;(?P<max>{_NUMBER})?)?)?)?)?(?=\s|$)"
)
_LINE = re.compile(
    r"^(?P<name>\S+) (?P<status>OK|WARNING|CRITICAL|UNKNOWN): (?P<text>[^|]*?)"
    r"(?: \| (?P<perfdata>.*))?$"
)


def parse_plugin_line(line: str) -> dict[str, object]:
    """Parse one plugin output line strictly; any stray character fails the test."""
    match = _LINE.match(line)
    assert match is not None, line
    metrics = {}
    rest = match.group("perfdata") or ""
    position = 0
    while position < len(rest):
        item = _PERFDATA.match(rest, position)
        assert item is not None, f"bad perfdata at {rest[position:]!r}"
        metrics[item.group("label").replace("''", "'")] = item.groupdict()
        position = item.end()
        while position < len(rest) and rest[position] == " ":
            position += 1
    return {
        "name": match.group("name"),
        "status": match.group("status"),
        "text": match.group("text"),
        "metrics": metrics,
    }


def sample_result() -> CheckResult:
    return CheckResult(
        name="db-main",
        kind="mysql",
        status=CheckStatus.WARNING,
        summary="12 of 15 connections (80%) | pipes are escaped",
        metrics=(
            CheckMetric("latency", 0.00123, "s", minimum=0),
            CheckMetric(
                "connections",
                80.0,
                "%",
                warning=ThresholdRange.parse("75"),
                critical=ThresholdRange.parse("@90:100"),
                minimum=0,
                maximum=100,
                series="connections_used",
            ),
            CheckMetric("slow_queries", 42, "c"),
            CheckMetric("disk it's /var", 91.5, "%", labels={"mount": "/var"}, series="disk_used"),
            CheckMetric(
                "days",
                12.5,
                warning=ThresholdRange.parse("30:"),
                critical=ThresholdRange.parse("~:-1"),
                series="expiry_seconds",
                scale=86400,
            ),
        ),
        duration_seconds=0.25,
    )


def test_the_nagios_line_parses_back_with_every_value_threshold_and_unit() -> None:
    parsed = parse_plugin_line(sample_result().nagios_line())
    assert parsed["name"] == "db-main"
    assert parsed["status"] == "WARNING"
    metrics = parsed["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["latency"]["value"] == "0.00123"
    assert metrics["latency"]["unit"] == "s"
    assert metrics["connections"]["warn"] == "75"
    assert metrics["connections"]["crit"] == "@90:100"
    assert metrics["connections"]["max"] == "100"
    assert metrics["slow_queries"]["unit"] == "c"
    assert metrics["disk it's /var"]["value"] == "91.5"
    assert metrics["days"]["warn"] == "30:"
    assert metrics["days"]["crit"] == "~:-1"


def test_a_pipe_in_the_summary_cannot_start_the_perfdata_early() -> None:
    line = sample_result().nagios_line()
    assert line.count("|") == 1


def test_results_from_real_checks_parse_back(redis_url: str) -> None:
    result = RedisCheck("cache", redis_url).run()
    parsed = parse_plugin_line(results_as_nagios([result]))
    assert parsed["status"] == "OK"
    assert "latency" in parsed["metrics"]  # type: ignore[operator]


def test_json_carries_the_worst_status_and_every_metric() -> None:
    ok = CheckResult("web", "http", CheckStatus.OK, "HTTP 200")
    document = json.loads(results_as_json([ok, sample_result()]))
    assert document["status"] == "WARNING"
    assert document["exit_code"] == 1
    assert [check["name"] for check in document["checks"]] == ["web", "db-main"]
    assert document["checks"][1]["metrics"][1]["critical"] == "@90:100"


def test_prometheus_names_use_base_units_and_total_for_counters() -> None:
    text = generate_latest(prometheus_registry([sample_result()])).decode()
    assert 'autoops_check_status{check="db-main",kind="mysql"} 1.0' in text
    assert "autoops_mysql_latency_seconds{" in text
    assert 'autoops_mysql_connections_used_ratio{check="db-main"} 0.8' in text
    assert "# TYPE autoops_mysql_slow_queries_total counter" in text
    assert 'autoops_mysql_disk_used_ratio{check="db-main",mount="/var"} 0.915' in text
    assert 'autoops_mysql_expiry_seconds{check="db-main"} 1.08e+06' in text


def test_promtool_accepts_the_textfile(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "autoops.prom"
    write_prometheus(path, [sample_result(), RedisCheck("cache", redis_url).run()])
    promtool_accepts(path.read_bytes())


def test_the_textfile_is_replaced_whole_leaving_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "autoops.prom"
    path.write_text("old contents\n")
    write_prometheus(path, [sample_result()])
    assert "autoops_check_status" in path.read_text()
    assert [entry.name for entry in tmp_path.iterdir()] == ["autoops.prom"]


def test_a_textfile_in_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        write_prometheus(tmp_path / "nope" / "autoops.prom", [sample_result()])


def test_a_result_reads_well_in_a_terminal_and_in_jupyter() -> None:
    result = sample_result()
    assert repr(result).startswith("CheckResult('db-main', WARNING, '12 of 15")
    html = result._repr_html_()
    assert "connections" in html
    assert "@90:100" in html
