"""Reaching the real services the suite runs against; under CI a missing one fails the test."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote, urlsplit

import pymysql
import pytest

from _support.certs import ServerTls
from _support.sshd import free_port

MYSQL_ADMIN_URL = os.environ.get("AUTOOPS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("AUTOOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# The parts of the two URLs, for tests that build URLs of their own (a proxy in front of the
# server, another user, another database): every test follows AUTOOPS_TEST_*_URL, none hard-codes
# 127.0.0.1:3306 or :6379.
MYSQL_HOST = urlsplit(MYSQL_ADMIN_URL).hostname or "127.0.0.1"
MYSQL_PORT = urlsplit(MYSQL_ADMIN_URL).port or 3306
REDIS_HOST = urlsplit(REDIS_URL).hostname or "127.0.0.1"
REDIS_PORT = urlsplit(REDIS_URL).port or 6379
REDIS_DB = int(urlsplit(REDIS_URL).path.strip("/") or 0)


def mysql_test_url(database: str, *, user: str = "root", password: str = "") -> str:
    """A URL for ``database`` on the test server as ``user`` (``password`` percent-encoded)."""
    auth = f"{user}:{quote(password, safe='')}" if password else user
    return f"mysql://{auth}@{MYSQL_HOST}:{MYSQL_PORT}/{database}"


def redis_test_url(address: str | None = None, *, auth: str = "", db: int | None = None) -> str:
    """The test Redis URL, or the same database reached at ``address`` (a proxy's host:port), with
    ``auth`` ("user:password") instead of the URL's own credentials when given."""
    parts = urlsplit(REDIS_URL)
    userinfo = auth or parts.netloc.rpartition("@")[0]
    where = address or f"{REDIS_HOST}:{REDIS_PORT}"
    at = f"{userinfo}@" if userinfo else ""
    return f"{parts.scheme}://{at}{where}/{REDIS_DB if db is None else db}"


def _unavailable(message: str) -> NoReturn:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{message} (CI=true: a missing service is a failure, not a skip)")
    pytest.skip(message)


def require_tcp(name: str, url: str) -> None:
    """Fail under CI, skip elsewhere, when ``url``'s server does not accept connections."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or {"mysql": 3306, "redis": 6379}.get(parts.scheme, 0)
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        _unavailable(f"{name} is not reachable on {host}:{port}: {exc}")


def require_program(path: str, package: str) -> None:
    """Fail under CI, skip elsewhere, when a program the test needs is not installed."""
    if not os.path.exists(path):
        _unavailable(f"{path} is missing; install the Debian package {package}")


def admin_connection() -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    """A raw pymysql connection with admin rights on the test server (autocommit)."""
    parts = urlsplit(MYSQL_ADMIN_URL)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        autocommit=True,
    )


SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def run_script(
    name: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one of the commands (``scripts/autoops-backup`` ...) as a user would, in a process of
    its own with no settings file from the environment (unless ``env`` names one), no progress
    line and no stdin; ``env`` adds variables."""
    environment = {**os.environ, "AUTOOPS_PROGRESS": "0"}
    environment.pop("AUTOOPS_CONFIG", None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        check=False,
        env=environment,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def promtool_accepts(exposition: str | bytes) -> None:
    """Assert that ``promtool check metrics`` finds nothing wrong with a Prometheus exposition
    (a textfile's content or a scrape); fails, under CI, when promtool is not installed."""
    require_program("/usr/bin/promtool", "prometheus")
    data = exposition.encode() if isinstance(exposition, str) else exposition
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=data, capture_output=True, check=False
    )
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode(errors="replace")


def wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, seconds: float) -> None:
    """Wait until ``process`` accepts connections on ``port`` of 127.0.0.1; a RuntimeError if
    it exits first or takes longer than ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{name} on {port} did not start") from None
            time.sleep(0.02)


@contextlib.contextmanager
def redis_server(
    directory: Path,
    *arguments: str,
    tls: ServerTls | None = None,
    password: str | None = None,
) -> Iterator[int]:
    """A private redis-server on a free port (no persistence unless asked); yields the port.

    With ``tls`` the port is a TLS port and there is no plaintext port at all (``--port 0``);
    clients may present a certificate but need not. ``password`` is set through a 0600 config
    file, not the server's argv.
    """
    port = free_port()
    config: list[str] = []
    if password is not None:
        config_file = directory / f"redis-{port}.conf"
        config_file.write_text(f'requirepass "{password}"\n')
        config_file.chmod(0o600)
        config.append(str(config_file))
    if tls is not None:
        listen = [
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(tls.cert_file), "--tls-key-file", str(tls.key_file),
            "--tls-ca-cert-file", str(tls.ca_file), "--tls-auth-clients", "optional",
        ]  # fmt: skip
    else:
        listen = ["--port", str(port)]
    process = subprocess.Popen(
        [
            "redis-server",
            *config,
            *listen,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            *arguments,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, "redis-server", seconds=10)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
