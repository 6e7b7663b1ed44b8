"""What every autoops command shares: logging that is quiet under cron, exit codes, errors.

Exit codes follow sysexits where one fits, so a cron wrapper can act on them:
0 success, 1 the job failed, 2 bad usage or configuration, 75 (EX_TEMPFAIL) another runner holds
the lock (try again later), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final, TextIO

from .._config import Settings, load_settings
from .._errors import AutoOpsError, ConfigError, LockHeldError

__all__ = [
    "EXIT_FAILURE",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_common_arguments",
    "add_ssh_arguments",
    "run_command",
    "settings_from",
    "setup_logging",
]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_LOCKED: Final = 75
EXIT_INTERRUPTED: Final = 130


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``-v`` and ``-q``, the same on every command."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="settings file (default: $AUTOOPS_CONFIG, else ./autoops.toml if present)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="say more (-vv for debug)"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print errors only, even on a terminal"
    )


def add_ssh_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command working on hosts over SSH takes alike."""
    parser.add_argument("--key", dest="key_filename", metavar="FILE", help="SSH private key")
    parser.add_argument("--known-hosts", metavar="FILE", help="known_hosts file to check keys")
    parser.add_argument(
        "--trust-unknown-hosts",
        action="store_true",
        default=None,
        help="accept host keys not in known_hosts (unsafe; logged)",
    )
    parser.add_argument("--concurrency", type=int, help="hosts worked on at once (default 50)")


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """INFO on a terminal, WARNING when not a terminal (cron mails only what matters), ERROR
    with ``-q``, DEBUG with ``-vv``."""
    if quiet:
        level = logging.ERROR
    elif verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1 or sys.stderr.isatty():
        level = logging.INFO
    else:
        level = logging.WARNING
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings for ``--config`` (or the environment and ./autoops.toml)."""
    return load_settings(getattr(args, "config", None))


def run_command(
    name: str,
    body: Callable[[argparse.Namespace], int],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv``, set up logging, run ``body`` and turn autoops errors into one clear line on
    stderr and an exit code (never a traceback for an error autoops understands)."""
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", 0), getattr(args, "quiet", False))
    with warnings.catch_warnings():
        # A renamed setting is news for whoever runs the command: one line in the command's
        # voice, not Python's "file:line: FutureWarning" with a line of autoops source under it.
        warnings.showwarning = partial(_show_warning, name)
        return _run_body(name, body, args)


def _show_warning(
    name: str,
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    print(f"{name}: warning: {message}", file=file or sys.stderr)


def _run_body(
    name: str, body: Callable[[argparse.Namespace], int], args: argparse.Namespace
) -> int:
    try:
        return body(args)
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LockHeldError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except AutoOpsError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
