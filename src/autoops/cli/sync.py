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
from collections.abc import Sequence

from .._errors import AutoOpsError, ConfigError
from ..sync import CacheSync
from ..sync._settings import SYNC_SETTINGS
from ._common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_common_arguments,
    run_command,
    settings_from,
)

__all__ = ["main"]

log = logging.getLogger("autoops.sync")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``autoops-sync``."""
    parser = argparse.ArgumentParser(
        prog="autoops-sync",
        description="Keep Redis in step with a MySQL table: a full pass, then incremental ones "
        "(--source binlog: a snapshot, then every committed change from the binary log).",
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
    parser.add_argument(
        "--interval",
        type=float,
        help="seconds between passes with --forever (binlog: between reports and metrics)",
    )
    parser.add_argument(
        "--read-from",
        choices=("primary", "replica"),
        help="read rows from a replica of [db] replicas within max_replica_lag (default primary)",
    )
    parser.add_argument(
        "--metrics-file", help="Prometheus textfile to write after each pass (atomically)"
    )
    parser.add_argument(
        "--source",
        choices=("poll", "binlog"),
        help="poll the table (default) or follow the MySQL/MariaDB binary log",
    )
    parser.add_argument(
        "--server-id", type=int, help="binlog mode: this reader's replica id (default: random)"
    )
    parser.add_argument(
        "--on-purged",
        choices=("error", "full"),
        help="binlog mode: when the checkpoint's log was purged, stop (default) or take a new "
        "snapshot",
    )
    return parser


def _body(args: argparse.Namespace) -> int:
    flags = {name: getattr(args, name) for name in SYNC_SETTINGS}
    with CacheSync.from_settings(settings_from(args), **flags) as sync:
        if args.forever:
            sync.run_forever(on_report=sync.write_metrics)
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
            sync.write_metrics(None)
            raise
        sync.write_metrics(report)
        return EXIT_OK if report.ok else EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``autoops-sync`` with ``argv`` (default: the command line); returns the exit code."""
    return run_command("autoops-sync", _body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
