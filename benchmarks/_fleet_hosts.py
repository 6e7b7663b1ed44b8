"""Many loopback "hosts" for the fleet and deploy benchmarks: local users behind a few sshd.

Each host is a local user (``autoops-fleet-NN``, login shell /bin/sh, unlocked for key logins)
reached through one of a handful of sshd processes, so 50 hosts cost 50 logins but not 50
daemons. All users accept one client key; one known_hosts file holds every daemon's key.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from _support.sshd import SshServer, keygen, make_server

USER_PREFIX = "autoops-fleet-"


def ensure_user(name: str) -> None:
    """A local user whose login shell is plain /bin/sh, unlocked for key logins."""
    if subprocess.run(["id", name], capture_output=True, check=False).returncode != 0:
        subprocess.run(
            [
                "useradd",
                "--shell",
                "/bin/sh",
                "--home-dir",
                f"/tmp/{name}-home",
                "--create-home",
                name,
            ],
            check=True,
        )
    subprocess.run(["usermod", "-p", "*", name], check=True)


@dataclass
class FleetHosts:
    servers: list[SshServer]
    users: list[str]
    key: Path
    known_hosts: Path

    def addresses(self, count: int) -> list[str]:
        """``count`` hosts: user ``i`` behind sshd ``i mod daemons``."""
        return [
            f"{self.users[i]}@127.0.0.1:{self.servers[i % len(self.servers)].port}"
            for i in range(count)
        ]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_hosts(workdir: Path, hosts: int, daemons: int = 5) -> FleetHosts:
    """Start ``daemons`` sshd (MaxStartups and MaxSessions raised) and make ``hosts`` users."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)  # noqa: S103 - sshd reads authorized_keys as each user
    keygen(workdir / "client_key")
    servers = [make_server(workdir / f"sshd{i}", workdir / "client_key") for i in range(daemons)]
    for server in servers:
        server.start()
    users = [f"{USER_PREFIX}{index:02d}" for index in range(hosts)]
    for user in users:
        ensure_user(user)
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text("".join(server.host_key_line + "\n" for server in servers))
    return FleetHosts(servers, users, workdir / "client_key", known_hosts)
