"""Prometheus textfiles for node_exporter's textfile collector, written atomically."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from ._errors import ConfigError

__all__ = ["MetricSample", "write_textfile"]


@dataclass(frozen=True, slots=True)
class MetricSample:
    """One gauge sample: a name in base units (``autoops_sync_duration_seconds``), its help text,
    its value and its labels."""

    name: str
    help: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


def write_textfile(path: str | os.PathLike[str], samples: Iterable[MetricSample]) -> None:
    """Write ``samples`` to ``path`` through a temporary file renamed into place, so
    node_exporter never reads half a file. Samples sharing a name must share label names."""
    registry = CollectorRegistry()
    gauges: dict[str, Gauge] = {}
    for sample in samples:
        gauge = gauges.get(sample.name)
        if gauge is None:
            gauge = Gauge(sample.name, sample.help, sorted(sample.labels), registry=registry)
            gauges[sample.name] = gauge
        if sample.labels:
            gauge.labels(**sample.labels).set(sample.value)
        else:
            gauge.set(sample.value)
    directory = os.path.dirname(os.fspath(path)) or "."
    if not os.path.isdir(directory):
        raise ConfigError(
            f"cannot write metrics to {os.fspath(path)}: directory {directory} does not exist"
        )
    write_to_textfile(os.fspath(path), registry)
