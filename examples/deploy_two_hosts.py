"""Deploy a small web app to two (or more) hosts with a health check, rolled back if it fails.

The app is a static page served by ``python3 -m http.server``, restarted by an ``after_switch``
hook (all three streams redirected, so the SSH session does not wait for it). The deploy takes
the lock on every host, uploads and unpacks the release beside the old one, switches one host at
a time, and checks each over HTTP before the next; a failing check rolls every switched host back.

    python examples/deploy_two_hosts.py deploy@web1:22 deploy@web2:22 \\
        --deploy-to /srv/hello --port 8080 --known-hosts ~/.ssh/known_hosts
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import autoops

RESTART = autoops.Hook(
    'pidfile="$DEPLOY_TO/shared/app.pid"\n'
    '[ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null\n'
    'nohup python3 -m http.server "$APP_PORT" >/dev/null 2>&1 </dev/null &\n'
    'echo $! > "$pidfile"',
    phase="after_switch",
)


def build_app(directory: Path, release: str) -> Path:
    app = directory / "hello"
    app.mkdir()
    (app / "index.html").write_text(f"<h1>hello from release {release}</h1>\n")
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hosts", nargs="+", help="user@host:port, two or more")
    parser.add_argument("--deploy-to", required=True, help="e.g. /srv/hello (may use {ssh_port})")
    parser.add_argument(
        "--port", action="append", type=int, help="app port: once for all hosts, or once each"
    )
    parser.add_argument("--key", help="SSH private key (default: agent and ~/.ssh)")
    parser.add_argument("--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts)")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="-v: SSH (paramiko) too, -vv: debug"
    )
    args = parser.parse_args(argv)
    # autoops's own steps at INFO; paramiko's per-connection INFO lines only when asked for.
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("autoops").setLevel(min(logging.INFO, logging.getLogger().level))

    ports = args.port or [8080]
    if len(ports) not in {1, len(args.hosts)}:
        parser.error("give --port once, or once per host")
    if len(ports) == 1:
        ports = ports * len(args.hosts)
    deployer = autoops.Deployer(
        args.hosts,
        args.deploy_to,
        key_filename=args.key,
        known_hosts=args.known_hosts,
        host_vars={
            host: {"APP_PORT": str(port)} for host, port in zip(args.hosts, ports, strict=True)
        },
        hooks=[RESTART],
        health_check=autoops.HealthCheck.http(
            "http://{host}:{APP_PORT}/", contains="hello from release", timeout=15
        ),
        batch_size=1,
        keep_releases=3,
    )
    release = autoops.new_release_id()
    with tempfile.TemporaryDirectory() as scratch:
        try:
            result = deployer.deploy(build_app(Path(scratch), release), release_id=release)
        except autoops.LockHeldError as exc:
            print(f"not deployed: {exc}", file=sys.stderr)
            return 75
        except autoops.DeployError as exc:
            print(repr(exc.result), file=sys.stderr)
            return 1
    print(repr(result))
    print(f"deployed {release} at {datetime.now(UTC):%H:%M:%S} UTC; current: {deployer.current()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
