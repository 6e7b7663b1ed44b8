"""Run pytest where the shared MariaDB and Redis cannot be reached: a private network namespace
(its own loopback) holding a private mariadbd and redis-server, which AUTOOPS_TEST_MYSQL_URL and
AUTOOPS_TEST_REDIS_URL point at. A test that still talks to 127.0.0.1:3306 or :6379 fails there
instead of quietly writing into the shared servers.

    sudo .venv/bin/python tests/_support/isolated.py -q -x     # arguments go to pytest

Needs root (unshare --net) and mariadb-install-db.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
INSIDE = "AUTOOPS_ISOLATED_INSIDE"


def main(arguments: list[str]) -> int:
    if os.environ.get(INSIDE) != "1":
        command = ["unshare", "--net", sys.executable, __file__, *arguments]
        return subprocess.run(command, env={**os.environ, INSIDE: "1"}, check=False).returncode
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    sys.path.insert(0, str(TESTS))
    from _support.mariadb_pair import MariaDbInstance, install_datadir
    from _support.services import redis_server
    from _support.sshd import free_port

    with tempfile.TemporaryDirectory(prefix="autoops-isolated-") as workdir:
        mariadb = MariaDbInstance(free_port(), Path(workdir) / "mariadb")
        install_datadir(mariadb.datadir)
        mariadb.start()
        try:
            with redis_server(Path(workdir)) as redis_port:
                env = {
                    **os.environ,
                    "CI": "true",
                    "AUTOOPS_TEST_MYSQL_URL": f"mysql://root@127.0.0.1:{mariadb.port}/test",
                    "AUTOOPS_TEST_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                }
                print(
                    f"isolated: MariaDB on {mariadb.port}, Redis on {redis_port}; "
                    "127.0.0.1:3306 and :6379 unreachable",
                    file=sys.stderr,
                    flush=True,
                )
                command = [sys.executable, "-m", "pytest", *arguments]
                return subprocess.run(command, env=env, cwd=TESTS.parent, check=False).returncode
        finally:
            mariadb.stop()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
