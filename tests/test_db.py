"""DbClient behaviour shared by MySQL (real MariaDB) and SQLite: one API, one parameter style."""

from __future__ import annotations

import datetime as dt
import decimal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import autoops
from autoops import ConfigError, ConnectError, IntegrityError, QueryError
from autoops.db._identifiers import quote_any_name

CREATE = {
    "mysql": "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(50), price DECIMAL(10,2),"
    " seen DATETIME(6)) ENGINE=InnoDB",
    "sqlite": "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price TEXT, seen TEXT)",
}


@pytest.fixture(params=["mysql", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[autoops.DbClient]:
    if request.param == "mysql":
        client = autoops.DbClient.from_url(request.getfixturevalue("mysql_url"))
    else:
        client = autoops.DbClient.from_url(f"sqlite:///{tmp_path / 'test.db'}")
    client.execute(CREATE[client.dialect])
    yield client
    client.close()


def fill(db: autoops.DbClient, count: int) -> None:
    db.executemany(
        "INSERT INTO items (id, name, price, seen) VALUES (%s, %s, %s, %s)",
        [
            (i, f"item{i}", decimal.Decimal("1.50"), dt.datetime(2026, 1, 1, 12, 0, 0, 5))
            for i in range(1, count + 1)
        ],
    )


def test_query_returns_rows_as_dicts(db: autoops.DbClient) -> None:
    fill(db, 2)
    rows = db.query("SELECT id, name FROM items ORDER BY id")
    assert rows == [{"id": 1, "name": "item1"}, {"id": 2, "name": "item2"}]


def test_query_one_returns_none_when_nothing_matches(db: autoops.DbClient) -> None:
    assert db.query_one("SELECT id FROM items WHERE id = %s", (42,)) is None


def test_named_parameters_work_in_both_dialects(db: autoops.DbClient) -> None:
    fill(db, 3)
    row = db.query_one(
        "SELECT name FROM items WHERE id = %(id)s AND name LIKE %(pattern)s",
        {"id": 2, "pattern": "item%"},
    )
    assert row == {"name": "item2"}


def test_percent_literals_are_written_as_double_percent(db: autoops.DbClient) -> None:
    fill(db, 1)
    assert db.query_one("SELECT name FROM items WHERE name LIKE 'item%%' AND id = %s", (1,)) == {
        "name": "item1"
    }


def test_execute_returns_the_affected_row_count(db: autoops.DbClient) -> None:
    fill(db, 5)
    assert db.execute("UPDATE items SET name = %s WHERE id > %s", ("x", 2)) == 3


def test_values_round_trip(db: autoops.DbClient) -> None:
    fill(db, 1)
    row = db.query_one("SELECT price, seen FROM items")
    assert row is not None
    if db.dialect == "mysql":
        assert row == {
            "price": decimal.Decimal("1.50"),
            "seen": dt.datetime(2026, 1, 1, 12, 0, 0, 5),
        }
    else:
        assert row == {"price": "1.50", "seen": "2026-01-01 12:00:00.000005"}


def test_stream_yields_every_row_in_order(db: autoops.DbClient) -> None:
    fill(db, 250)
    ids = [row["id"] for row in db.stream("SELECT id FROM items ORDER BY id", batch_size=40)]
    assert ids == list(range(1, 251))


def test_stream_batches_are_at_most_batch_size(db: autoops.DbClient) -> None:
    fill(db, 25)
    sizes = [len(batch) for batch in db.stream_batches("SELECT id FROM items", batch_size=10)]
    assert sizes == [10, 10, 5]


def test_a_stream_stopped_early_leaves_the_client_usable(db: autoops.DbClient) -> None:
    fill(db, 500)
    for row in db.stream("SELECT id FROM items ORDER BY id", batch_size=10):
        if row["id"] == 3:
            break
    assert db.query_one("SELECT COUNT(*) AS n FROM items") == {"n": 500}


def test_bad_batch_size_is_a_config_error(db: autoops.DbClient) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        list(db.stream("SELECT 1", batch_size=0))


def test_transaction_commits_when_the_block_ends(db: autoops.DbClient) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (1, "a"))
        assert tx.query_one("SELECT name FROM items WHERE id = 1") == {"name": "a"}
    assert db.query_one("SELECT name FROM items WHERE id = 1") == {"name": "a"}


def test_transaction_rolls_back_when_the_block_raises(db: autoops.DbClient) -> None:
    with pytest.raises(RuntimeError), db.transaction() as tx:  # noqa: PT012 - the raise is the point
        tx.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (1, "a"))
        raise RuntimeError("changed my mind")
    assert db.query("SELECT id FROM items") == []


def test_nested_transactions_are_refused(db: autoops.DbClient) -> None:
    with db.transaction(), pytest.raises(autoops.AutoOpsError, match="nested"), db.transaction():
        pass


def test_the_client_refuses_statements_while_its_thread_has_a_transaction(
    db: autoops.DbClient,
) -> None:
    with db.transaction(), pytest.raises(autoops.AutoOpsError, match="Transaction object"):
        db.query("SELECT 1")


def test_run_transaction_returns_the_function_result(db: autoops.DbClient) -> None:
    def add(tx: autoops.Transaction) -> int:
        return tx.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (7, "seven"))

    assert db.run_transaction(add) == 1
    assert db.query_one("SELECT name FROM items WHERE id = 7") == {"name": "seven"}


def test_duplicate_key_is_an_integrity_error(db: autoops.DbClient) -> None:
    fill(db, 1)
    with pytest.raises(IntegrityError, match="constraint"):
        db.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (1, "again"))


def test_syntax_error_is_a_query_error_with_the_cause_chained(db: autoops.DbClient) -> None:
    with pytest.raises(QueryError) as caught:
        db.query("SELEC nothing")
    assert caught.value.__cause__ is not None


def test_wrong_number_of_parameters_is_a_query_error(db: autoops.DbClient) -> None:
    with pytest.raises(QueryError, match="parameters"):
        db.query("SELECT id FROM items WHERE id = %s AND name = %s", (1,))


def test_each_thread_gets_its_own_connection(db: autoops.DbClient) -> None:
    fill(db, 1)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                with db.transaction() as tx:
                    tx.execute(
                        "UPDATE items SET name = %s WHERE id = 1",
                        (threading.current_thread().name,),
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_ping_returns_the_round_trip(db: autoops.DbClient) -> None:
    assert 0 <= db.ping() < 5


def test_a_closed_client_says_so(db: autoops.DbClient) -> None:
    db.close()
    with pytest.raises(ConnectError, match="closed"):
        db.query("SELECT 1")


@pytest.mark.parametrize(
    ("name", "mysql", "sqlite"),
    [
        ("users", "`users`", '"users"'),
        ("app.users", "`app`.`users`", '"app"."users"'),
        ("_x$1", "`_x$1`", '"_x$1"'),
    ],
)
def test_plain_identifiers_are_quoted_for_the_dialect(name: str, mysql: str, sqlite: str) -> None:
    assert autoops.quote_identifier(name, "mysql") == mysql
    assert autoops.quote_identifier(name, "sqlite") == sqlite


@pytest.mark.parametrize(
    "name",
    ["users; DROP TABLE users", "users`", "a b", "1abc", "", "a.b.c", "x" * 65, 'users"--', "名前"],
)
def test_identifier_injection_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not a plain SQL identifier"):
        autoops.quote_identifier(name)


def test_executemany_is_all_or_nothing(db: autoops.DbClient) -> None:
    fill(db, 1)
    with pytest.raises(IntegrityError):
        db.executemany(
            "INSERT INTO items (id, name) VALUES (%s, %s)", [(2, "new"), (1, "duplicate")]
        )
    assert db.query("SELECT id FROM items") == [{"id": 1}]


def test_the_base_class_picks_the_client_by_scheme(tmp_path: Path) -> None:
    with autoops.DbClient.from_url(f"sqlite:///{tmp_path / 'pick.db'}") as client:
        assert type(client) is autoops.SQLiteClient


def test_a_dialect_class_refuses_another_dialects_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"MySQLClient cannot open sqlite:///.*SQLiteClient"):
        autoops.MySQLClient.from_url(f"sqlite:///{tmp_path / 'x.db'}")


def test_a_dialect_class_opens_its_own_url(mysql_url: str) -> None:
    with autoops.MySQLClient.from_url(mysql_url) as client:
        assert client.query_one("SELECT 1 AS one") == {"one": 1}


def test_a_dialect_class_refuses_another_dialects_connection_settings(tmp_path: Path) -> None:
    settings = autoops.DbConnectionSettings(dialect="sqlite", path=str(tmp_path / "x.db"))
    with pytest.raises(ConfigError, match="MySQLClient cannot open"):
        autoops.MySQLClient.from_connection_settings(settings)


def test_any_name_the_server_accepts_is_quoted_as_it_is(db: autoops.DbClient) -> None:
    name = quote_any_name('order`items "2026".v1', db.dialect)
    db.execute(f"CREATE TABLE {name} (id INT PRIMARY KEY)")
    db.execute(f"INSERT INTO {name} (id) VALUES (%s)", [7])
    assert db.query(f"SELECT id FROM {name}") == [{"id": 7}]
