"""A private MariaDB with a row-based binary log for the binlog CacheSync tests, and helpers
to reach it: one server per test module (the machine has two cores), a database per test."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pymysql

import autoops
from _support.background import in_background
from _support.mariadb_pair import MARIADBD, MariaDbInstance, install_datadir
from _support.services import require_program
from _support.sshd import free_port

ROW_LOG_OPTIONS = (
    "--server-id=1",
    "--binlog-format=ROW",
    "--binlog-row-image=FULL",
    "--binlog-row-metadata=FULL",
    # The tests commit many small transactions; durability of the private server is moot.
    "--innodb-flush-log-at-trx-commit=2",
    "--sync-binlog=0",
)


def start_row_logged(workdir: Path, *extra: str) -> MariaDbInstance:
    """A private server logging row events with full metadata, as source='binlog' needs."""
    require_program(MARIADBD, "mariadb-server")
    server = MariaDbInstance(free_port(), workdir / "row-logged")
    install_datadir(server.datadir)
    restart(server, *extra)
    return server


def restart(server: MariaDbInstance, *extra: str) -> None:
    """Stop ``server`` (if running) and start it again with the row-logging options."""
    server.stop()
    server.start(f"--log-bin={server.datadir}/binlog", *ROW_LOG_OPTIONS, *extra)


@contextmanager
def scratch_database(server: MariaDbInstance) -> Iterator[autoops.DbClient]:
    """A database of its own on ``server`` for one test, dropped afterwards."""
    name = f"bl_{uuid.uuid4().hex[:10]}"
    execute(server, "", f"CREATE DATABASE `{name}`")
    db = autoops.DbClient.from_url(f"{server.url}{name}")
    try:
        yield db
    finally:
        db.close()
        # A connection of its own: a test may have restarted the server meanwhile.
        execute(server, "", f"DROP DATABASE IF EXISTS `{name}`")


def execute(server: MariaDbInstance, database: str, *statements: str) -> None:
    """Run statements on a connection of their own (autocommit; BEGIN/COMMIT as written)."""
    connection = pymysql.connect(
        host="127.0.0.1", port=server.port, user="root", database=database or None, autocommit=True
    )
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()


@contextmanager
def steady_writer(
    server: MariaDbInstance, database: str, *, max_id: int, seed: int
) -> Iterator[Callable[[], int]]:
    """Updates, REPLACEs and deletes of ``users`` rows with ids below ``max_id`` (new ones too),
    each its own autocommit transaction, until the block ends; yields a function giving the
    number of statements so far."""
    count = 0

    def work(stop: threading.Event) -> None:
        nonlocal count
        connection = pymysql.connect(
            host="127.0.0.1", port=server.port, user="root", database=database, autocommit=True
        )
        rng = random.Random(seed)
        with connection.cursor() as cursor:
            while not stop.is_set():
                pk = rng.randrange(1, max_id)
                action = rng.random()
                if action < 0.5:
                    cursor.execute(
                        "UPDATE users SET username = %s WHERE id = %s", (f"w{count}", pk)
                    )
                elif action < 0.8:
                    cursor.execute(
                        "REPLACE INTO users (id, username, email, password_hash) "
                        "VALUES (%s, %s, 'e', 'p')",
                        (pk, f"r{count}"),
                    )
                else:
                    cursor.execute("DELETE FROM users WHERE id = %s", (pk,))
                count += 1
        connection.close()

    with in_background(work, "steady-writer"):
        yield lambda: count
