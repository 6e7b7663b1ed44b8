"""The connection's password never shows in a statement's error, not even in the escaped form the
server echoes back ("near 'it\\'s ...'") when the password was passed as a parameter."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import pymysql
import pytest

import autoops
from autoops import QueryError

PASSWORD = 'it\'s a \\ "quoted" s3cret'
Admin = pymysql.connections.Connection


@pytest.fixture
def app_db(mysql_url: str, mysql_admin: Admin) -> Iterator[autoops.DbClient]:
    """A client logged in as a user of its own whose password needs escaping in SQL."""
    user = f"aot_{uuid.uuid4().hex[:8]}"
    database = urlsplit(mysql_url).path.strip("/")
    parts = urlsplit(mysql_url)
    with mysql_admin.cursor() as cursor:
        cursor.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (PASSWORD,))
        cursor.execute(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'")
    url = f"mysql://{user}:{quote(PASSWORD, safe='')}@{parts.hostname}:{parts.port}/{database}"
    client = autoops.DbClient.from_url(url)
    yield client
    client.close()
    with mysql_admin.cursor() as cursor:
        cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_a_failed_statement_does_not_echo_the_password_passed_to_it(
    app_db: autoops.DbClient,
) -> None:
    with pytest.raises(QueryError) as caught:
        # A syntax error: the server quotes the statement near the error, escaped as sent.
        app_db.execute("SELECT TYPO TYPO %s", (PASSWORD,))
    message = str(caught.value)
    assert "near" in message
    assert "s3cret" not in message
    assert "***" in message
