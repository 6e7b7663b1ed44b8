"""DbClient with read replicas, on a private MariaDB primary + replica pair: reads marked
replica_ok go to a replica within the lag bound, everything else to the primary; a lagging,
stopped or dead replica is skipped without an error."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from _support.mariadb_pair import MARIADBD, MariaDbInstance, start_pair
from _support.proxy import TcpProxy
from _support.services import require_program
from _support.sshd import free_port
from autoops import AutoOpsError, ConfigError, DbClient, DbConnectionSettings, MySQLClient

PRIMARY_ID = 1
REPLICA_ID = 2
DATABASE = "replica-reads"
# pymysql sends a password as latin-1, so a non-ASCII one cannot log in to a utf8mb4 server.
PASSWORD = "rep'lica\\pw-7%@/"  # a test account's password, checked never to leak


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[MariaDbInstance, MariaDbInstance]]:
    require_program(MARIADBD, "mariadb-server")
    workdir = tmp_path_factory.mktemp("replica-reads")
    primary, replica = start_pair(workdir)
    wait_running(replica)
    primary_sql(
        primary,
        f"CREATE DATABASE `{DATABASE}`",
        f"CREATE TABLE `{DATABASE}`.`order-items` (id BIGINT PRIMARY KEY, note VARCHAR(40))",
        # 127.0.0.1 resolves to localhost, whose anonymous account would shadow 'app'@'%'.
        "CREATE USER 'app'@'localhost' IDENTIFIED BY %s",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{DATABASE}`.* TO 'app'@'localhost'",
        # What reading a replica's lag needs (MariaDB >= 10.5).
        "GRANT SLAVE MONITOR ON *.* TO 'app'@'localhost'",
        params=[(), (), (PASSWORD,), (), ()],
    )
    wait_applied(primary, replica)
    yield primary, replica
    replica.stop()
    primary.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def primary_sql(
    server: MariaDbInstance, *statements: str, params: list[tuple[object, ...]] | None = None
) -> None:
    connection = server.connect()
    with connection.cursor() as cursor:
        for index, statement in enumerate(statements):
            cursor.execute(statement, params[index] if params else None)
    connection.close()


replica_sql = primary_sql


def replica_status(replica: MariaDbInstance) -> dict[str, object]:
    connection = replica.connect()
    with connection.cursor() as cursor:
        cursor.execute("SHOW SLAVE STATUS")
        row = cursor.fetchone()
    connection.close()
    assert row is not None
    return dict(row)


def wait_running(replica: MariaDbInstance) -> None:
    deadline = time.monotonic() + 15
    while True:
        row = replica_status(replica)
        if row["Slave_IO_Running"] == "Yes" and row["Slave_SQL_Running"] == "Yes":
            return
        assert time.monotonic() < deadline, f"replication did not start: {row}"
        time.sleep(0.05)


def wait_applied(primary: MariaDbInstance, replica: MariaDbInstance) -> None:
    connection = primary.connect()
    with connection.cursor() as cursor:
        cursor.execute("SHOW MASTER STATUS")
        position = cursor.fetchone()
    connection.close()
    assert position is not None
    deadline = time.monotonic() + 20
    while True:
        row = replica_status(replica)
        if (row["Relay_Master_Log_File"], row["Exec_Master_Log_Pos"]) == (
            position["File"],
            position["Position"],
        ):
            return
        assert time.monotonic() < deadline, f"the replica did not catch up: {row}"
        time.sleep(0.05)


def client(
    primary: MariaDbInstance, *replicas: str | DbConnectionSettings, **options: Any
) -> DbClient:
    return DbClient.from_url(
        f"mysql://root@127.0.0.1:{primary.port}/{DATABASE}",
        replicas=list(replicas),
        connect_timeout=1,
        **options,
    )


def server_id(db: DbClient, *, replica_ok: bool = True) -> int:
    row = db.query_one("SELECT @@server_id AS id", replica_ok=replica_ok)
    assert row is not None
    return int(row["id"])


def test_a_marked_read_goes_to_a_replica_within_the_bound(
    pair: tuple[MariaDbInstance, MariaDbInstance],
) -> None:
    primary, replica = pair
    with client(primary, f"mysql://127.0.0.1:{replica.port}") as db:
        assert server_id(db) == REPLICA_ID


def test_an_unmarked_read_goes_to_the_primary(
    pair: tuple[MariaDbInstance, MariaDbInstance],
) -> None:
    primary, replica = pair
    with client(primary, f"mysql://127.0.0.1:{replica.port}") as db:
        assert server_id(db, replica_ok=False) == PRIMARY_ID


def test_a_marked_stream_reads_from_the_replica(
    pair: tuple[MariaDbInstance, MariaDbInstance],
) -> None:
    primary, replica = pair
    with client(primary, f"mysql://127.0.0.1:{replica.port}") as db:
        rows = list(db.stream("SELECT @@server_id AS id", replica_ok=True))
    assert rows == [{"id": REPLICA_ID}]


def test_writes_and_transactions_go_to_the_primary(
    pair: tuple[MariaDbInstance, MariaDbInstance],
) -> None:
    primary, replica = pair
    with client(primary, f"mysql://127.0.0.1:{replica.port}") as db:
        db.execute("INSERT INTO `order-items` VALUES (%s, 'written')", (2**53 + 1,))
        db.executemany("INSERT INTO `order-items` VALUES (%s, 'batch')", [(10,), (11,)])
        with db.transaction() as tx:
            in_transaction = tx.query_one("SELECT @@server_id AS id")
            tx.execute("UPDATE `order-items` SET note = 'in tx' WHERE id = 10")
        assert in_transaction == {"id": PRIMARY_ID}
        # The replica is read-only: any write routed there would have failed.
        assert db.query_one("SELECT note FROM `order-items` WHERE id = 10") == {"note": "in tx"}
    wait_applied(primary, replica)


def test_a_marked_read_inside_a_transaction_is_refused_as_any_client_read(
    pair: tuple[MariaDbInstance, MariaDbInstance],
) -> None:
    primary, replica = pair
    with (
        client(primary, f"mysql://127.0.0.1:{replica.port}") as db,
        db.transaction(),
        pytest.raises(AutoOpsError, match="transaction open"),
    ):
        db.query("SELECT 1", replica_ok=True)


def test_a_replica_takes_the_primarys_credentials_and_database_unless_its_url_has_them(
    pair: tuple[MariaDbInstance, MariaDbInstance],
) -> None:
    primary, replica = pair
    from urllib.parse import quote

    url = f"mysql://app:{quote(PASSWORD, safe='')}@127.0.0.1:{primary.port}/{DATABASE}"
    with DbClient.from_url(url, replicas=[f"mysql://127.0.0.1:{replica.port}"]) as db:
        row = db.query_one(
            "SELECT @@server_id AS id, DATABASE() AS db, USER() AS who", replica_ok=True
        )
        assert row is not None
        assert (row["id"], row["db"]) == (REPLICA_ID, DATABASE)
        assert str(row["who"]).startswith("app@")
        settings = db.replicas[0]  # type: ignore[attr-defined]
        assert settings.user == "app"
        assert PASSWORD not in repr(db)
        assert PASSWORD not in repr(settings)


def test_a_replica_behind_the_bound_is_skipped_and_used_again_when_it_catches_up(
    pair: tuple[MariaDbInstance, MariaDbInstance],
) -> None:
    primary, replica = pair
    # A delayed replica applies each event 8 s after the primary wrote it: while it waits,
    # Seconds_Behind_Master grows to 8, then falls back to 0.
    replica_sql(replica, "STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 8", "START SLAVE")
    try:
        wait_running(replica)
        strict = client(primary, f"mysql://127.0.0.1:{replica.port}", max_replica_lag=1)
        loose = client(primary, f"mysql://127.0.0.1:{replica.port}", max_replica_lag=60)
        with strict, loose:
            primary_sql(primary, f"INSERT INTO `{DATABASE}`.`order-items` VALUES (100, 'late')")
            deadline = time.monotonic() + 10
            while int(str(replica_status(replica)["Seconds_Behind_Master"] or 0)) < 2:
                assert time.monotonic() < deadline, "the delayed replica never fell behind"
                time.sleep(0.1)
            # Neither client has read the lag yet, so both read it now.
            assert server_id(strict) == PRIMARY_ID
            stale = loose.query("SELECT id FROM `order-items` WHERE id = 100", replica_ok=True)
            assert server_id(loose) == REPLICA_ID
            assert stale == []  # within 60 s of lag: a stale answer was allowed
            wait_applied(primary, replica)
            time.sleep(1.1)  # past the one second a lag reading is kept
            assert server_id(strict) == REPLICA_ID
    finally:
        replica_sql(replica, "STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 0", "START SLAVE")
        wait_running(replica)


def test_a_stopped_replica_is_skipped_and_logged_without_an_error(
    pair: tuple[MariaDbInstance, MariaDbInstance], caplog: pytest.LogCaptureFixture
) -> None:
    primary, replica = pair
    with client(primary, f"mysql://127.0.0.1:{replica.port}") as db:
        assert server_id(db) == REPLICA_ID
        replica_sql(replica, "STOP SLAVE")
        try:
            time.sleep(1.1)  # past the one second a lag reading is kept
            with caplog.at_level(logging.WARNING, logger="autoops.db"):
                assert server_id(db) == PRIMARY_ID
        finally:
            replica_sql(replica, "START SLAVE")
            wait_running(replica)
    assert "replication is stopped" in caplog.text
    assert "reads go to the primary" in caplog.text


def test_a_replica_whose_port_is_closed_is_skipped_and_marked_down(
    pair: tuple[MariaDbInstance, MariaDbInstance],
) -> None:
    primary, _ = pair
    closed = free_port()
    with client(primary, f"mysql://127.0.0.1:{closed}") as db:
        assert server_id(db) == PRIMARY_ID
        assert db.query("SELECT id FROM `order-items` WHERE id = 10", replica_ok=True) == [
            {"id": 10}
        ]
        assert "down" in repr(db._repr_html_())


def test_a_blackholed_replica_costs_one_connect_timeout_then_is_left_alone(
    pair: tuple[MariaDbInstance, MariaDbInstance],
) -> None:
    primary, replica = pair
    with TcpProxy("127.0.0.1", replica.port) as proxy:
        proxy.blackhole()
        with client(primary, f"mysql://127.0.0.1:{proxy.port}", replica_retry_after=600) as db:
            for _ in range(5):
                assert server_id(db) == PRIMARY_ID
            assert proxy.accepted == 1


def test_a_replica_marked_down_is_tried_again_after_a_while(
    pair: tuple[MariaDbInstance, MariaDbInstance],
) -> None:
    primary, replica = pair
    with TcpProxy("127.0.0.1", replica.port) as proxy:
        proxy.refuse()
        with client(primary, f"mysql://127.0.0.1:{proxy.port}", replica_retry_after=1) as db:
            assert server_id(db) == PRIMARY_ID
            proxy.forward()
            assert server_id(db) == PRIMARY_ID  # still marked down
            time.sleep(1.1)
            assert server_id(db) == REPLICA_ID


def test_a_replica_that_dies_between_reads_hands_the_next_read_to_the_primary(
    pair: tuple[MariaDbInstance, MariaDbInstance],
) -> None:
    primary, replica = pair
    with (
        TcpProxy("127.0.0.1", replica.port) as proxy,
        client(primary, f"mysql://127.0.0.1:{proxy.port}", replica_retry_after=600) as db,
    ):
        assert server_id(db) == REPLICA_ID
        # Its lag reading is still fresh: the read itself finds the replica gone.
        proxy.refuse()
        proxy.drop_all()
        assert server_id(db) == PRIMARY_ID
        assert "down" in db._repr_html_()


def test_a_stream_whose_replica_fails_before_its_first_row_runs_on_the_primary(
    pair: tuple[MariaDbInstance, MariaDbInstance],
) -> None:
    primary, replica = pair
    with (
        TcpProxy("127.0.0.1", replica.port) as proxy,
        client(primary, f"mysql://127.0.0.1:{proxy.port}", replica_retry_after=600) as db,
    ):
        assert server_id(db) == REPLICA_ID
        proxy.refuse()
        proxy.drop_all()
        rows = list(db.stream("SELECT @@server_id AS id", replica_ok=True))
    assert rows == [{"id": PRIMARY_ID}]


def test_a_replica_that_refuses_the_account_is_skipped_without_showing_the_password(
    pair: tuple[MariaDbInstance, MariaDbInstance], caplog: pytest.LogCaptureFixture
) -> None:
    primary, replica = pair
    from urllib.parse import quote

    wrong = quote(PASSWORD + "-wrong", safe="")
    with (
        caplog.at_level(logging.DEBUG),
        client(primary, f"mysql://app:{wrong}@127.0.0.1:{replica.port}") as db,
    ):
        assert server_id(db) == PRIMARY_ID
        shown = repr(db) + db._repr_html_() + repr(db.replicas)  # type: ignore[attr-defined]
    assert "refused" in caplog.text or "denied" in caplog.text
    for text in (shown, caplog.text):
        assert PASSWORD not in text
        assert quote(PASSWORD, safe="") not in text


def test_replicas_and_their_bound_come_from_the_settings_file(
    pair: tuple[MariaDbInstance, MariaDbInstance], tmp_path: object
) -> None:
    primary, replica = pair
    from pathlib import Path

    path = Path(str(tmp_path)) / "autoops.toml"
    path.write_text(
        "[db]\n"
        f'url = "mysql://root@127.0.0.1:{primary.port}/{DATABASE}"\n'
        f'replicas = ["mysql://127.0.0.1:{replica.port}"]\n'
        "max_replica_lag = 2.5\n"
    )
    with DbClient.from_config(path) as db:
        assert isinstance(db, MySQLClient)
        assert db.max_replica_lag == 2.5
        assert [settings.port for settings in db.replicas] == [replica.port]
        assert server_id(db) == REPLICA_ID
        assert "max_replica_lag=2.5" in repr(db)


def test_the_default_bound_is_five_seconds() -> None:
    db = MySQLClient(host="127.0.0.1", user="root", replicas=["mysql://10.0.0.2"])
    assert db.max_replica_lag == 5.0
    assert repr(db) == (
        "MySQLClient('mysql://root@127.0.0.1:3306/', replicas=['mysql://root@10.0.0.2:3306/'], "
        "max_replica_lag=5)"
    )


def test_sqlite_refuses_replicas_clearly(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match=r"SQLite .* has no replicas"):
        DbClient.from_url(f"sqlite:///{tmp_path}/app.db", replicas=["mysql://db2"])


@pytest.mark.parametrize("bad", [-1, float("nan"), "5"])
def test_a_bad_lag_bound_is_a_clear_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="max_replica_lag"):
        MySQLClient(host="127.0.0.1", user="root", replicas=[], max_replica_lag=bad)  # type: ignore[arg-type]


def test_a_replica_that_is_not_a_mysql_url_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="not a mysql:// URL"):
        MySQLClient(host="127.0.0.1", user="root", replicas=["sqlite:///x.db"])
