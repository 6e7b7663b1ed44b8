"""A batch (``executemany``) is one transaction in both dialects: pymysql splits a large batch
into several multi-row INSERTs, and a connection cut between two of them must not leave the first
applied and then replay the lot."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pymysql
import pytest

import autoops
from _support.proxy import TcpProxy
from autoops import OutcomeUnknownError, RetryPolicy

QUICK = RetryPolicy(attempts=5, timeout=20, wait_initial=0.05, wait_max=0.2, jitter=0.05)
Admin = pymysql.connections.Connection
ROWS = 3000
# 3,000 rows of ~1 kB: pymysql sends them as three or four INSERTs (its limit is ~1 MB each).
PADDING = "x" * 1000


@pytest.fixture
def proxied(
    mysql_url: str, tcp_proxy: Callable[[str, int], TcpProxy]
) -> Iterator[tuple[autoops.DbClient, TcpProxy]]:
    parts = urlsplit(mysql_url)
    proxy = tcp_proxy(parts.hostname or "127.0.0.1", parts.port or 3306)
    client = autoops.DbClient.from_url(
        f"mysql://{parts.username}@127.0.0.1:{proxy.port}{parts.path}", retry=QUICK, read_timeout=10
    )
    # No unique key, as in an append-only log: a replayed row shows up as a duplicate.
    client.execute("CREATE TABLE `order-events` (seq INT NOT NULL, note TEXT NOT NULL)")
    yield client, proxy
    client.close()


def batch() -> list[tuple[int, str]]:
    return [(seq, f"event-{seq:06d}-{PADDING}") for seq in range(ROWS)]


def census(admin: Admin, mysql_url: str) -> tuple[int, int]:
    database = urlsplit(mysql_url).path.strip("/")
    with admin.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*), COUNT(DISTINCT seq) FROM `{database}`.`order-events`")
        total, distinct = cursor.fetchone() or (0, 0)
    return int(total), int(distinct)


def test_a_batch_cut_after_its_first_statement_is_applied_once(
    proxied: tuple[autoops.DbClient, TcpProxy], mysql_url: str, mysql_admin: Admin
) -> None:
    db, proxy = proxied
    proxy.reset_after_reply(b"event-000000-")
    db.executemany("INSERT INTO `order-events` (seq, note) VALUES (%s, %s)", batch())
    assert proxy.accepted >= 2, "the proxy never cut the batch"
    assert census(mysql_admin, mysql_url) == (ROWS, ROWS)


def test_a_batch_whose_commit_reply_is_lost_is_an_unknown_outcome(
    proxied: tuple[autoops.DbClient, TcpProxy], mysql_url: str, mysql_admin: Admin
) -> None:
    db, proxy = proxied
    proxy.drop_next_reply(containing=b"COMMIT")
    with pytest.raises(OutcomeUnknownError, match="COMMIT"):
        db.executemany("INSERT INTO `order-events` (seq, note) VALUES (%s, %s)", batch())
    total, distinct = census(mysql_admin, mysql_url)
    assert total == distinct
    assert total in {0, ROWS}


def test_a_failed_batch_leaves_nothing_behind_in_sqlite(tmp_path: object) -> None:
    db = autoops.DbClient.from_url(f"sqlite:///{tmp_path}/batches.db")
    db.execute('CREATE TABLE "order-events" (seq INTEGER PRIMARY KEY, note TEXT NOT NULL)')
    rows = [*batch()[:100], (5, "a duplicate key, rejected after 100 rows went in")]
    with pytest.raises(autoops.IntegrityError):
        db.executemany('INSERT INTO "order-events" (seq, note) VALUES (%s, %s)', rows)
    assert db.query('SELECT COUNT(*) AS n FROM "order-events"') == [{"n": 0}]
    db.close()


def test_a_batch_inside_a_transaction_belongs_to_it(mysql_db: autoops.DbClient) -> None:
    mysql_db.execute("CREATE TABLE `order-events` (seq INT PRIMARY KEY, note TEXT NOT NULL)")

    def give_up_after_the_batch(tx: autoops.Transaction) -> None:
        tx.executemany("INSERT INTO `order-events` (seq, note) VALUES (%s, %s)", batch()[:10])
        raise RuntimeError("the caller gives up")

    with pytest.raises(RuntimeError):
        mysql_db.run_transaction(give_up_after_the_batch)
    assert mysql_db.query("SELECT COUNT(*) AS n FROM `order-events`") == [{"n": 0}]
