"""``autoops-sync``: keep a cache in step with a table, once (cron) or forever (worker).

The database and cache URLs come from ``AUTOOPS_DB_URL`` / ``AUTOOPS_CACHE_URL`` or the
``[db]`` / ``[cache]`` tables of autoops.toml (never from argv, where a password would show in
``ps``); the sync itself from flags or the ``[sync]`` table, flags winning.

Exit codes: 0 done, 1 the pass failed, 2 bad usage or configuration, 75 another runner holds
the lock (try later), 130 stopped by a signal before the pass finished (its batches and
checkpoint are committed; the next run resumes).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .._errors import AutoOpsError, ConfigError
from .._metrics import MetricSample, write_textfile
from ..cache import CacheClient
from ..db import DbClient
from ..sync import CacheSync, SyncReport, read_sync_status
from ._common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_common_arguments,
    run_command,
    settings_from,
)

__all__ = ["main"]

log = logging.getLogger("autoops.sync")

# [sync] keys and the type each must have; flags use the same names with dashes.
_TABLE_KEYS: Final[Mapping[str, type | tuple[type, ...]]] = {
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
}
# The smallest value each number takes (and whether it may equal it); never NaN or infinite.
_LOWEST: Final[Mapping[str, tuple[float, bool]]] = {
    "ttl": (0, False),
    "batch_size": (1, True),
    "overlap": (0, True),
    "lock_ttl": (1, True),
    "interval": (0, True),
}


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``autoops-sync``."""
    parser = argparse.ArgumentParser(
        prog="autoops-sync",
        description="Keep Redis in step with a MySQL table: a full pass, then incremental ones.",
        epilog=(
            "URLs come from AUTOOPS_DB_URL / AUTOOPS_CACHE_URL or autoops.toml; every option "
            "below may also be set in its [sync] table. Exit codes: 0 ok, 1 failed, 2 usage, "
            "75 lock held, 130 stopped early."
        ),
    )
    add_common_arguments(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one pass, then exit (default; cron)")
    mode.add_argument("--forever", action="store_true", help="pass after pass (a worker)")
    parser.add_argument("--full", action="store_true", help="make this pass a full one")
    parser.add_argument(
        "--reconcile", action="store_true", help="only delete keys whose rows are gone"
    )
    parser.add_argument("--table", help="the table to cache (schema.table allowed)")
    parser.add_argument("--key", help="key template naming the primary key, e.g. 'users:{id}'")
    parser.add_argument("--columns", type=_names, help="comma-separated columns to cache")
    parser.add_argument("--exclude", type=_names, help="comma-separated columns never cached")
    parser.add_argument("--primary-key", help="primary key column (default id)")
    parser.add_argument("--updated-column", help="change-time column for incremental passes")
    parser.add_argument("--deleted-column", help="soft-delete column: truthy rows lose their key")
    parser.add_argument("--ttl", type=float, help="seconds each row key lives (default: forever)")
    parser.add_argument("--batch-size", type=int, help="rows per batch (default 5000)")
    parser.add_argument(
        "--overlap",
        type=float,
        help="longest seconds a transaction may stay open after stamping a row and still be caught "
        "(default 60)",
    )
    parser.add_argument("--name", help="the sync's name in its lock and status keys")
    parser.add_argument("--namespace", help="cache key namespace")
    parser.add_argument("--lock-ttl", type=float, help="seconds the lock outlives a dead runner")
    parser.add_argument("--interval", type=float, help="seconds between passes with --forever")
    parser.add_argument(
        "--read-from",
        choices=("primary", "replica"),
        help="read rows from a replica of [db] replicas within max_replica_lag (default primary)",
    )
    parser.add_argument(
        "--metrics-file", help="Prometheus textfile to write after each pass (atomically)"
    )
    return parser


def _options(args: argparse.Namespace, table: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(table) - set(_TABLE_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in [sync]; known: {', '.join(_TABLE_KEYS)}"
        )
    merged: dict[str, Any] = {}
    for name, kind in _TABLE_KEYS.items():
        flag = getattr(args, name)
        value: Any = flag if flag is not None else table.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigError(f"[sync] {name} has the wrong type ({type(value).__name__})")
        if name in _LOWEST:
            _check_number(name, value, flag is not None)
        merged[name] = value
    for required in ("table", "key"):
        if required not in merged:
            raise ConfigError(
                f"no {required} given: pass --{required} or set {required} in [sync] of "
                "autoops.toml"
            )
    return merged


def _check_number(name: str, value: Any, from_flag: bool) -> None:
    lowest, inclusive = _LOWEST[name]
    if not math.isfinite(value) or value < lowest or (value == lowest and not inclusive):
        where = f"--{name.replace('_', '-')}" if from_flag else f"[sync] {name}"
        bound = f">= {lowest:g}" if inclusive else f"above {lowest:g}"
        raise ConfigError(f"{where} must be a finite number {bound}, got {value!r}")


def _samples(name: str, report: SyncReport | None, cache: CacheClient) -> list[MetricSample]:
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
        samples += [
            MetricSample(
                "autoops_sync_rows_read",
                "Rows read by the last pass",
                report.rows_read,
                labels,
            ),
            MetricSample(
                "autoops_sync_keys_written",
                "Keys written by the last pass",
                report.keys_written,
                labels,
            ),
            MetricSample(
                "autoops_sync_keys_deleted",
                "Keys deleted by the last pass",
                report.keys_deleted,
                labels,
            ),
            MetricSample(
                "autoops_sync_duration_seconds",
                "Duration of the last pass",
                report.duration_seconds,
                labels,
            ),
        ]
    return samples


def _body(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    options = _options(args, settings.section("sync"))
    interval = float(options.pop("interval", 60.0))
    metrics_file = options.pop("metrics_file", None)
    namespace = options.pop("namespace", None)
    if metrics_file is not None and not os.path.isdir(os.path.dirname(metrics_file) or "."):
        raise ConfigError(f"--metrics-file {metrics_file}: its directory does not exist")
    db = DbClient.from_config(settings=settings)
    cache = CacheClient.from_config(settings=settings, namespace=namespace)
    with db, cache:
        sync = CacheSync(db, cache, **options)
        name = sync.name

        def record(report: SyncReport | None) -> None:
            if metrics_file is not None:
                try:
                    write_textfile(metrics_file, _samples(name, report, cache))
                except (OSError, AutoOpsError) as exc:
                    log.error("cannot write metrics to %s: %s", metrics_file, exc)

        with sync:
            if args.forever:
                sync.run_forever(interval, on_report=record)
                return EXIT_OK
            try:
                report = (
                    sync.reconcile()
                    if args.reconcile
                    else sync.run_once(full=args.full, handle_signals=True)
                )
            except ConfigError:
                raise
            except AutoOpsError:
                record(None)
                raise
            record(report)
            return EXIT_OK if report.completed else EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``autoops-sync`` with ``argv`` (default: the command line); returns the exit code."""
    return run_command("autoops-sync", _body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
