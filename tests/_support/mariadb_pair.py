"""Private MariaDB servers on loopback: a primary and replica for the monitor's replication
checks, a server with a binary log, and a TLS-only server.

The shared server has no binary log and no TLS (and must not be reconfigured), so these are
throwaway mariadbd instances made with mariadb-install-db in a temporary directory.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from _support.certs import ServerTls
from _support.sshd import free_port

MARIADBD = "/usr/sbin/mariadbd"


@dataclass
class MariaDbInstance:
    port: int
    datadir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/"

    def connect(self) -> pymysql.connections.Connection[pymysql.cursors.DictCursor]:
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user="root",
            autocommit=True,
            cursorclass=pymysql.cursors.DictCursor,
        )

    def admin_connection(self) -> pymysql.connections.Connection[pymysql.cursors.DictCursor]:
        """root over the server's unix socket, which a TLS-only server still accepts."""
        return pymysql.connect(
            unix_socket=str(self.datadir / "mysqld.sock"),
            user="root",
            autocommit=True,
            cursorclass=pymysql.cursors.DictCursor,
        )

    def start(self, *options: str) -> None:
        log_path = self.datadir.parent / f"mariadbd-{self.port}.log"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    MARIADBD,
                    "--no-defaults",
                    f"--datadir={self.datadir}",
                    f"--port={self.port}",
                    "--bind-address=127.0.0.1",
                    f"--socket={self.datadir}/mysqld.sock",
                    f"--pid-file={self.datadir}/mysqld.pid",
                    "--user=root",
                    "--innodb-buffer-pool-size=16M",
                    "--skip-log-error",
                    f"--tmpdir={private_tmpdir(self.datadir)}",
                    *options,
                ],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd on {self.port} did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def private_tmpdir(datadir: Path) -> Path:
    """A temporary directory for one private server alone: mariadbd deletes every ``#sql*``
    file in its tmpdir when it starts, so one left at /tmp wipes the temporary tables of the
    shared server (and of other private ones) mid-query ("Error on delete of '/tmp/#sql-...'")."""
    path = datadir.parent / f"tmp-{datadir.name}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def install_datadir(datadir: Path) -> None:
    """A fresh MariaDB data directory with root reachable by password over TCP."""
    subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--user=root",
            f"--tmpdir={private_tmpdir(datadir)}",
        ],
        check=True,
        capture_output=True,
    )


def start_with_binlog(workdir: Path) -> MariaDbInstance:
    """A private server with a binary log, as a primary has (the shared server has none)."""
    server = MariaDbInstance(free_port(), workdir / "binlogged")
    install_datadir(server.datadir)
    server.start("--server-id=1", f"--log-bin={server.datadir}/binlog")
    return server


def start_with_tls(workdir: Path, tls: ServerTls) -> MariaDbInstance:
    """A private server whose TCP port takes TLS connections only (require_secure_transport)."""
    server = MariaDbInstance(free_port(), workdir / "tls")
    install_datadir(server.datadir)
    server.start(
        f"--ssl-ca={tls.ca_file}",
        f"--ssl-cert={tls.cert_file}",
        f"--ssl-key={tls.key_file}",
        "--require-secure-transport=ON",
    )
    return server


def start_pair(workdir: Path) -> tuple[MariaDbInstance, MariaDbInstance]:
    """Install one datadir, copy it, start a primary with a binary log and a replica of it."""
    template = workdir / "template"
    install_datadir(template)
    primary = MariaDbInstance(free_port(), workdir / "primary")
    replica = MariaDbInstance(free_port(), workdir / "replica")
    shutil.copytree(template, primary.datadir)
    shutil.copytree(template, replica.datadir)
    primary.start("--server-id=1", f"--log-bin={primary.datadir}/binlog")
    replica.start("--server-id=2", "--read-only=1")
    connection = replica.connect()
    with connection.cursor() as cursor:
        cursor.execute(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USER='root', "
            "MASTER_PASSWORD='', MASTER_LOG_FILE='binlog.000001', MASTER_LOG_POS=4",
            (primary.port,),
        )
        cursor.execute("START SLAVE")
    connection.close()
    return primary, replica
