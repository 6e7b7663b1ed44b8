"""Binlog archive benchmark: ``Backuper.archive_binlogs`` against the shell commands it replaces,
side by side in one run.

A private mariadbd with a binary log (on a free loopback port, stopped by its PID) gets about
``--megabytes`` of row events in one closed binlog file. The peer is what a cron script would do:
``mariadb-binlog --read-from-remote-server --raw`` of the same files into a directory, then
``zstd -1 --rm`` on each. autoops does the same copy, walks the events, compresses, fsyncs, reads
the stored file back for its SHA-256 and writes the manifest. Each figure is the median of
``--rounds`` runs, the two interleaved; the load average is printed beside them.

Run: ``flock /tmp/autoops-bench.lock nice -n 5 .venv/bin/python benchmarks/bench_binlogs.py
[--megabytes 100] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import autoops  # noqa: E402
from _support.mariadb_pair import MariaDbInstance, start_with_binlog  # noqa: E402


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def fill(server: MariaDbInstance, megabytes: int) -> list[str]:
    """Write about ``megabytes`` of row events, close the file; the server's binlog names."""
    connection = server.connect()
    with connection.cursor() as cursor:
        cursor.execute("CREATE DATABASE bench")
        cursor.execute("USE bench")
        cursor.execute("CREATE TABLE bench.rows (id INT PRIMARY KEY, body VARCHAR(200))")
        cursor.execute("SET SESSION binlog_format = ROW")
        rows = megabytes * 1_000_000 // 150
        for start in range(0, rows, 100_000):
            cursor.execute(
                "INSERT INTO bench.rows SELECT seq, CONCAT(REPEAT(MD5(seq), 3), seq) "
                f"FROM seq_{start + 1}_to_{min(rows, start + 100_000)}"
            )
        cursor.execute("FLUSH BINARY LOGS")
        cursor.execute("SHOW BINARY LOGS")
        names = [row["Log_name"] for row in cursor.fetchall()]
    connection.close()
    return names


def peer(server: MariaDbInstance, names: list[str], directory: Path) -> float:
    options = directory / "client.cnf"
    options.write_text(f"[client]\nuser=root\nhost=127.0.0.1\nport={server.port}\n")
    started = time.perf_counter()
    subprocess.run(
        ["mariadb-binlog", f"--defaults-extra-file={options}", "--read-from-remote-server",
         "--raw", f"--result-file={directory}/", "--", *names],
        check=True,
    )  # fmt: skip
    subprocess.run(["zstd", "-1", "-q", "--rm", *[str(directory / n) for n in names]], check=True)
    return time.perf_counter() - started


def ours(server: MariaDbInstance, directory: Path) -> float:
    backuper = autoops.Backuper(autoops.LocalStorage(directory), progress=False)
    started = time.perf_counter()
    backuper.archive_binlogs(server.url)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autoops-bench-binlogs-") as work:
        server = start_with_binlog(Path(work) / "server")
        try:
            names = fill(server, args.megabytes)
            size = sum((server.datadir / name).stat().st_size for name in names)
            print(f"{len(names)} binlog files, {size / 1e6:.1f} MB; load {load()}")
            timings: dict[str, list[float]] = {"peer": [], "autoops": []}
            for round_number in range(args.rounds):
                for name in ("peer", "autoops"):
                    directory = Path(work) / f"{name}-{round_number}"
                    directory.mkdir()
                    if name == "peer":
                        timings[name].append(peer(server, names, directory))
                    else:
                        timings[name].append(ours(server, directory))
                    shutil.rmtree(directory)
            peer_s = statistics.median(timings["peer"])
            ours_s = statistics.median(timings["autoops"])
            print(
                f"mariadb-binlog --raw + zstd -1: {peer_s:.2f} s; archive_binlogs: {ours_s:.2f} s "
                f"({ours_s / peer_s:.2f}x, {size / ours_s / 1e6:.0f} MB/s); load {load()}"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
