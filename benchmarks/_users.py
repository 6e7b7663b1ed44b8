"""The benchmark table shared by the sync and backup benchmarks.

``users(id BIGINT PRIMARY KEY, username VARCHAR(64), email VARCHAR(128), password_hash CHAR(60),
updated_at TIMESTAMP(6), INDEX(updated_at))``, filled server-side from MariaDB's sequence engine
(seconds for a million rows), deterministic so every run compares the same data.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pymysql

ADMIN_URL = os.environ.get("AUTOOPS_BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
DATABASE = os.environ.get("AUTOOPS_BENCH_DATABASE", "autoops_bench")


def admin_connection(
    database: str | None = None,
) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    parts = urlsplit(ADMIN_URL)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=database,
        autocommit=True,
    )


def database_url(database: str = DATABASE) -> str:
    """The mysql:// URL of the benchmark database."""
    parts = urlsplit(ADMIN_URL)
    return f"{parts.scheme}://{parts.netloc}/{database}"


def ensure_users_table(rows: int = 1_000_000, table: str = "users") -> str:
    """Create ``autoops_bench.<table>`` with ``rows`` rows unless it already has them; returns
    the database URL."""
    connection = admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{DATABASE}` CHARACTER SET utf8mb4")
        cursor.execute(f"USE `{DATABASE}`")
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS `{table}` ("
            " id BIGINT PRIMARY KEY,"
            " username VARCHAR(64) NOT NULL,"
            " email VARCHAR(128) NOT NULL,"
            " password_hash CHAR(60) NOT NULL,"
            " updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),"
            " INDEX (updated_at)"
            ") ENGINE=InnoDB"
        )
        cursor.execute(f"SELECT COUNT(*) FROM `{table}`")
        (count,) = cursor.fetchone() or (0,)
        if count != rows:
            cursor.execute(f"TRUNCATE TABLE `{table}`")
            for start in range(1, rows + 1, 100_000):
                end = min(rows, start + 99_999)
                cursor.execute(
                    f"INSERT INTO `{table}` (id, username, email, password_hash, updated_at) "
                    "SELECT seq, CONCAT('user', seq), CONCAT('user', seq, '@example.com'), "
                    "CONCAT('$2b$12$', RPAD(SHA2(seq, 256), 53, 'x')), "
                    "TIMESTAMP'2026-01-01 00:00:00' + INTERVAL seq SECOND "
                    f"FROM seq_{start}_to_{end}"
                )
    connection.close()
    return database_url()


if __name__ == "__main__":
    print(ensure_users_table())
