"""The ``[sync]`` table of the settings file and the metrics of a pass: what ``autoops-sync``
reads and writes, for a library user as for the command."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, Final

from .._errors import ConfigError
from .._metrics import MetricSample
from ..cache import CacheBackend
from ._report import SyncReport, read_sync_status

__all__ = ["SYNC_SETTINGS", "sync_metrics", "sync_settings"]

# [sync] keys and the type each must have; the command's flags use the same names with dashes.
SYNC_SETTINGS: Final[Mapping[str, type | tuple[type, ...]]] = {
    "table": str,
    "key": str,
    "columns": list,
    "exclude": list,
    "primary_key": str,
    "updated_column": str,
    "deleted_column": str,
    "ttl": (int, float),
    "batch_size": int,
    "overlap": (int, float),
    "name": str,
    "namespace": str,
    "lock_ttl": (int, float),
    "interval": (int, float),
    "metrics_file": str,
    "read_from": str,
    "source": str,
    "server_id": int,
    "on_purged": str,
}
# The smallest value each number takes (and whether it may equal it); never NaN or infinite.
_LOWEST: Final[Mapping[str, tuple[float, bool]]] = {
    "ttl": (0, False),
    "batch_size": (1, True),
    "overlap": (0, True),
    "lock_ttl": (1, True),
    "interval": (0, True),
    "server_id": (1, True),
}


def sync_settings(table: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The ``[sync]`` keys, checked, with ``overrides`` (keyword arguments or flags) that are not
    None winning; ``table`` and ``key`` are required. A wrong key, type or range is a
    :class:`ConfigError` naming where it was set (``--batch-size`` or ``[sync] batch_size``)."""
    unknown = sorted((set(table) | set(overrides)) - set(SYNC_SETTINGS))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in [sync]; known: {', '.join(SYNC_SETTINGS)}"
        )
    merged: dict[str, Any] = {}
    for name, kind in SYNC_SETTINGS.items():
        override = overrides.get(name)
        value: Any = override if override is not None else table.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigError(f"[sync] {name} has the wrong type ({type(value).__name__})")
        if name in _LOWEST:
            _check_number(name, value, override is not None)
        merged[name] = value
    for required in ("table", "key"):
        if required not in merged:
            raise ConfigError(
                f"no {required} given: pass --{required} or set {required} in [sync] of "
                "autoops.toml"
            )
    metrics_file = merged.get("metrics_file")
    if metrics_file is not None and not os.path.isdir(os.path.dirname(metrics_file) or "."):
        raise ConfigError(f"metrics_file {metrics_file}: its directory does not exist")
    return merged


def _check_number(name: str, value: Any, overridden: bool) -> None:
    lowest, inclusive = _LOWEST[name]
    if not math.isfinite(value) or value < lowest or (value == lowest and not inclusive):
        where = f"--{name.replace('_', '-')}" if overridden else f"[sync] {name}"
        bound = f">= {lowest:g}" if inclusive else f"above {lowest:g}"
        raise ConfigError(f"{where} must be a finite number {bound}, got {value!r}")


def sync_metrics(name: str, report: SyncReport | None, cache: CacheBackend) -> list[MetricSample]:
    """The Prometheus samples of sync ``name`` after a pass (``report``; None when it failed):
    success, last success time and lag from the stored status, and the pass's counts."""
    labels = {"sync": name}
    samples = [
        MetricSample(
            "autoops_sync_last_run_success",
            "1 if the last pass succeeded, 0 if it failed",
            1.0 if report is not None else 0.0,
            labels,
        )
    ]
    status = read_sync_status(cache, name)
    if status.last_success_at is not None:
        samples.append(
            MetricSample(
                "autoops_sync_last_success_timestamp_seconds",
                "Unix time the last successful pass finished",
                status.last_success_at.timestamp(),
                labels,
            )
        )
    if status.behind_bytes is not None:
        samples.append(
            MetricSample(
                "autoops_sync_binlog_behind_bytes",
                "Bytes of binary log between the checkpoint and the log's end",
                status.behind_bytes,
                labels,
            )
        )
    lag = status.lag_seconds()
    if lag is not None:
        samples.append(
            MetricSample(
                "autoops_sync_lag_seconds",
                "Seconds since the data in the cache was read from the table",
                lag,
                labels,
            )
        )
    if report is not None:
        for metric, help_text, value in (
            ("autoops_sync_rows_read", "Rows read by the last pass", report.rows_read),
            ("autoops_sync_keys_written", "Keys written by the last pass", report.keys_written),
            ("autoops_sync_keys_deleted", "Keys deleted by the last pass", report.keys_deleted),
            ("autoops_sync_duration_seconds", "Duration of the last pass", report.duration_seconds),
        ):
            samples.append(MetricSample(metric, help_text, value, labels))
    return samples
