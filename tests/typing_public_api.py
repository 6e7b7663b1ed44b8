"""Type-checked, never run: the public API as a user's strict code would annotate it.

mypy --strict checks this file with the rest of tests/; if a public signature changes shape, this
is where it shows.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import autoops


def read_users(db: autoops.DbClient) -> list[autoops.Row]:
    rows = db.query("SELECT id FROM users WHERE id > %s", (0,))
    first: autoops.Row | None = db.query_one("SELECT 1 AS one")
    return rows if first else []


def copy_users(db: autoops.DbClient, cache: autoops.CacheClient) -> int:
    written = 0
    for batch in db.stream_batches("SELECT id, name FROM users", batch_size=1000):
        written += cache.set_many(
            {f"user:{row['id']}": row for row in batch}, ttl=dt.timedelta(hours=1)
        )
    return written


def in_a_transaction(db: autoops.DbClient) -> int:
    def body(tx: autoops.Transaction) -> int:
        return tx.execute("UPDATE users SET name = %(name)s", {"name": "x"})

    return db.run_transaction(body)


def policies() -> tuple[autoops.RetryPolicy, autoops.RetryPolicy]:
    return autoops.RetryPolicy(attempts=3, timeout=10.0), autoops.RetryPolicy.none()


def cached(cache: autoops.CacheClient) -> Any:
    return cache.get_or_set("k", lambda: {"v": 1}, ttl=60)


def clients_from_settings(
    settings: autoops.Settings,
) -> tuple[autoops.DbClient, autoops.CacheClient]:
    return autoops.DbClient.from_config(settings=settings), autoops.CacheClient.from_config(
        settings=settings
    )


def fleet_disk_use(fleet: autoops.Fleet) -> dict[str, float]:
    result: autoops.FleetResult = fleet.run(["df", "-P", "/"], timeout=30, env={"LC_ALL": "C"})
    failed: list[str] = result.failed_hosts
    status: autoops.HostStatus = result.hosts[0].status
    facts: dict[str, autoops.HostFacts] = fleet.facts(raise_on_failure=False)
    disks: tuple[autoops.DiskUsage, ...] = facts[fleet.hosts[0]].disks
    ports: tuple[autoops.ListeningPort, ...] = facts[fleet.hosts[0]].listening
    del failed, status, ports
    return {host: info.disk("/").use_percent for host, info in facts.items()} if disks else {}


def a_backend_class_builds_its_own_type(url: str) -> autoops.RedisCache:
    return autoops.RedisCache.from_url(url)


def a_checkpointed_batch(backend: autoops.CacheBackend, lock: tuple[str, bytes]) -> bool:
    rows = [(backend.key("users:1"), b'{"id":1}')]
    return backend.write_fenced(autoops.FencedBatch.from_items(lock, rows, ttl_ms=60_000))


def every_cache_is_a_backend(cache: autoops.CacheClient) -> autoops.CacheBackend:
    return cache


def built_from_settings(
    settings: autoops.Settings,
) -> tuple[autoops.CacheSync, autoops.Backuper]:
    return autoops.CacheSync.from_settings(settings), autoops.Backuper.from_settings(settings)
