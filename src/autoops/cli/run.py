"""``autoops-run``: one shell command on many hosts, for a terminal or cron.

Hosts and connection settings come from the ``[fleet]`` table of the settings file (else the
``[deploy]`` one); command-line options override them. Exit codes: 0 every host succeeded, 1 any
host failed, timed out or could not be reached, 2 bad usage or settings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._errors import ConfigError
from ..fleet import Fleet
from ._common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_common_arguments,
    add_ssh_arguments,
    run_command,
    settings_from,
)

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoops-run",
        description="Run a shell command on many hosts over SSH in parallel; print a table of "
        "every host's outcome.",
    )
    add_common_arguments(parser)
    parser.add_argument("command", help="the shell command line to run on every host")
    parser.add_argument(
        "--hosts",
        action="append",
        metavar="USER@HOST:PORT[,...]",
        help="hosts to run on, comma-separated (repeat; default: [fleet] or [deploy] hosts)",
    )
    add_ssh_arguments(parser)
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds a host's command may run (600)"
    )
    parser.add_argument("--sudo", action="store_true", help="run as root through sudo -n")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="print every output line as it arrives, prefixed with its host",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the results as JSON instead of a table"
    )
    return parser


def _hosts(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    hosts = [host.strip() for value in values for host in value.split(",")]
    if any(not host for host in hosts):
        raise ConfigError("--hosts has an empty entry (a stray comma?)")
    return hosts


def _body(args: argparse.Namespace) -> int:
    if args.concurrency is not None and args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    settings = settings_from(args)
    section = settings.section("fleet") or settings.section("deploy")
    fleet = Fleet.from_settings(
        section,
        hosts=_hosts(args.hosts),
        key_filename=args.key_filename,
        known_hosts=args.known_hosts,
        trust_unknown_hosts=args.trust_unknown_hosts,
        concurrency=args.concurrency,
        progress=False if (args.json or args.stream or args.quiet) else None,
    )
    with fleet:
        result = fleet.run(args.command, timeout=args.timeout, sudo=args.sudo, stream=args.stream)
    if args.json:
        print(result.as_json())
    else:
        print(result.table(width=100))
        for host in result.failed:
            detail = host.error or host.stderr.strip()[-500:]
            print(f"{host.host}: {host.status}: {detail}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``autoops-run``."""
    return run_command("autoops-run", _body, _parser(), argv)
