"""The three ways results leave the monitor: Nagios plugin text, JSON, and Prometheus."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .._errors import ConfigError
from ._result import CheckMetric, CheckResult
from ._status import CheckStatus

__all__ = [
    "CheckCollector",
    "prometheus_registry",
    "results_as_json",
    "results_as_nagios",
    "write_prometheus",
]

# Perfdata unit -> (Prometheus suffix, factor to base units).
_BASE_UNITS: Final = {
    "": ("", 1.0),
    "s": ("_seconds", 1.0),
    "ms": ("_seconds", 1e-3),
    "us": ("_seconds", 1e-6),
    "%": ("_ratio", 1e-2),
    "B": ("_bytes", 1.0),
    "KB": ("_bytes", 1e3),
    "MB": ("_bytes", 1e6),
    "TB": ("_bytes", 1e12),
    "c": ("", 1.0),
}


_INVALID_NAME_CHARACTERS: Final = re.compile(r"[^A-Za-z0-9_:]")


def results_as_nagios(results: Sequence[CheckResult]) -> str:
    """One ``NAME STATUS: summary | perfdata`` line per result (a single check's output is a
    complete Nagios plugin output)."""
    return "\n".join(result.nagios_line() for result in results)


def results_as_json(results: Sequence[CheckResult]) -> str:
    """A JSON document: the worst status and every result."""

    worst = CheckStatus.worst(result.status for result in results)
    return json.dumps(
        {
            "status": worst.name,
            "exit_code": int(worst),
            "checks": [result.to_dict() for result in results],
        },
        indent=2,
    )


def metric_name(kind: str, metric: CheckMetric) -> str:
    """The Prometheus name of a check's metric, in base units: ``autoops_mysql_latency_seconds``
    (a counter's ``_total`` is added by the exposition)."""
    suffix, _ = _BASE_UNITS[metric.unit]
    # A label can hold anything (a path, a URL); a metric name only [a-zA-Z0-9_:].
    base = _INVALID_NAME_CHARACTERS.sub("_", f"autoops_{kind}_{metric.series or metric.label}")
    return base if base.endswith(suffix) else base + suffix


class CheckCollector(Collector):
    """A Prometheus collector over results, from a list or a callable run at each scrape."""

    def __init__(self, results: Sequence[CheckResult] | Callable[[], Sequence[CheckResult]]):
        self._results = results

    def collect(self) -> Iterator[Metric]:
        results = self._results() if callable(self._results) else self._results
        yield from _families(results)


def _families(results: Iterable[CheckResult]) -> Iterator[Metric]:
    status = GaugeMetricFamily(
        "autoops_check_status",
        "Check status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        labels=["check", "kind"],
    )
    duration = GaugeMetricFamily(
        "autoops_check_duration_seconds", "How long the check took.", labels=["check", "kind"]
    )
    ran_at = GaugeMetricFamily(
        "autoops_check_run_timestamp_seconds",
        "When the check last ran (Unix time).",
        labels=["check", "kind"],
    )
    last_ok = GaugeMetricFamily(
        "autoops_check_last_ok_timestamp_seconds",
        "When the check was last OK (Unix time), as remembered in the monitor's state file.",
        labels=["check", "kind"],
    )
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
    label_names: dict[str, list[str]] = {}
    for result in results:
        identity = [result.name, result.kind]
        status.add_metric(identity, int(result.status))
        duration.add_metric(identity, result.duration_seconds)
        if result.started_at is not None:
            ran_at.add_metric(identity, result.started_at.timestamp())
        if result.last_ok_at is not None:
            last_ok.add_metric(identity, result.last_ok_at.timestamp())
        for metric in result.metrics:
            name = metric_name(result.kind, metric)
            names = ["check", *sorted(metric.labels)]
            family = families.get(name)
            if family is None:
                help_text = f"{result.kind} check: {metric.series or metric.label.split()[0]}."
                family = (
                    CounterMetricFamily(name, help_text, labels=names)
                    if metric.unit == "c"
                    else GaugeMetricFamily(name, help_text, labels=names)
                )
                families[name] = family
                label_names[name] = names
            elif label_names[name] != names:
                continue  # a clashing label set would make the exposition invalid
            _, factor = _BASE_UNITS[metric.unit]
            values = [result.name, *(metric.labels[key] for key in names[1:])]
            family.add_metric(values, metric.value * factor * metric.scale)
    yield status
    yield duration
    yield ran_at
    if last_ok.samples:
        yield last_ok
    yield from families.values()


def prometheus_registry(results: Sequence[CheckResult]) -> CollectorRegistry:
    """A registry of our own holding ``results``, ready for ``generate_latest``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CheckCollector(results))
    return registry


def write_prometheus(path: str | os.PathLike[str], results: Sequence[CheckResult]) -> None:
    """Write ``results`` for node_exporter's textfile collector: a temporary file renamed into
    place by ``prometheus_client.write_to_textfile``, so a scrape never sees half a file."""
    directory = os.path.dirname(os.fspath(path)) or "."
    if not os.path.isdir(directory):
        raise ConfigError(
            f"cannot write metrics to {os.fspath(path)}: directory {directory} does not exist"
        )
    write_to_textfile(os.fspath(path), prometheus_registry(results))
