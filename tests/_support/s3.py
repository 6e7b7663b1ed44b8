"""A private S3-speaking server for the S3Storage tests: moto's standalone ``moto_server``.

It is a real HTTP server implementing the S3 API, started on a free loopback port and stopped by
its own PID; the tests talk to it through boto3 exactly as to S3.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from _support.services import wait_for_port
from _support.sshd import free_port

# moto accepts any key pair unless told to check them; these are its documented test values.
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"


@dataclass
class MotoServer:
    """A running moto_server: its endpoint URL and process."""

    endpoint_url: str
    port: int
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        """Kill it at once (SIGKILL), as a crashed server."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _moto_server_program() -> str:
    program = Path(sys.executable).with_name("moto_server")
    if not program.exists():
        raise RuntimeError("moto_server is not installed: pip install -e '.[dev]'")
    return str(program)


@contextlib.contextmanager
def moto_server(*, check_credentials: bool = False) -> Iterator[MotoServer]:
    """Start ``moto_server`` on a free 127.0.0.1 port; stop it by its PID. With
    ``check_credentials`` it checks every request's access key (and knows none), as S3 does."""
    port = free_port()
    env = dict(os.environ)
    if check_credentials:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    process = subprocess.Popen(
        [_moto_server_program(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    server = MotoServer(f"http://127.0.0.1:{port}", port, process)
    try:
        wait_for_port(port, process, "moto_server", seconds=30)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
