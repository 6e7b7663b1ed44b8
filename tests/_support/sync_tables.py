"""Tables for the CacheSync tests, and the check that a cache holds exactly a table."""

from __future__ import annotations

from typing import Any

import orjson

import autoops

USERS_DDL = (
    "CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64) NOT NULL,"
    " email VARCHAR(128) NOT NULL, password_hash CHAR(60) NOT NULL,"
    " deleted TINYINT NOT NULL DEFAULT 0,"
    " updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), INDEX (updated_at))"
)
CACHED = ("id", "username", "email", "deleted", "updated_at")


def create_users(db: autoops.DbClient, count: int, *, start: int = 1) -> None:
    """``count`` users with ids from ``start``, updated at fixed times in 2026-01-01."""
    db.execute(USERS_DDL)
    add_users(db, range(start, start + count))


def add_users(db: autoops.DbClient, ids: range, *, stamp: str | None = None) -> None:
    """Insert users with the given ids (their updated_at is ``stamp`` or derived from the id)."""
    rows = [
        (
            i,
            f"user{i}",
            f"user{i}@example.com",
            "$2b$12$" + "x" * 53,
            stamp or f"2026-01-01 00:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 7:06d}",
        )
        for i in ids
    ]
    for start in range(0, len(rows), 5000):
        db.executemany(
            "INSERT INTO users (id, username, email, password_hash, updated_at)"
            " VALUES (%s, %s, %s, %s, %s)",
            rows[start : start + 5000],
        )


def quote(db: autoops.DbClient, name: str) -> str:
    """Quote any legal name (``order-items``, ``usérs``) for ``db``'s dialect."""
    mark = "`" if db.dialect == "mysql" else '"'
    return mark + name.replace(mark, mark * 2) + mark


def expected_cache(
    db: autoops.DbClient,
    *,
    table: str = "users",
    columns: tuple[str, ...] = CACHED,
    key: str = "users:{id}",
    deleted_column: str | None = None,
    key_column: str = "id",
) -> dict[str, Any]:
    """What the cache must hold for ``table``: key -> the row as a sync writes it, decoded:
    the codec's JSON with BIGINTs beyond 2**53 - 1 as strings, times at the column's declared
    precision and JSON columns embedded (docs/clients.md)."""
    codec = autoops.JsonCodec(safe_integers=True)
    quoted = ", ".join(quote(db, column) for column in columns)
    extra = f", {quote(db, deleted_column)} AS _gone" if deleted_column else ""
    rows = db.query(f"SELECT {quoted}{extra} FROM {quote(db, table)}")
    digits: dict[str, int] = {}
    documents: set[str] = set()
    if db.dialect == "mysql":
        for column in db.query(
            "SELECT COLUMN_NAME AS name, DATA_TYPE AS type, DATETIME_PRECISION AS digits,"
            " COLUMN_TYPE AS full_type FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            (table,),
        ):
            if column["type"] in ("datetime", "timestamp", "time"):
                digits[column["name"]] = column["digits"] or 0
            if column["type"] == "json" or (
                column["type"] == "longtext"
                and db.query_one(
                    "SELECT 1 AS y FROM information_schema.CHECK_CONSTRAINTS WHERE"
                    " CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = %s AND CHECK_CLAUSE = %s",
                    (table, f"json_valid(`{column['name']}`)"),
                )
            ):
                documents.add(column["name"])

    def value(name: str, raw: Any) -> Any:
        if raw is None:
            return None
        if name in documents:
            return orjson.loads(raw)
        if name in digits:
            text = orjson.loads(autoops.JsonCodec(fraction_digits=6).encode(raw))
            whole, _, fraction = text.partition(".")
            return f"{whole}.{fraction[: digits[name]]}" if digits[name] else whole
        return orjson.loads(codec.encode(raw))

    return {
        key.format(**{key_column: row[key_column]}): {c: value(c, row[c]) for c in columns}
        for row in rows
        if not row.get("_gone")
    }


def cached_rows(cache: autoops.CacheClient, prefix: str = "users:") -> dict[str, Any]:
    """Every key under ``prefix`` (namespace stripped) with its decoded value."""
    namespace = len(cache.key(""))
    keys = [
        key.decode()[namespace:]
        for batch in cache.scan_prefix(cache.key(prefix), 1000)
        for key in batch
    ]
    return cache.get_many(keys)


def make_sync(
    db: autoops.DbClient, cache: autoops.CacheClient, **options: Any
) -> autoops.CacheSync:
    """The users-table sync the tests share: password excluded, small batches, no progress line."""
    settings: dict[str, Any] = {
        "table": "users",
        "key": "users:{id}",
        "exclude": ["password_hash"],
        "updated_column": "updated_at",
        "batch_size": 100,
        "progress": False,
        **options,
    }
    return autoops.CacheSync(db, cache, **settings)
