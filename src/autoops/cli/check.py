"""``autoops-check``: run one check or all of ``[monitor]``, as a Nagios plugin, JSON, or
Prometheus metrics (a node_exporter textfile or a scrape endpoint).

With ``-q`` only the lines of checks that are not OK are printed, so cron mails only problems.
Exit codes are the Monitoring Plugins ones, not the other commands': 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN, the worst over the checks run; a configuration or usage error is 3
(UNKNOWN), since Nagios reads 2 as CRITICAL.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from .._errors import AutoOpsError, ConfigError
from ..monitor import (
    CheckCollector,
    CheckStatus,
    Monitor,
    monitor_from_settings,
    results_as_json,
    results_as_nagios,
    write_prometheus,
)
from ..monitor._result import without_semicolons
from ._common import add_common_arguments, settings_from, setup_logging

__all__ = ["main"]

_NAME = "autoops-check"


class _PluginParser(argparse.ArgumentParser):
    """Usage errors exit 3 (UNKNOWN), as Monitoring Plugins do."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(int(CheckStatus.UNKNOWN), f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _PluginParser(
        prog=_NAME,
        description="Run the health checks of [monitor] in the settings file, in parallel.",
        epilog="Exit code: the worst status (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).",
    )
    parser.add_argument("checks", nargs="*", metavar="NAME", help="checks to run (default: all)")
    parser.add_argument(
        "--format", choices=["nagios", "json"], default="nagios", help="output (default: nagios)"
    )
    parser.add_argument(
        "--textfile",
        metavar="PATH",
        help="also write Prometheus metrics there, atomically (default: [monitor] textfile)",
    )
    parser.add_argument(
        "--serve",
        metavar="[ADDR:]PORT",
        help="serve Prometheus metrics, running the checks at each scrape, until stopped",
    )
    parser.add_argument(
        "--deadline", type=float, metavar="SECONDS", help="overall deadline (default: config or 60)"
    )
    parser.add_argument(
        "--no-notify", action="store_true", help="do not send notifications for this run"
    )
    parser.add_argument("--list", action="store_true", help="list the configured checks and exit")
    add_common_arguments(parser)
    return parser


def _serve(monitor: Monitor, names: Sequence[str], where: str, notify: bool) -> int:
    # Only --serve needs the HTTP exporter; a plain check run stays quick to start.
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415

    address, _, port_text = where.rpartition(":")
    port = int(port_text) if port_text.isdigit() else 0
    if not 1 <= port <= 65535:
        raise ConfigError(f"--serve takes [ADDR:]PORT with a port from 1 to 65535, got {where!r}")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CheckCollector(lambda: monitor.run(names, notify=notify)))
    try:
        start_http_server(port, addr=address or "127.0.0.1", registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {where}: {exc.strerror}") from None
    print(
        f"{_NAME}: serving metrics on http://{address or '127.0.0.1'}:{port}/metrics",
        file=sys.stderr,
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    return 0


def _body(args: argparse.Namespace) -> int:
    # Host checks and remediation connect over SSH: paramiko's INFO lines only with -v.
    logging.getLogger("paramiko").setLevel(logging.NOTSET if args.verbose else logging.WARNING)
    settings = settings_from(args)
    monitor = monitor_from_settings(settings)
    textfile = args.textfile or settings.section("monitor").get("textfile")
    if args.deadline is not None:
        if not math.isfinite(args.deadline) or args.deadline <= 0:
            raise ConfigError(
                f"--deadline must be a number of seconds above 0, got {args.deadline:g}"
            )
        monitor.deadline = args.deadline
    if args.list:
        for check in monitor.checks.values():
            print(f"{check.name}\t{check.kind}\ttimeout {check.timeout:g} s")
        return 0
    monitor.select(args.checks)
    if args.serve:
        return _serve(monitor, args.checks, args.serve, not args.no_notify)
    results = monitor.run(args.checks, notify=not args.no_notify)
    if textfile:
        write_prometheus(textfile, results)
    if args.format == "json":
        print(results_as_json(results))
    else:
        # -q keeps cron mail for problems: only the lines of checks that are not OK.
        shown = [result for result in results if result.status is not CheckStatus.OK]
        if shown or not args.quiet:
            print(results_as_nagios(shown if args.quiet else results))
    return int(CheckStatus.worst(result.status for result in results))


def _unknown(args: argparse.Namespace, text: str) -> int:
    """Say why nothing could be checked, in the format asked for, and exit UNKNOWN."""
    line = " ".join(without_semicolons(text).split())
    if args.format == "json":
        unknown = CheckStatus.UNKNOWN
        print(
            json.dumps(
                {"status": unknown.name, "exit_code": int(unknown), "error": line, "checks": []}
            )
        )
    else:
        print(f"{_NAME} UNKNOWN: {line}")
    return int(CheckStatus.UNKNOWN)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``autoops-check``; returns the worst status as the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return _body(args)
    except ConfigError as exc:
        return _unknown(args, f"configuration error: {exc}")
    except AutoOpsError as exc:
        return _unknown(args, str(exc))
    except KeyboardInterrupt:
        return _unknown(args, "interrupted")
