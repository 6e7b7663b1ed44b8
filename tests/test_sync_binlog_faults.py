"""CacheSync(source="binlog") under faults: the runner killed mid-stream, the binlog connection
killed, Redis connections killed, the database restarted, the log purged. Each ends with the
cache equal to the table, or with a clear error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import redis

import autoops
from _support.binlog import execute, restart, scratch_database, start_row_logged
from _support.mariadb_pair import MariaDbInstance
from _support.services import REDIS_HOST, REDIS_PORT
from _support.sync_tables import cached_rows, create_users, expected_cache

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDbInstance]:
    instance = start_row_logged(tmp_path_factory.mktemp("binlog-faults"))
    yield instance
    instance.stop()


@pytest.fixture
def users(server: MariaDbInstance) -> Iterator[autoops.DbClient]:
    with scratch_database(server) as db:
        create_users(db, 500)
        yield db


def binlog_sync(
    db: autoops.DbClient, cache: autoops.CacheClient, **options: Any
) -> autoops.CacheSync:
    settings: dict[str, Any] = {
        "table": "users",
        "key": "users:{id}",
        "exclude": ["password_hash"],
        "batch_size": 100,
        "progress": False,
        "source": "binlog",
        **options,
    }
    return autoops.CacheSync(db, cache, **settings)


def equal(db: autoops.DbClient, cache: autoops.CacheClient) -> bool:
    return bool(cached_rows(cache) == expected_cache(db))


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still not true after {timeout} s: {condition}"
        time.sleep(0.2)


class Writer:
    """Updates, inserts and deletes rows of ``users`` on its own connection until stopped."""

    def __init__(self, server: MariaDbInstance, database: str) -> None:
        self.server, self.database = server, database
        self.stop = threading.Event()
        self.writes = 0
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        counter = 0
        while not self.stop.is_set():
            try:
                connection = pymysql.connect(
                    host="127.0.0.1",
                    port=self.server.port,
                    user="root",
                    database=self.database,
                    autocommit=True,
                )
            except pymysql.OperationalError:
                time.sleep(0.1)  # the server is restarting
                continue
            try:
                with connection.cursor() as cursor:
                    while not self.stop.is_set():
                        counter += 1
                        pk = counter % 700 + 1
                        if counter % 5 == 0:
                            cursor.execute("DELETE FROM users WHERE id = %s", (pk,))
                        else:
                            cursor.execute(
                                "INSERT INTO users (id, username, email, password_hash) "
                                "VALUES (%s, %s, 'e', 'p') "
                                "ON DUPLICATE KEY UPDATE username = VALUES(username)",
                                (pk, f"v{counter}"),
                            )
                        self.writes += 1
                        time.sleep(0.002)
            except pymysql.MySQLError:
                time.sleep(0.1)
            finally:
                connection.close()

    def more(self, count: int) -> Callable[[], bool]:
        """A condition: ``count`` more writes done than now."""
        target = self.writes + count
        return lambda: self.writes > target

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join()


class Follower:
    """``run_forever`` in a thread, stopped at the end."""

    def __init__(self, sync: autoops.CacheSync) -> None:
        self.sync = sync
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            self.sync.run_forever(stop_event=self.stop, handle_signals=False)
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Follower:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        assert self.error is None, self.error


def binlog_dump_threads(server: MariaDbInstance) -> list[int]:
    connection = server.connect()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'"
        )
        ids = [int(row["ID"]) for row in cursor.fetchall()]
    connection.close()
    return ids


def test_run_forever_follows_changes_as_they_commit(
    server: MariaDbInstance, users: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = binlog_sync(users, cache)
    with Follower(sync):
        wait_until(lambda: sync.status().checkpoint is not None)
        execute(server, users.connection_settings.database, "DELETE FROM users WHERE id = 1")
        wait_until(lambda: cache.get("users:1") is None)
        wait_until(lambda: equal(users, cache))
        status = sync.status()
        assert status.behind_bytes == 0
        lag = status.lag_seconds()
        assert lag is not None
        assert lag < 30


def test_killing_the_binlog_connection_is_followed_again(
    server: MariaDbInstance, users: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = binlog_sync(users, cache)
    with Follower(sync):
        with Writer(server, users.connection_settings.database) as writer:
            wait_until(lambda: bool(binlog_dump_threads(server)))
            for _ in range(3):
                more = writer.more(50)
                connection = server.connect()
                with connection.cursor() as cursor:
                    for thread_id in binlog_dump_threads(server):
                        cursor.execute(f"KILL CONNECTION {thread_id}")
                connection.close()
                wait_until(more)
        wait_until(lambda: equal(users, cache))


def test_killing_the_redis_connections_is_retried(
    server: MariaDbInstance, users: autoops.DbClient, redis_namespace: str
) -> None:
    name = f"binlog-{os.getpid()}"
    cache = autoops.CacheClient.from_url(
        f"redis://{REDIS_HOST}:{REDIS_PORT}/0", namespace=redis_namespace, client_name=name
    )
    raw = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    sync = binlog_sync(users, cache)
    with Follower(sync):
        with Writer(server, users.connection_settings.database) as writer:
            wait_until(lambda: sync.status().checkpoint is not None)
            for _ in range(3):
                more = writer.more(50)
                for client in raw.client_list():
                    if client.get("name") == name:
                        raw.client_kill_filter(_id=client["id"])
                wait_until(more)
        wait_until(lambda: equal(users, cache))
    cache.close()
    raw.close()


def test_a_restarted_database_is_followed_again_from_the_checkpoint(
    server: MariaDbInstance, users: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = binlog_sync(users, cache)
    with Follower(sync):
        with Writer(server, users.connection_settings.database) as writer:
            wait_until(lambda: sync.status().checkpoint is not None)
            wait_until(lambda: writer.writes > 100)
            restart(server)
            wait_until(writer.more(100))
        wait_until(lambda: equal(users, cache))
    assert sync.status().checkpoint.startswith("binlog.")  # type: ignore[union-attr]


RUNNER = """
import sys, autoops
db = autoops.DbClient.from_url(sys.argv[1])
cache = autoops.CacheClient.from_url(sys.argv[2], namespace=sys.argv[3])
sync = autoops.CacheSync(db, cache, table="users", key="users:{id}", exclude=["password_hash"],
                         batch_size=20, progress=False, source="binlog", lock_ttl=2)
sync.run_forever()
"""


def test_a_runner_killed_mid_stream_resumes_from_its_checkpoint(
    server: MariaDbInstance,
    users: autoops.DbClient,
    cache: autoops.CacheClient,
    redis_namespace: str,
    tmp_path: Path,
) -> None:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    database = users.connection_settings.database
    arguments = [
        sys.executable,
        str(script),
        f"{server.url}{database}",
        f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
        redis_namespace,
    ]
    with Writer(server, database) as writer:
        for _ in range(3):
            runner = subprocess.Popen(arguments)
            try:
                wait_until(writer.more(300))
            finally:
                runner.send_signal(signal.SIGKILL)
                runner.wait()
        runner = subprocess.Popen(arguments)
    try:
        wait_until(lambda: equal(users, cache))
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=30)


def purge_all_but_newest(server: MariaDbInstance) -> bool:
    """PURGE every binary log but the newest; True once they are gone. MariaDB keeps a log a
    reader is still on, or one whose transactions InnoDB has not yet checkpointed."""
    connection = server.connect()
    with connection.cursor() as cursor:
        cursor.execute("SHOW MASTER STATUS")
        newest = str(cursor.fetchone()["File"])  # type: ignore[index]
        cursor.execute(f"PURGE BINARY LOGS TO '{newest}'")
        cursor.execute("SHOW BINARY LOGS")
        left = [row["Log_name"] for row in cursor.fetchall()]
    connection.close()
    return left == [newest]


def test_a_checkpoint_purged_from_the_log_is_a_clear_error_naming_full(
    server: MariaDbInstance, users: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    binlog_sync(users, cache).run_once()
    database = users.connection_settings.database
    execute(
        server, database, "UPDATE users SET username = 'lost' WHERE id = 3", "FLUSH BINARY LOGS"
    )
    wait_until(lambda: purge_all_but_newest(server))
    with pytest.raises(autoops.ConfigError, match=r"purged.*--full.*on_purged='full'"):
        binlog_sync(users, cache).run_once()
    report = binlog_sync(users, cache, on_purged="full").run_once()
    assert report.kind == "snapshot"
    assert cache.get("users:3")["username"] == "lost"
    assert equal(users, cache)


def test_an_idle_table_followed_by_run_forever_never_shows_lag(
    server: MariaDbInstance, users: autoops.DbClient, cache: autoops.CacheClient
) -> None:
    sync = binlog_sync(users, cache)
    check = autoops.SyncLagCheck("users", lambda: autoops.read_sync_status(cache, "users"))
    with Follower(sync):
        wait_until(lambda: sync.status().behind_bytes == 0)
        time.sleep(6)  # nothing is written meanwhile
        status = sync.status()
        result = check.run()
    lag = status.lag_seconds()
    assert lag is not None
    assert lag < 5  # refreshed while idle, not the 6 s since the last change
    assert result.status is autoops.CheckStatus.OK, result.summary
