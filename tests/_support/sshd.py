"""Real OpenSSH servers on loopback for tests: generated host keys, a free port, key auth only.

Modelled on ansible/pylibssh's test setup: ``sshd -D -f /dev/null`` with every setting given by
``-o``, a port found by binding port 0 first (sshd refuses Port=0), and a poll until it answers.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "autoops-test", "-f", str(path)],
        check=True,
    )


@dataclass
class SshServer:
    """One running sshd; ``known_hosts`` holds its host key for clients that check."""

    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_key_line: str
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    # sshd_config settings added to (or overriding) the defaults below, e.g. {"Ciphers": ...}.
    extra_options: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """``user@127.0.0.1:port``, the form Deployer and friends take."""
        return f"{self.user}@{self.host}:{self.port}"

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        options = {
            "Port": str(self.port),
            "ListenAddress": self.host,
            "HostKey": str(self.workdir / "host_key"),
            "PidFile": str(self.workdir / "sshd.pid"),
            "AuthorizedKeysFile": str(self.workdir / "authorized_keys"),
            "StrictModes": "no",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "PubkeyAuthentication": "yes",
            "PermitRootLogin": "prohibit-password",
            "UsePAM": "no",
            "Subsystem": "sftp internal-sftp",
            "MaxStartups": "200",
            "MaxSessions": "200",
            "LogLevel": "ERROR",
            **self.extra_options,
        }
        argv = [SSHD, "-D", "-e", "-f", "/dev/null"]
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        with (self.workdir / "sshd.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"sshd exited at start: {(self.workdir / 'sshd.log').read_text()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                    if sock.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd on port {self.port} did not answer within 10 s")

    def drop_sessions(self) -> None:
        """Kill sshd's per-connection children (every open session) and keep listening, as a
        connection cut mid-command looks to the client."""
        if self.process is not None:
            subprocess.run(["pkill", "-KILL", "-P", str(self.process.pid)], check=False)

    def stop(self) -> None:
        """Stop the listener and cut every session, as a host that goes down does."""
        if self.process is None or self.process.poll() is not None:
            return
        self.drop_sessions()  # sshd's per-connection children outlive the listener
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def make_server(workdir: Path, client_key: Path) -> SshServer:
    """Prepare (but do not start) an sshd in ``workdir`` that accepts ``client_key``."""
    workdir.mkdir(parents=True, exist_ok=True)
    keygen(workdir / "host_key")
    (workdir / "authorized_keys").write_text(
        Path(str(client_key) + ".pub").read_text(), encoding="ascii"
    )
    port = free_port()
    host_public = (workdir / "host_key.pub").read_text().split()
    host_key_line = f"[127.0.0.1]:{port} {host_public[0]} {host_public[1]}"
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(host_key_line + "\n", encoding="ascii")
    os.chmod(workdir, 0o755)  # noqa: S103 - sshd must read it as any user
    return SshServer(
        port=port,
        user=getpass.getuser(),
        client_key=client_key,
        known_hosts=known_hosts,
        host_key_line=host_key_line,
        workdir=workdir,
    )
