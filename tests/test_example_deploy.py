"""examples/deploy_two_hosts.py, run as users run it, against two real sshd hosts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _support.sshd import SshServer, free_port

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "deploy_two_hosts.py"


@pytest.fixture
def two_hosts(sshd_factory: Callable[[], SshServer], tmp_path: Path) -> Iterator[list[SshServer]]:
    servers = [sshd_factory(), sshd_factory()]
    yield servers
    for pidfile in tmp_path.glob("srv/*/shared/app.pid"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_the_example_deploys_a_page_that_both_hosts_serve(
    two_hosts: list[SshServer], tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(server.host_key_line + "\n" for server in two_hosts))
    ports = [free_port(), free_port()]
    command = [
        sys.executable, str(EXAMPLE), *(server.address for server in two_hosts),
        "--deploy-to", f"{tmp_path}/srv/{{ssh_port}}",
        "--port", str(ports[0]), "--port", str(ports[1]),
        "--key", str(two_hosts[0].client_key), "--known-hosts", str(known_hosts),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 0, result.stderr
    assert "deployed" in result.stdout
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert "hello from release" in response.read().decode()
    assert "paramiko" not in result.stderr
