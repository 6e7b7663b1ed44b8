"""Backup benchmarks: autoops against the shell pipelines it replaces, side by side in one run.

MySQL: the 1,000,000-row ``users`` table, backup vs ``mariadb-dump ... | gzip -1 > file`` and
restore vs ``gunzip -c file | mariadb db`` (into ``autoops_bench_restore``, dropped after).
Redis: a logical dump and restore of 1,000,000 keys in db 12 (namespace ``autoops_bench_backup``,
removed after) against the RDB snapshot of the whole server. Each figure is the median of
``--rounds`` runs, the peers interleaved so machine noise falls on both.

Run: ``.venv/bin/python benchmarks/bench_backup.py [--rounds 3] [--skip-redis]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from _users import ADMIN_URL, admin_connection, ensure_users_table

import autoops

RESTORE_DB = "autoops_bench_restore"
REDIS_BENCH_URL = "redis://127.0.0.1:6379/12"
NAMESPACE = "autoops_bench_backup"
DUMP_FLAGS = [
    "--single-transaction",
    "--quick",
    "--routines",
    "--events",
    "--triggers",
    "--hex-blob",
    "--default-character-set=utf8mb4",
]


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def reset_restore_db() -> None:
    connection = admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{RESTORE_DB}`")
        cursor.execute(f"CREATE DATABASE `{RESTORE_DB}` CHARACTER SET utf8mb4")
    connection.close()


def drop_restore_db() -> None:
    connection = admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{RESTORE_DB}`")
    connection.close()


def restored_rows() -> int:
    connection = admin_connection(RESTORE_DB)
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM users")
        (count,) = cursor.fetchone() or (0,)
    connection.close()
    return int(count)


def report(name: str, ours: list[float], peer: list[float], unit: str = "s") -> None:
    mine, theirs = statistics.median(ours), statistics.median(peer)
    print(
        f"  {name}: autoops {mine:.2f} {unit}, shell {theirs:.2f} {unit}, ratio {mine / theirs:.2f}x"
    )


def bench_mysql(rounds: int, work: Path) -> None:
    url = ensure_users_table()
    host_args = ["-uroot", "-h127.0.0.1"]
    peer_file = work / "peer.sql.gz"
    peer_cmd = (
        f"mariadb-dump {' '.join(host_args)} {' '.join(DUMP_FLAGS)} autoops_bench users "
        f"| gzip -1 > {peer_file}"
    )
    for compression in ("zstd", "gzip"):
        backuper = autoops.Backuper(
            autoops.LocalStorage(work / compression), compression=compression, progress=False
        )
        ours: list[float] = []
        peer: list[float] = []
        restore_ours: list[float] = []
        restore_peer: list[float] = []
        backup = None
        for _ in range(rounds):
            peer.append(timed(lambda: subprocess.run(peer_cmd, shell=True, check=True)))  # noqa: S602
            if backup is not None:
                backuper.delete(backup)
            started = time.perf_counter()
            backup = backuper.backup_mysql(url, tables=["users"])
            ours.append(time.perf_counter() - started)
        assert backup is not None
        for _ in range(rounds):
            reset_restore_db()
            restore_peer.append(
                timed(
                    lambda: subprocess.run(  # noqa: S602
                        f"gunzip -c {peer_file} | mariadb {' '.join(host_args)} {RESTORE_DB}",
                        shell=True,
                        check=True,
                    )
                )
            )
            reset_restore_db()
            target = ADMIN_URL.rsplit("/", 1)[0] + "/" + RESTORE_DB
            restore_ours.append(timed(lambda: backuper.restore_mysql(backup, target)))
            assert restored_rows() == 1_000_000
        drop_restore_db()
        print(f"MySQL users (1,000,000 rows), autoops {compression} vs mariadb-dump | gzip -1:")
        report("backup ", ours, peer)
        report("restore", restore_ours, restore_peer)
        print(
            f"  sizes: autoops {compression} {backup.size / 1e6:.1f} MB "
            f"(raw {backup.raw_size / 1e6:.1f} MB), gzip -1 {peer_file.stat().st_size / 1e6:.1f} MB"
        )
        backuper.delete(backup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--skip-mysql", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autoops-bench-backup-") as directory:
        work = Path(directory)
        if not args.skip_mysql:
            bench_mysql(args.rounds, work)
        if not args.skip_redis:
            bench_redis(args.rounds, work)


if __name__ == "__main__":
    main()
