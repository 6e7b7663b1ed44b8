"""MySQL under failure, against real MariaDB: killed connections, a dropping network, a lost
reply after a write, deadlocks, bad credentials. Every fault ends in a retry that succeeds or in
a clear error, and no write is ever applied twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pymysql
import pytest

import autoops
from _support.proxy import TcpProxy
from _support.services import admin_connection
from autoops import AuthenticationError, ConnectError, OutcomeUnknownError, QueryError, RetryPolicy

QUICK = RetryPolicy(attempts=20, timeout=20, wait_initial=0.05, wait_max=0.5, jitter=0.05)
Admin = pymysql.connections.Connection


@pytest.fixture
def table(mysql_db: autoops.DbClient) -> str:
    mysql_db.execute(
        "CREATE TABLE events (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(40)) ENGINE=InnoDB"
    )
    return "events"


@pytest.fixture
def proxied(
    mysql_url: str, tcp_proxy: Callable[[str, int], TcpProxy]
) -> Iterator[tuple[autoops.DbClient, TcpProxy]]:
    parts = urlsplit(mysql_url)
    proxy = tcp_proxy(parts.hostname or "127.0.0.1", parts.port or 3306)
    client = autoops.DbClient.from_url(
        f"mysql://{parts.username}@127.0.0.1:{proxy.port}{parts.path}", retry=QUICK, read_timeout=10
    )
    client.execute(
        "CREATE TABLE IF NOT EXISTS events (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(40))"
    )
    yield client, proxy
    client.close()


def connection_id(db: autoops.DbClient) -> int:
    row = db.query_one("SELECT CONNECTION_ID() AS id")
    assert row is not None
    return int(row["id"])


def kill(admin: Admin, thread_id: int) -> None:
    with admin.cursor() as cursor:
        cursor.execute("KILL CONNECTION %s", (thread_id,))


def kill_once_running(thread_id: int, statement_start: str) -> threading.Thread:
    """Kill the connection as soon as the server shows it running the statement, so the kill
    lands mid-statement however loaded the machine is (a fixed delay could land before it)."""

    def watch() -> None:
        admin = admin_connection()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with admin.cursor() as cursor:
                    cursor.execute(
                        "SELECT COUNT(*) FROM information_schema.processlist"
                        " WHERE id = %s AND info LIKE %s",
                        (thread_id, statement_start + "%"),
                    )
                    row = cursor.fetchone()
                if row and row[0]:
                    kill(admin, thread_id)
                    return
                time.sleep(0.01)
        finally:
            admin.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def count(admin: Admin, database: str) -> int:
    with admin.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM `{database}`.events")
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def retries(operation: str) -> int:
    return autoops.retry_totals().get(operation, 0)


def test_an_idle_connection_killed_by_the_server_is_replaced_before_use(
    mysql_db: autoops.DbClient, mysql_admin: Admin, table: str
) -> None:
    before = connection_id(mysql_db)
    kill(mysql_admin, before)
    time.sleep(0.1)
    mysql_db.execute("INSERT INTO events (note) VALUES (%s)", ("after kill",))
    assert connection_id(mysql_db) != before
    assert mysql_db.query("SELECT note FROM events") == [{"note": "after kill"}]


def test_a_read_killed_mid_query_is_retried_and_succeeds(
    mysql_url: str, mysql_admin: Admin
) -> None:
    db = autoops.DbClient.from_url(mysql_url, retry=QUICK)
    watcher = kill_once_running(connection_id(db), "SELECT SLEEP(1)")
    before = retries("mysql query")
    assert db.query_one("SELECT SLEEP(1) AS slept, 7 AS answer") == {"slept": 0, "answer": 7}
    watcher.join()
    assert retries("mysql query") == before + 1
    db.close()


def test_a_write_killed_mid_statement_is_not_replayed(
    mysql_url: str, mysql_admin: Admin, table: str
) -> None:
    db = autoops.DbClient.from_url(mysql_url, retry=QUICK)
    watcher = kill_once_running(connection_id(db), "INSERT INTO events")
    with pytest.raises(OutcomeUnknownError, match="may or may not have been applied"):
        db.execute("INSERT INTO events (note) SELECT IF(SLEEP(2) = 0, 'slow', 'x')")
    watcher.join()
    assert count(mysql_admin, urlsplit(mysql_url).path.strip("/")) <= 1
    db.close()


def test_reads_succeed_after_a_network_outage(proxied: tuple[autoops.DbClient, TcpProxy]) -> None:
    db, proxy = proxied
    db.execute("INSERT INTO events (note) VALUES ('before')")
    proxy.outage(1.5)
    started = time.monotonic()
    assert db.query("SELECT note FROM events") == [{"note": "before"}]
    assert time.monotonic() - started >= 1.0


def test_a_write_succeeds_after_a_refused_connection_because_it_was_never_sent(
    proxied: tuple[autoops.DbClient, TcpProxy], mysql_admin: Admin, mysql_url: str
) -> None:
    db, proxy = proxied
    proxy.outage(1.0)
    db.execute("INSERT INTO events (note) VALUES ('once')")
    assert count(mysql_admin, urlsplit(mysql_url).path.strip("/")) == 1


def test_a_write_whose_reply_is_lost_raises_and_is_applied_once(
    proxied: tuple[autoops.DbClient, TcpProxy], mysql_admin: Admin, mysql_url: str
) -> None:
    db, proxy = proxied
    db.ping()
    proxy.drop_next_reply()
    with pytest.raises(OutcomeUnknownError) as caught:
        db.execute("INSERT INTO events (note) VALUES ('exactly once')")
    assert "check the data" in str(caught.value)
    assert count(mysql_admin, urlsplit(mysql_url).path.strip("/")) == 1


def test_a_commit_whose_reply_is_lost_is_an_unknown_outcome(
    proxied: tuple[autoops.DbClient, TcpProxy], mysql_admin: Admin, mysql_url: str
) -> None:
    db, proxy = proxied
    with pytest.raises(OutcomeUnknownError, match="COMMIT"), db.transaction() as tx:  # noqa: PT012
        tx.execute("INSERT INTO events (note) VALUES ('committed?')")
        proxy.drop_next_reply()
    assert count(mysql_admin, urlsplit(mysql_url).path.strip("/")) == 1


def test_a_transaction_cut_before_commit_is_replayed_whole(
    proxied: tuple[autoops.DbClient, TcpProxy], mysql_admin: Admin, mysql_url: str
) -> None:
    db, proxy = proxied
    calls = 0

    def two_inserts(tx: autoops.Transaction) -> None:
        nonlocal calls
        calls += 1
        tx.execute("INSERT INTO events (note) VALUES ('first')")
        if calls == 1:
            proxy.drop_all()
        tx.execute("INSERT INTO events (note) VALUES ('second')")

    db.run_transaction(two_inserts)
    assert calls == 2
    assert count(mysql_admin, urlsplit(mysql_url).path.strip("/")) == 2


def test_a_deadlock_replays_the_whole_transaction(mysql_url: str, mysql_admin: Admin) -> None:
    db = autoops.DbClient.from_url(mysql_url, retry=QUICK)
    db.execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance INT) ENGINE=InnoDB")
    db.executemany("INSERT INTO accounts VALUES (%s, %s)", [(1, 100), (2, 100)])
    barrier = threading.Barrier(2)
    before = retries("mysql transaction")
    errors: list[BaseException] = []

    def transfer(first: int, second: int) -> None:
        attempts = 0

        def body(tx: autoops.Transaction) -> None:
            nonlocal attempts
            attempts += 1
            tx.execute("UPDATE accounts SET balance = balance - 1 WHERE id = %s", (first,))
            if attempts == 1:
                barrier.wait(timeout=5)
                time.sleep(0.2)
            tx.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (second,))

        try:
            db.run_transaction(body)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=transfer, args=pair) for pair in [(1, 2), (2, 1)]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert retries("mysql transaction") >= before + 1
    assert db.query("SELECT id, balance FROM accounts ORDER BY id") == [
        {"id": 1, "balance": 100},
        {"id": 2, "balance": 100},
    ]
    db.close()


def test_wrong_credentials_fail_at_once_without_the_password(mysql_url: str) -> None:
    parts = urlsplit(mysql_url)
    before = retries("mysql query")
    db = autoops.DbClient.from_url(
        f"mysql://root:Wr0ngSecret@{parts.hostname}:{parts.port}{parts.path}"
    )
    with pytest.raises(AuthenticationError) as caught:
        db.query("SELECT 1")
    assert "Wr0ngSecret" not in str(caught.value)
    assert "refused user 'root'" in str(caught.value)
    assert retries("mysql query") == before


def test_an_unknown_database_says_so(mysql_url: str) -> None:
    parts = urlsplit(mysql_url)
    db = autoops.DbClient.from_url(f"mysql://root@{parts.hostname}:{parts.port}/no_such_db_here")
    with pytest.raises(QueryError, match="'no_such_db_here' does not exist"):
        db.query("SELECT 1")


def test_a_syntax_error_is_not_retried(mysql_db: autoops.DbClient) -> None:
    before = retries("mysql query")
    with pytest.raises(QueryError, match="1064"):
        mysql_db.query("SELEKT 1")
    assert retries("mysql query") == before


def test_a_server_that_stays_down_gives_a_clear_error(
    proxied: tuple[autoops.DbClient, TcpProxy],
) -> None:
    db, proxy = proxied
    db.ping()
    proxy.refuse()
    proxy.drop_all()
    db.retry = RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.01, jitter=0)
    with pytest.raises(
        ConnectError, match=r"cannot reach MySQL at 127\.0\.0\.1:\d+.*gave up after 3 attempts"
    ):
        db.query("SELECT 1")


def test_a_stream_cut_mid_way_says_how_far_it_got(mysql_url: str, mysql_admin: Admin) -> None:
    db = autoops.DbClient.from_url(mysql_url, retry=QUICK)
    db.execute("CREATE TABLE numbers (n INT PRIMARY KEY)")
    db.execute("INSERT INTO numbers SELECT seq FROM seq_1_to_200000")
    seen = 0
    with pytest.raises(ConnectError, match="cut after"):  # noqa: PT012 - the kill happens mid-iteration
        for row in db.stream("SELECT n FROM numbers ORDER BY n", batch_size=1000):
            seen += 1
            if seen == 1:
                with mysql_admin.cursor() as cursor:
                    cursor.execute(
                        "SELECT id FROM information_schema.processlist"
                        " WHERE info LIKE 'SELECT n FROM numbers%%'"
                    )
                    found = cursor.fetchone()
                assert found is not None
                kill(mysql_admin, int(found[0]))
            assert row["n"] == seen
    db.close()
