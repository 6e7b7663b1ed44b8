"""Backup benchmarks: autoops against the shell pipelines it replaces, side by side in one run.

MySQL: the 1,000,000-row ``users`` table, backup vs ``mariadb-dump ... | gzip -1 > file`` and
restore vs ``gunzip -c file | mariadb db`` (into ``autoops_bench_restore``, dropped after).
Redis: a logical dump and restore of 1,000,000 keys in db 12 (namespace ``autoops_bench_backup``,
removed after) against the RDB snapshot of the whole server and its restore into a live Redis.
Encryption: the same ``users`` backup and restore with and without ``Encryption`` (age, X25519),
and the cipher's own throughput.
Each figure is the median of ``--rounds`` runs, the peers interleaved so machine noise falls on
both; the load average is printed beside them (the machine may be shared).

Run: ``.venv/bin/python benchmarks/bench_backup.py [--rounds 3] [--skip-redis] [--skip-mysql]
[--skip-encryption] [--compression zstd|gzip]``
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

import autoops
from _users import ADMIN_URL, admin_connection, ensure_users_table

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


def report(name: str, ours: list[float], peer: list[float]) -> None:
    mine, theirs = statistics.median(ours), statistics.median(peer)
    print(
        f"  {name}: autoops {mine:.2f} s, shell {theirs:.2f} s, ratio {mine / theirs:.2f}x "
        f"(load {load()})"
    )


def bench_mysql(rounds: int, work: Path, compressions: list[str]) -> None:
    url = ensure_users_table()
    host_args = ["-uroot", "-h127.0.0.1"]
    peer_file = work / "peer.sql.gz"
    peer_cmd = (
        f"mariadb-dump {' '.join(host_args)} {' '.join(DUMP_FLAGS)} autoops_bench users "
        f"| gzip -1 > {peer_file}"
    )
    for compression in compressions:
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
            started = time.perf_counter()
            backuper.restore_mysql(backup, ADMIN_URL.rsplit("/", 1)[0] + "/" + RESTORE_DB)
            restore_ours.append(time.perf_counter() - started)
            assert restored_rows() == 1_000_000
        drop_restore_db()
        print(f"MySQL users (1,000,000 rows), autoops {compression} vs mariadb-dump | gzip -1:")
        report("backup ", ours, peer)
        report("restore", restore_ours, restore_peer)
        peer_size = peer_file.stat().st_size
        print(
            f"  sizes: autoops {compression} {backup.size / 1e6:.1f} MB "
            f"(raw {backup.raw_size / 1e6:.1f} MB), gzip -1 {peer_size / 1e6:.1f} MB, "
            f"ratio {backup.size / peer_size:.2f}x"
        )
        backuper.delete(backup)


def fill_redis(client: redis.Redis, keys: int) -> None:
    """``keys`` strings of ~100 bytes under the bench namespace, one in ten with a TTL."""
    value = b"v" * 100
    for start in range(0, keys, 10_000):
        pipe = client.pipeline(transaction=False)
        for index in range(start, min(keys, start + 10_000)):
            if index % 10 == 0:
                pipe.set(f"{NAMESPACE}:{index}", value, ex=3600)
            else:
                pipe.set(f"{NAMESPACE}:{index}", value)
        pipe.execute()


def clear_namespace(client: redis.Redis) -> None:
    batch = []
    for key in client.scan_iter(match=f"{NAMESPACE}:*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


def bench_redis(keys: int, work: Path) -> None:
    source = redis.Redis.from_url(REDIS_BENCH_URL)
    target_url = REDIS_BENCH_URL.rsplit("/", 1)[0] + "/14"
    target = redis.Redis.from_url(target_url)
    target.flushdb()  # db 14 is the backup benchmark's own restore target
    clear_namespace(source)
    fill_redis(source, keys)
    backuper = autoops.Backuper(autoops.LocalStorage(work / "redis"), progress=False)
    cache = autoops.CacheClient.from_url(REDIS_BENCH_URL, namespace=NAMESPACE)
    try:
        started = time.perf_counter()
        logical = backuper.backup_redis(cache, mode="logical")
        dump_seconds = time.perf_counter() - started
        started = time.perf_counter()
        snapshot = backuper.backup_redis(cache, mode="rdb")
        rdb_seconds = time.perf_counter() - started
        rdb_file = work / "peer.rdb"
        started = time.perf_counter()
        subprocess.run(
            ["redis-cli", "-u", REDIS_BENCH_URL, "--rdb", str(rdb_file)],
            check=True,
            capture_output=True,
        )
        peer_seconds = time.perf_counter() - started
        started = time.perf_counter()
        restored = backuper.restore_redis(logical, target_url)
        restore_seconds = time.perf_counter() - started
        assert restored == keys, restored
        assert int(target.dbsize()) == keys
        target.flushdb()
        # The snapshot holds the whole server; its restore moves only db 12, the client's.
        db_keys = int(source.dbsize())
        started = time.perf_counter()
        rdb_restored = backuper.restore_redis(snapshot, target_url)
        rdb_restore_seconds = time.perf_counter() - started
        assert rdb_restored == int(target.dbsize()) >= keys, (rdb_restored, db_keys)
        delay = source.config_get("repl-diskless-sync-delay").get("repl-diskless-sync-delay")
        print(f"Redis, {keys:,} keys (100-byte strings, 10% with a TTL) in db 12:")
        print(
            f"  logical dump   : {dump_seconds:.2f} s, {keys / dump_seconds:,.0f} keys/s, "
            f"{logical.size / 1e6:.1f} MB"
        )
        print(
            f"  logical restore: {restore_seconds:.2f} s, {keys / restore_seconds:,.0f} keys/s "
            "(RESTORE ... REPLACE ABSTTL, pipelined)"
        )
        print(
            f"  RDB restore    : {rdb_restore_seconds:.2f} s, "
            f"{rdb_restored / rdb_restore_seconds:,.0f} keys/s ({rdb_restored:,} keys of db 12; "
            "a private redis-server loads the whole snapshot, then DUMP + RESTORE ABSTTL); "
            f"{rdb_restore_seconds / restore_seconds:.2f}x the logical restore's time"
        )
        print(
            f"  RDB snapshot   : {rdb_seconds:.2f} s for the whole server "
            f"({snapshot.key_count:,} keys, {snapshot.size / 1e6:.1f} MB zstd, "
            f"{snapshot.raw_size / 1e6:.1f} MB raw); redis-cli --rdb {peer_seconds:.2f} s, "
            f"ratio {rdb_seconds / peer_seconds:.2f}x; both include the server's "
            f"repl-diskless-sync-delay of {delay} s"
        )
        print(
            f"  logical dump vs RDB snapshot: {dump_seconds / rdb_seconds:.2f}x the time "
            f"({dump_seconds - rdb_seconds:+.2f} s)"
        )
    finally:
        cache.close()
        clear_namespace(source)
        target.flushdb()
        source.close()
        target.close()


def bench_encryption(rounds: int, work: Path) -> None:
    url = ensure_users_table()
    target = ADMIN_URL.rsplit("/", 1)[0] + "/" + RESTORE_DB
    encryption = autoops.Encryption.generate_key(work / "bench.key")
    plain = autoops.Backuper(autoops.LocalStorage(work / "plain"), progress=False)
    sealed = autoops.Backuper(
        autoops.LocalStorage(work / "sealed"), progress=False, encryption=encryption
    )
    times: dict[str, list[float]] = {
        "backup": [],
        "backup+enc": [],
        "restore": [],
        "restore+enc": [],
    }
    backups: dict[str, autoops.Backup] = {}
    for _ in range(rounds):
        for label, backuper in (("backup", plain), ("backup+enc", sealed)):
            if label in backups:
                backuper.delete(backups[label])
            started = time.perf_counter()
            backups[label] = backuper.backup_mysql(url, tables=["users"])
            times[label].append(time.perf_counter() - started)
    for _ in range(rounds):
        for label, backuper, backup in (
            ("restore", plain, backups["backup"]),
            ("restore+enc", sealed, backups["backup+enc"]),
        ):
            reset_restore_db()
            started = time.perf_counter()
            backuper.restore_mysql(backup, target)
            times[label].append(time.perf_counter() - started)
            assert restored_rows() == 1_000_000
    drop_restore_db()
    size = backups["backup"].size
    print(f"Encryption, MySQL users (1,000,000 rows, {size / 1e6:.1f} MB zstd), load {load()}:")
    for step in ("backup", "restore"):
        mine, theirs = statistics.median(times[step + "+enc"]), statistics.median(times[step])
        print(
            f"  {step:7}: encrypted {mine:.2f} s, plain {theirs:.2f} s, "
            f"ratio {mine / theirs:.2f}x ({(mine / theirs - 1) * 100:+.1f}%)"
        )
    bench_cipher(encryption)


class _Identity:
    """A compressor that does not compress, to time the cipher alone."""

    level = 0

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


def bench_cipher(encryption: autoops.Encryption, mebibytes: int = 64) -> None:
    """The cipher as the pipeline drives it: 1 MiB pieces in, 1 MiB reads out."""
    piece = os.urandom(1 << 20)
    started = time.perf_counter()
    encoder = encryption.encoder(_Identity())
    sealed = [encoder.feed(piece) for _ in range(mebibytes)]
    sealed.append(encoder.finish())
    encrypt_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with encryption.open(io.BytesIO(b"".join(sealed)), "bench") as reader:
        while reader.read(1 << 20):
            pass
    decrypt_seconds = time.perf_counter() - started
    print(
        f"  cipher alone ({mebibytes} MiB in 1 MiB pieces): encrypt "
        f"{mebibytes / encrypt_seconds:,.0f} MiB/s, decrypt {mebibytes / decrypt_seconds:,.0f} "
        f"MiB/s, load {load()}"
    )


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--redis-keys", type=int, default=1_000_000)
    parser.add_argument("--skip-mysql", action="store_true")
    parser.add_argument(
        "--compression", action="append", choices=["zstd", "gzip"], help="default: both"
    )
    parser.add_argument("--skip-encryption", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autoops-bench-backup-") as directory:
        work = Path(directory)
        if not args.skip_mysql:
            bench_mysql(args.rounds, work, args.compression or ["zstd", "gzip"])
        if not args.skip_redis:
            bench_redis(args.redis_keys, work)
        if not args.skip_encryption:
            bench_encryption(args.rounds, work)


if __name__ == "__main__":
    main()
