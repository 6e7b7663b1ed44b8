"""One meaning for '%' in both dialects: pymysql's, i.e. Python %-formatting of the whole
statement when parameters are given (literals included), none when they are not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import autoops
from autoops import QueryError


@pytest.fixture(params=["mysql", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[autoops.DbClient]:
    if request.param == "mysql":
        client = autoops.DbClient.from_url(request.getfixturevalue("mysql_url"))
    else:
        client = autoops.DbClient.from_url(f"sqlite:///{tmp_path / 'percent.db'}")
    client.execute("CREATE TABLE `discount-codes` (code VARCHAR(20), note VARCHAR(40))")
    yield client
    client.close()


def test_a_doubled_percent_in_a_literal_is_one_percent_with_parameters(
    db: autoops.DbClient,
) -> None:
    assert db.query("SELECT 'a%%b' AS v, %s AS w", (1,)) == [{"v": "a%b", "w": 1}]


def test_a_doubled_percent_in_a_literal_stays_doubled_without_parameters(
    db: autoops.DbClient,
) -> None:
    assert db.query("SELECT 'a%%b' AS v") == [{"v": "a%%b"}]


def test_a_literal_percent_s_is_written_doubled(db: autoops.DbClient) -> None:
    db.execute("INSERT INTO `discount-codes` VALUES (%s, 'save 10%%s')", ("X10",))
    assert db.query("SELECT note FROM `discount-codes`") == [{"note": "save 10%s"}]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT '%s' AS v, %s AS w",
        "SELECT %s AS w -- %s\n",
        "SELECT %s AS w, `%s` FROM `discount-codes`",
    ],
)
def test_a_placeholder_inside_a_literal_or_comment_is_refused(
    db: autoops.DbClient, sql: str
) -> None:
    with pytest.raises(QueryError, match=r"inside a (string literal|quoted name|comment).*%%s"):
        db.query(sql, (1, 2))


def test_a_single_percent_in_a_literal_with_parameters_is_refused(db: autoops.DbClient) -> None:
    with pytest.raises(QueryError, match="write '%%'"):
        db.query("SELECT code FROM `discount-codes` WHERE code LIKE 'X%' AND note = %s", ("a",))


def test_a_backslash_escaped_quote_does_not_end_a_mysql_literal(
    mysql_db: autoops.DbClient,
) -> None:
    assert mysql_db.query("SELECT 'it\\'s 100%%' AS v, %s AS w", (1,)) == [
        {"v": "it's 100%", "w": 1}
    ]
