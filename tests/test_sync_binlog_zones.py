"""CacheSync(source="binlog") on a server whose sessions are not in UTC: a TIMESTAMP streamed from
the log is cached as the polling sync reads it (wall-clock time in the session's time_zone), for
a fixed offset, a named zone and the server's system zone across both DST switches of 2026;
DATETIME is never shifted."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

import autoops
from _support.binlog import execute, scratch_database, start_row_logged
from _support.mariadb_pair import MariaDbInstance
from _support.services import require_program
from _support.sync_tables import cached_rows, expected_cache

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BERLIN = "Europe/Berlin"
TZINFO_TO_SQL = "/usr/bin/mariadb-tzinfo-to-sql"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDbInstance]:
    require_program(TZINFO_TO_SQL, "mariadb-server")
    require_program(f"/usr/share/zoneinfo/{BERLIN}", "tzdata")
    # The server's system zone (what time_zone='SYSTEM' means) is Berlin, its default +05:30.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TZ", BERLIN)
        instance = start_row_logged(tmp_path_factory.mktemp("zones"), "--default-time-zone=+05:30")
    try:
        # One zone's tables (not the whole tz database) keep the start quick.
        sql = subprocess.run(
            [TZINFO_TO_SQL, f"/usr/share/zoneinfo/{BERLIN}", BERLIN],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(
            ["mariadb", "-h127.0.0.1", f"-P{instance.port}", "-uroot", "mysql"],
            input=sql,
            check=True,
            capture_output=True,
        )
        yield instance
    finally:
        instance.stop()


@pytest.fixture(params=["+05:30", BERLIN, "SYSTEM"])
def zone(request: pytest.FixtureRequest, server: MariaDbInstance) -> Iterator[str]:
    """The time_zone of every new session on the private server for one test."""
    execute(server, "", f"SET GLOBAL time_zone = '{request.param}'")
    yield str(request.param)
    execute(server, "", "SET GLOBAL time_zone = '+05:30'")


@pytest.fixture
def db(server: MariaDbInstance, zone: str) -> Iterator[autoops.DbClient]:
    with scratch_database(server) as client:
        assert client.query_one("SELECT @@session.time_zone AS z") == {"z": zone}
        yield client


# Wall-clock times in the session's zone: ordinary summer and winter days, the last second
# before Berlin's spring switch and the first after it, and 02:30 on the autumn day, which in
# Berlin comes twice (the second one written by its instant, 01:30 UTC).
STAMPS = (
    "'2026-07-01 12:00:00.25'",
    "'2026-01-15 08:30:00.5'",
    "'2026-03-29 01:59:59.999999'",
    "'2026-03-29 03:00:00'",
    "'2026-10-25 02:30:00'",
    "CONVERT_TZ('2026-10-25 01:30:00', '+00:00', @@session.time_zone)",
    "'2038-01-19 03:14:07'",
)


def insert(server: MariaDbInstance, db: autoops.DbClient, ids: range) -> None:
    values = ", ".join(
        f"({i}, {stamp}, {stamp}, '2026-03-29 02:30:00.5', {i})"
        for i in ids
        for stamp in (STAMPS[(i - 1) % len(STAMPS)],)
    )
    execute(
        server,
        db.connection_settings.database,
        f"INSERT INTO `ev-times` (id, ts, ts6, dt, n) VALUES {values}",
    )


@pytest.mark.parametrize("decoder", ["fast", "library"])
def test_streamed_timestamps_are_cached_as_the_polling_sync_reads_them_in_the_session_zone(
    server: MariaDbInstance,
    db: autoops.DbClient,
    cache: autoops.CacheClient,
    zone: str,
    decoder: str,
) -> None:
    # A DECIMAL column is one the fast decoder leaves to python-mysql-replication.
    extra = ", price DECIMAL(10, 2) DEFAULT 1.50" if decoder == "library" else ""
    database = db.connection_settings.database
    execute(
        server,
        database,
        "CREATE TABLE `ev-times` (id INT PRIMARY KEY, ts TIMESTAMP NULL, "
        f"ts6 TIMESTAMP(6) NULL, dt DATETIME(1) NULL, n INT{extra})",
    )
    insert(server, db, range(1, 8))
    options: dict[str, Any] = {"table": "ev-times", "batch_size": 3, "progress": False}
    binlog = autoops.CacheSync(db, cache, key="bz:{id}", source="binlog", **options)
    assert binlog.run_once().kind == "snapshot"
    insert(server, db, range(8, 15))
    execute(server, database, "UPDATE `ev-times` SET n = n + 1 WHERE id <= 7")
    streamed = binlog.run_once()
    assert streamed.kind == "stream"
    assert streamed.keys_written == 14

    autoops.CacheSync(db, cache, key="pz:{id}", **options).run_once(full=True)
    polled = cached_rows(cache, "pz:")
    assert {key[1:]: row for key, row in cached_rows(cache, "bz:").items()} == {
        key[1:]: row for key, row in polled.items()
    }
    assert polled == expected_cache(
        db,
        table="ev-times",
        key="pz:{id}",
        columns=("id", "ts", "ts6", "dt", "n", *(("price",) if extra else ())),
    )
    assert polled["pz:1"]["ts6"].startswith("2026-07-01T12:00:00.25")
    assert polled["pz:11"]["ts6"].startswith("2026-03-29T03:00:00")
    twice = "2026-10-25T07:00:00" if zone == "+05:30" else "2026-10-25T02:30:00"
    assert [polled[f"pz:{i}"]["ts"] for i in (5, 6, 12, 13)] == [
        "2026-10-25T02:30:00",
        twice,
        "2026-10-25T02:30:00",
        twice,
    ]
    assert polled["pz:1"]["dt"] == "2026-03-29T02:30:00.5"
