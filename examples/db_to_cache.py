"""The seed article's DB-to-cache loop, as it meant to be written.

Reads users from the database and keeps the cache in step, pass after pass: rows are streamed,
written in pipelined batches under namespaced keys as JSON, the password column is never read, SQL
uses bound parameters, transient failures are retried with backoff by the clients, a failed pass is
logged and the next one tried, and SIGINT/SIGTERM stop it cleanly after the current batch.

With no configuration it runs on SQLite (``autoops-demo.db``, created with a small demo ``users``
table) and the in-process cache, and says so; with ``AUTOOPS_DB_URL`` / ``AUTOOPS_CACHE_URL`` (or
autoops.toml) it runs against MySQL and Redis unchanged.

    python examples/db_to_cache.py --passes 2        # two passes, then exit
    python examples/db_to_cache.py --interval 30     # a long-lived worker
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time

import autoops

log = logging.getLogger("db_to_cache")
# The columns a cache reader needs; password_hash is deliberately not among them.
SELECT_USERS = (
    "SELECT id, username, email, updated_at FROM users WHERE id > %s ORDER BY id LIMIT %s"
)


def open_clients() -> tuple[autoops.DbClient, autoops.CacheClient]:
    settings = autoops.load_settings()
    if settings.db_url is None and settings.cache_url is None:
        log.info(
            "no AUTOOPS_DB_URL or AUTOOPS_CACHE_URL: demo on SQLite autoops-demo.db + memory cache"
        )
        db = autoops.SQLiteClient("autoops-demo.db")
        create_demo_users(db)
        return db, autoops.MemoryCache(namespace="app")
    log.info("database from %s, cache from %s", settings.db_url_source, settings.cache_url_source)
    return (
        autoops.DbClient.from_config(settings=settings),
        autoops.CacheClient.from_config(settings=settings, namespace="app"),
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
                (i, f"user{i}", f"user{i}@example.com", "$2b$12$" + "x" * 53, "2026-01-01 00:00:00")
                for i in range(1, count + 1)
            ],
        )


def sync_pass(
    db: autoops.DbClient, cache: autoops.CacheClient, stop: threading.Event, batch: int
) -> int:
    """Copy every user into the cache, page by primary key so a pass resumes nowhere twice."""
    last_id, written = 0, 0
    while not stop.is_set():
        rows = db.query(SELECT_USERS, (last_id, batch))
        if not rows:
            break
        written += cache.set_many({f"user:{row['id']}": row for row in rows})
        last_id = rows[-1]["id"]
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--passes", type=int, default=0, help="stop after N passes (0: run until stopped)"
    )
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between passes")
    parser.add_argument("--batch-size", type=int, default=5000, help="rows per batch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    db, cache = open_clients()
    done = 0
    with db, cache:
        while not stop.is_set():
            started = time.monotonic()
            try:
                written = sync_pass(db, cache, stop, args.batch_size)
                log.info(
                    "pass %d: %d users cached in %.2f s",
                    done + 1,
                    written,
                    time.monotonic() - started,
                )
            except autoops.AutoOpsError as exc:
                log.error("pass %d failed, will try again: %s", done + 1, exc)
            done += 1
            if args.passes and done >= args.passes:
                break
            stop.wait(args.interval)
        log.info("stopped after %d passes; user:1 is %s", done, cache.get("user:1"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
