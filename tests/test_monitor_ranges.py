"""Nagios threshold ranges: the documented grammar, its semantics, and clear errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from autoops import CheckMetric, CheckResult, CheckStatus, ConfigError, ThresholdRange, Thresholds

# Numbers as people write them in thresholds: integers and short decimals.
numbers = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6).map(float),
    st.decimals(min_value=-1000, max_value=1000, places=3, allow_nan=False).map(float),
)
values = st.floats(min_value=-1e7, max_value=1e7, allow_nan=False)


def text(number: float) -> str:
    return str(int(number)) if number.is_integer() else repr(number)


@pytest.mark.parametrize(
    ("given_text", "alerting", "quiet"),
    [
        ("10", [-1, 10.5, 11], [0, 5, 10]),
        ("10:", [9.99, -5], [10, 11, 1e9]),
        ("~:10", [10.01, 100], [-1e9, 0, 10]),
        ("10:20", [9, 21], [10, 15, 20]),
        ("@10:20", [10, 15, 20], [9.9, 20.1]),
    ],
)
def test_the_documented_examples_alert_as_the_guidelines_say(
    given_text: str, alerting: list[float], quiet: list[float]
) -> None:
    parsed = ThresholdRange.parse(given_text)
    assert all(parsed.alerts(value) for value in alerting)
    assert not any(parsed.alerts(value) for value in quiet)


@pytest.mark.parametrize(
    "bad", ["", "abc", "20:10", "@", "10:20:30", "1e3", "inf", "nan", "10~", ":", "~", "@~", "- 5"]
)
def test_malformed_ranges_are_config_errors_that_show_the_grammar(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"threshold|range"):
        ThresholdRange.parse(bad)


def test_a_range_with_its_start_above_its_end_says_so() -> None:
    with pytest.raises(ConfigError, match="start above its end"):
        ThresholdRange.parse("20:10")


def test_a_non_text_threshold_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="must be text"):
        ThresholdRange.parse([1, 2])  # type: ignore[arg-type]


@given(start=numbers, width=st.floats(min_value=0, max_value=1e6), value=values)
def test_start_end_alerts_exactly_outside_the_inclusive_range(
    start: float, width: float, value: float
) -> None:
    end = float(text(start + round(width, 3)))
    parsed = ThresholdRange.parse(f"{text(start)}:{text(end)}")
    assert parsed.alerts(value) == (not start <= value <= end)


@given(start=numbers, width=st.floats(min_value=0, max_value=1e6), value=values)
def test_at_inverts_the_range(start: float, width: float, value: float) -> None:
    end = float(text(start + round(width, 3)))
    plain = ThresholdRange.parse(f"{text(start)}:{text(end)}")
    inverted = ThresholdRange.parse(f"@{text(start)}:{text(end)}")
    assert inverted.alerts(value) == (not plain.alerts(value))


@given(end=numbers.filter(lambda number: number >= 0), value=values)
def test_a_bare_number_means_zero_to_that_number(end: float, value: float) -> None:
    assert ThresholdRange.parse(text(end)).alerts(value) == (value < 0 or value > end)


@given(start=numbers, value=values)
def test_an_open_end_alerts_only_below_the_start(start: float, value: float) -> None:
    assert ThresholdRange.parse(f"{text(start)}:").alerts(value) == (value < start)


@given(end=numbers, value=values)
def test_a_tilde_start_alerts_only_above_the_end(end: float, value: float) -> None:
    assert ThresholdRange.parse(f"~:{text(end)}").alerts(value) == (value > end)


@given(
    start=st.one_of(st.just(-math.inf), numbers),
    width=st.one_of(st.just(math.inf), st.floats(min_value=0, max_value=1e6)),
    inside=st.booleans(),
)
def test_printing_a_range_parses_back_to_the_same_range(
    start: float, width: float, inside: bool
) -> None:
    end = start + round(width, 3) if math.isfinite(width) else math.inf
    assume(end > -math.inf)
    if math.isfinite(end):
        end = float(text(end))
    original = ThresholdRange(start=start, end=end, inside=inside)
    assert ThresholdRange.parse(str(original)) == original


def test_critical_wins_over_warning() -> None:
    limits = Thresholds.parse(warning="80", critical="90")
    assert limits.evaluate(50) is CheckStatus.OK
    assert limits.evaluate(85) is CheckStatus.WARNING
    assert limits.evaluate(95) is CheckStatus.CRITICAL


def test_the_worst_status_ranks_unknown_below_warning_and_critical() -> None:
    assert CheckStatus.worst([CheckStatus.UNKNOWN, CheckStatus.CRITICAL]) is CheckStatus.CRITICAL
    assert CheckStatus.worst([CheckStatus.UNKNOWN, CheckStatus.WARNING]) is CheckStatus.WARNING
    assert CheckStatus.worst([CheckStatus.OK, CheckStatus.UNKNOWN]) is CheckStatus.UNKNOWN
    assert CheckStatus.worst([]) is CheckStatus.OK


# Thresholds as small as anyone sets them (a latency of 50 us), down to where floats still hold
# them, where repr() would switch to exponents.
tiny = st.floats(min_value=1e-12, max_value=1e-4, allow_nan=False).flatmap(
    lambda magnitude: st.sampled_from([magnitude, -magnitude])
)


@given(number=st.one_of(tiny, numbers), inside=st.booleans(), open_start=st.booleans())
def test_tiny_thresholds_print_without_an_exponent_and_parse_back(
    number: float, inside: bool, open_start: bool
) -> None:
    start = -math.inf if open_start else min(number, 0.0)
    original = ThresholdRange(start=start, end=number, inside=inside)

    printed = str(original)

    assert "e" not in printed.lower()
    assert ThresholdRange.parse(printed) == original


def test_a_tiny_threshold_reads_in_perfdata_and_json_as_a_plain_number() -> None:
    metric = CheckMetric(
        "latency", 0.0000123, "s", warning=ThresholdRange.parse("0.00005"), minimum=0
    )
    result = CheckResult("web", "http", CheckStatus.OK, "fine", (metric,))

    assert metric.perfdata() == "'latency'=0.000012s;0.00005;;0"
    assert result.to_dict()["metrics"][0]["warning"] == "0.00005"
    assert ThresholdRange.parse(result.to_dict()["metrics"][0]["warning"]) == metric.warning
