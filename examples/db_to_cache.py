"""The seed article's DB-to-cache loop, as it meant to be written, on autoops.CacheSync.

Keeps the cache in step with the users table, pass after pass: a full pass first (paged by
primary key, pipelined batches, namespaced JSON keys), then incremental passes on updated_at;
the password column is never cached; each batch is written with its checkpoint, so a crash
resumes where it stopped; a failed pass is logged and retried with backoff; SIGINT/SIGTERM stop
it cleanly after the current batch.

With no configuration it runs on SQLite (``autoops-demo.db``, created with a small demo ``users``
table) and the in-process cache, and says so; with ``AUTOOPS_DB_URL`` / ``AUTOOPS_CACHE_URL`` (or
autoops.toml) it runs against MySQL and Redis unchanged.

    python examples/db_to_cache.py --passes 2        # two passes, then exit
    python examples/db_to_cache.py --interval 30     # a long-lived worker
"""

from __future__ import annotations

import argparse
import logging

import autoops

log = logging.getLogger("db_to_cache")


def open_clients(namespace: str) -> tuple[autoops.DbClient, autoops.CacheClient]:
    settings = autoops.load_settings()
    if settings.db_url is None and settings.cache_url is None:
        log.info(
            "no AUTOOPS_DB_URL or AUTOOPS_CACHE_URL: demo on SQLite autoops-demo.db + memory cache"
        )
        db = autoops.SQLiteClient("autoops-demo.db")
        create_demo_users(db)
        return db, autoops.MemoryCache(namespace=namespace)
    log.info("database from %s, cache from %s", settings.db_url_source, settings.cache_url_source)
    return (
        autoops.DbClient.from_config(settings=settings),
        autoops.CacheClient.from_config(settings=settings, namespace=namespace),
    )


def create_demo_users(db: autoops.DbClient, count: int = 1000) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, username TEXT NOT NULL,"
        " email TEXT NOT NULL, password_hash TEXT NOT NULL, updated_at TEXT NOT NULL)"
    )
    if db.query_one("SELECT COUNT(*) AS n FROM users") == {"n": 0}:
        db.executemany(
            "INSERT INTO users VALUES (%s, %s, %s, %s, %s)",
            [
                (i, f"user{i}", f"user{i}@example.com", "$2b$12$" + "x" * 53, updated_at(i))
                for i in range(1, count + 1)
            ],
        )


def updated_at(i: int) -> str:
    """A distinct, increasing change time per demo row (one a second from 2026-01-01)."""
    return f"2026-01-01 {i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--passes", type=int, default=0, help="stop after N passes (0: run until stopped)"
    )
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between passes")
    parser.add_argument("--batch-size", type=int, default=5000, help="rows per batch")
    parser.add_argument("--namespace", default="app", help="cache key namespace (default app)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    db, cache = open_clients(args.namespace)
    sync = autoops.CacheSync(
        db,
        cache,
        table="users",
        key="user:{id}",
        exclude=["password_hash"],  # never cached
        updated_column="updated_at",
        batch_size=args.batch_size,
    )
    done = 0

    def after_pass(report: autoops.SyncReport) -> None:  # CacheSync logs the report itself
        nonlocal done
        done += 1
        if args.passes and done >= args.passes:
            sync.stop()

    with db, cache, sync:
        sync.run_forever(args.interval, on_report=after_pass)  # stops on SIGINT/SIGTERM too
        log.info("stopped after %d passes; user:1 is %s", done, cache.get("user:1"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
