"""``autoops-deploy``: deploy, roll back, inspect and push configuration from a terminal or cron.

Hosts and options come from the ``[deploy]`` table of the settings file; command-line options
override it. Exit codes: 0 done, 1 failed (or rolled back), 2 bad usage or settings, 75 another
deploy holds the lock.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from .._errors import ConfigError
from .._metrics import MetricSample, write_textfile
from ..deploy import ConfigPushError, Deployer, DeployError, DeployResult, HealthCheck, Hook
from ..deploy._deployer import HOOK_PHASES
from ..deploy._results import HookPhase
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
        prog="autoops-deploy",
        description="Locked, atomic, health-checked releases over SSH, rolled back on failure.",
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--host",
        action="append",
        dest="hosts",
        metavar="USER@HOST:PORT",
        help="a host to work on (repeat; default: [deploy] hosts)",
    )
    parser.add_argument("--deploy-to", metavar="PATH", help="the directory holding releases/")
    add_ssh_arguments(parser)
    parser.add_argument(
        "--metrics",
        metavar="PATH",
        help="write a Prometheus textfile for node_exporter after deploy or rollback",
    )
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="HOST=NAME=VALUE",
        help="a host variable, for hooks, checks and templates (repeat)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    deploy = commands.add_parser("deploy", help="ship a directory or tarball as a new release")
    deploy.add_argument("artifact")
    deploy.add_argument("--release-id", help="default: UTC time plus a random suffix")
    deploy.add_argument(
        "--only",
        action="append",
        metavar="USER@HOST:PORT",
        help="deploy to these configured hosts only (retry the failed ones; repeat)",
    )
    deploy.add_argument("--batch-size", type=int, help="hosts switched together (default 1)")
    deploy.add_argument("--max-failures", type=int, help="failed hosts tolerated (default 0)")
    deploy.add_argument("--keep-releases", type=int, help="releases kept per host (default 5)")
    deploy.add_argument("--shared-dir", action="append", dest="shared_dirs", metavar="PATH")
    deploy.add_argument("--shared-file", action="append", dest="shared_files", metavar="PATH")
    deploy.add_argument(
        "--no-reuse-artifact",
        dest="reuse_artifact",
        action="store_false",
        default=None,
        help="keep no copy of the artifact on the hosts, and remove one kept earlier (by "
        "default a host keeps the last one and is not sent the same bytes again)",
    )
    deploy.add_argument(
        "--hook",
        action="append",
        default=[],
        metavar="PHASE:COMMAND",
        help=f"a shell command at a phase ({', '.join(HOOK_PHASES)}); repeat; "
        "before_switch!:COMMAND runs once, on the first host",
    )
    _add_health_arguments(deploy)
    deploy.add_argument("--break-lock", action="store_true", help="break a stale deploy lock")
    deploy.add_argument(
        "--dry-run", action="store_true", help="show what would change and change nothing"
    )

    rollback = commands.add_parser("rollback", help="switch back to the previous good release")
    rollback.add_argument("--to", metavar="RELEASE", help="a named release instead")
    rollback.add_argument("--hook", action="append", default=[], metavar="PHASE:COMMAND")
    _add_health_arguments(rollback)
    rollback.add_argument("--break-lock", action="store_true")

    commands.add_parser("releases", help="each host's releases and current release")

    push = commands.add_parser("push-config", help="render a Jinja2 template to every host")
    push.add_argument("template")
    push.add_argument("dest", help="absolute path on the hosts")
    push.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="template variable"
    )
    push.add_argument("--mode", default="0644", help="octal file mode (default 0644)")
    push.add_argument("--owner")
    push.add_argument("--group")
    push.add_argument("--validate", metavar="COMMAND", help="check the staged file ({path})")
    push.add_argument("--on-change", metavar="COMMAND", help="run after a change (a reload)")
    push.add_argument("--dry-run", action="store_true", help="print diffs, change nothing")
    return parser


def _add_health_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--health-url", metavar="URL", help="HTTP check ({host}, host vars)")
    group.add_argument("--health-tcp", type=int, metavar="PORT", help="TCP port check")
    group.add_argument("--health-command", metavar="COMMAND", help="command check on the host")
    parser.add_argument("--health-contains", metavar="TEXT", help="text the HTTP body must hold")
    parser.add_argument("--health-timeout", type=float, default=30.0, metavar="SECONDS")


def _health(args: argparse.Namespace) -> HealthCheck | None:
    timeout = args.health_timeout
    if not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(f"--health-timeout must be a number of seconds above 0, got {timeout:g}")
    if args.health_url:
        return HealthCheck.http(args.health_url, contains=args.health_contains, timeout=timeout)
    if args.health_tcp is not None:
        return HealthCheck.tcp(args.health_tcp, timeout=timeout)
    if args.health_command:
        return HealthCheck.command(args.health_command, timeout=timeout)
    return None


def _hooks(texts: Sequence[str]) -> list[Hook]:
    hooks = []
    for text in texts:
        phase, separator, command = text.partition(":")
        if not separator:
            raise ConfigError(f"--hook {text!r} must be PHASE:COMMAND, e.g. after_switch:...")
        once = phase.endswith("!")
        # Hook refuses a phase outside HookPhase with a message naming the known ones.
        hooks.append(Hook(command, phase=cast(HookPhase, phase.rstrip("!")), once=once))
    return hooks


def _host_vars(
    texts: Sequence[str], section: dict[str, Any], hosts: Sequence[str] | None
) -> dict[str, dict[str, str]]:
    """[deploy.host_vars] plus --var, limited to --host's hosts when it is given."""
    merged: dict[str, dict[str, str]] = {
        host: dict(values)
        for host, values in section.get("host_vars", {}).items()
        if hosts is None or host in hosts
    }
    for text in texts:
        host, _, assignment = text.partition("=")
        name, separator, value = assignment.partition("=")
        if not separator:
            raise ConfigError(f"--var {text!r} must be HOST=NAME=VALUE")
        merged.setdefault(host, {})[name] = value
    return merged


def _deployer(args: argparse.Namespace) -> Deployer:
    section = dict(settings_from(args).section("deploy"))
    overrides: dict[str, Any] = {
        "hosts": args.hosts,
        "deploy_to": args.deploy_to,
        "key_filename": args.key_filename,
        "known_hosts": args.known_hosts,
        "trust_unknown_hosts": args.trust_unknown_hosts,
        "concurrency": args.concurrency,
        "host_vars": _host_vars(args.var, section, args.hosts) or None,
    }
    for name in (
        "batch_size",
        "max_failures",
        "keep_releases",
        "shared_dirs",
        "shared_files",
        "reuse_artifact",
    ):
        overrides[name] = getattr(args, name, None)
    if getattr(args, "hook", None):
        overrides["hooks"] = _hooks(args.hook)
    if getattr(args, "health_timeout", None) is not None:
        overrides["health_check"] = _health(args)
    return Deployer.from_settings(section, **overrides)


def _show(text: str, args: argparse.Namespace) -> None:
    if not args.quiet and (sys.stdout.isatty() or args.verbose or args.command != "deploy"):
        print(text)


def _body(args: argparse.Namespace) -> int:
    # paramiko logs every connection and login at INFO: on a terminal, a screenful per deploy.
    logging.getLogger("paramiko").setLevel(logging.NOTSET if args.verbose else logging.WARNING)
    deployer = _deployer(args)
    if args.command == "releases":
        releases = deployer.releases()
        for host, current in deployer.current().items():
            print(f"{host}: current {current or '(none)'}; releases {' '.join(releases[host])}")
        return EXIT_OK
    if args.command == "push-config":
        return _push(deployer, args)
    try:
        if args.command == "deploy" and args.dry_run:
            print(repr(deployer.plan(args.artifact, release_id=args.release_id)))
            return EXIT_OK
        if args.command == "deploy":
            result = deployer.deploy(
                args.artifact,
                release_id=args.release_id,
                hosts=args.only,
                break_lock=args.break_lock,
            )
        else:
            result = deployer.rollback(args.to, break_lock=args.break_lock)
    except DeployError as exc:
        _write_metrics(args.metrics, exc.result)
        print(repr(exc.result), file=sys.stderr)
        print(f"autoops-deploy: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    _write_metrics(args.metrics, result)
    _show(repr(result), args)
    return EXIT_OK


_LAST_SUCCESS = re.compile(
    r'^autoops_deploy_last_success_timestamp_seconds\{action="(\w+)"\} (\S+)$', re.M
)


def _write_metrics(path: str | None, result: DeployResult) -> None:
    """The outcome as gauges; the last success time survives failed runs (node_exporter alerts
    on its age), read back from the previous file."""
    if path is None:
        return
    previous: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError):
        text = Path(path).read_text(encoding="utf-8")
        previous = {action: float(value) for action, value in _LAST_SUCCESS.findall(text)}
    now = time.time()
    if result.ok:
        previous[result.action] = now
    labels = {"action": result.action}
    samples = [
        MetricSample(
            "autoops_deploy_success", "1 if the last run succeeded", float(result.ok), labels
        ),
        MetricSample(
            "autoops_deploy_duration_seconds",
            "wall time of the last run",
            result.duration_seconds,
            labels,
        ),
        MetricSample(
            "autoops_deploy_failed_hosts",
            "hosts that failed in the last run",
            len(result.failed),
            labels,
        ),
        MetricSample(
            "autoops_deploy_last_run_timestamp_seconds", "end of the last run", now, labels
        ),
    ]
    samples += [
        MetricSample(
            "autoops_deploy_last_success_timestamp_seconds",
            "end of the last successful run",
            value,
            {"action": action},
        )
        for action, value in sorted(previous.items())
    ]
    write_textfile(path, samples)


def _push(deployer: Deployer, args: argparse.Namespace) -> int:
    context: dict[str, str] = {}
    for text in args.set:
        name, separator, value = text.partition("=")
        if not separator:
            raise ConfigError(f"--set {text!r} must be NAME=VALUE")
        context[name] = value
    try:
        mode = int(args.mode, 8)
    except ValueError:
        raise ConfigError(f"--mode {args.mode!r} is not an octal mode such as 0644") from None
    try:
        result = deployer.push_config(
            args.template,
            args.dest,
            context,
            mode=mode,
            owner=args.owner,
            group=args.group,
            validate=args.validate,
            on_change=args.on_change,
            dry_run=args.dry_run,
        )
    except ConfigPushError as exc:
        print(repr(exc.result), file=sys.stderr)
        print(f"autoops-deploy: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    for host in result.hosts:
        if host.diff:
            print(host.diff, end="")
    if not args.quiet and (sys.stdout.isatty() or args.verbose or args.dry_run):
        print(repr(result))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``autoops-deploy`` with ``argv`` (default: the process's arguments)."""
    return run_command("autoops-deploy", _body, _parser(), argv)
