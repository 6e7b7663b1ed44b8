"""A MySQL/MariaDB dump taken from a replica, with the primary's binlog coordinates it matches.

What ``mariadb-dump --dump-slave`` does, done by autoops so it also holds when the replica's SQL
thread is already stopped and on either server family: stop the SQL thread (if it runs), read
the primary's binlog file and position the replica has applied (``Relay_Master_Log_File`` /
``Exec_Master_Log_Pos``, and the GTID position), dump while nothing more is applied, then start
the SQL thread again only if it was running. The dump then matches that position exactly, so
the primary's binary logs from there replay onto it (point-in-time recovery), and the primary
reads nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from .._errors import AutoOpsError, ConfigError, QueryError
from ..db import DbClient, MySQLClient
from ..db._replicas import read_replica_status, replica_settings

if TYPE_CHECKING:
    from ._mysql import DumpRun
from ._errors import BackupError

__all__ = ["applied_position", "dump_from_replica", "replica_client"]

log: Final = logging.getLogger("autoops.backup")
_STOP_WAIT: Final = 30.0


def _status(replica: MySQLClient) -> dict[str, object]:
    where = replica.connection_settings.location
    try:
        rows = read_replica_status(replica)
    except AutoOpsError as exc:
        raise BackupError(
            f"cannot read the replication status of {where} ({exc}); the account needs "
            "REPLICATION CLIENT (MySQL) or SLAVE MONITOR (MariaDB >= 10.5), and SUPER or "
            "REPLICATION SLAVE ADMIN to stop and start its SQL thread"
        ) from exc
    if not rows:
        raise BackupError(
            f"{where} is not a replica (SHOW REPLICA STATUS is empty): from_replica needs a "
            "server replicating from the primary"
        )
    if len(rows) > 1:
        raise BackupError(
            f"{where} replicates from {len(rows)} sources; a dump from it matches no single "
            "primary's binlog position"
        )
    return dict(rows[0])


def _sql_running(row: dict[str, object]) -> bool:
    return str(row.get("Replica_SQL_Running", row.get("Slave_SQL_Running", ""))) == "Yes"


def _sql_thread(replica: MySQLClient, action: str) -> None:
    try:
        try:
            replica.execute(f"{action} REPLICA SQL_THREAD")
        except QueryError:  # before MySQL 8.0.22 and MariaDB 10.5
            replica.execute(f"{action} SLAVE SQL_THREAD")
    except AutoOpsError as exc:
        raise BackupError(
            f"cannot {action.lower()} the SQL thread of the replica "
            f"{replica.connection_settings.location} ({exc}); the account needs SUPER or "
            "REPLICATION SLAVE ADMIN"
        ) from exc


def _gtid(replica: MySQLClient, row: dict[str, object]) -> str | None:
    if "Executed_Gtid_Set" in row:  # MySQL
        return str(row["Executed_Gtid_Set"] or "") or None
    found = replica.query_one("SELECT @@GLOBAL.gtid_slave_pos AS gtid")
    return str(found["gtid"] or "") or None if found else None


@contextlib.contextmanager
def applied_position(replica: MySQLClient) -> Iterator[dict[str, str]]:
    """While the block runs, the replica's SQL thread is stopped; yields the primary's binlog
    file and position (and GTID) the replica has applied. The SQL thread is started again
    afterwards only if it was running before."""
    row = _status(replica)
    was_running = _sql_running(row)
    if was_running:
        _sql_thread(replica, "STOP")
    try:
        deadline = time.monotonic() + _STOP_WAIT
        while _sql_running(row := _status(replica)):
            if time.monotonic() > deadline:
                raise BackupError(
                    f"the SQL thread of {replica.connection_settings.location} did not stop "
                    f"within {_STOP_WAIT:g} s"
                )
            time.sleep(0.05)
        position = {
            "binlog_file": str(row.get("Relay_Source_Log_File", row.get("Relay_Master_Log_File"))),
            "binlog_position": str(row.get("Exec_Source_Log_Pos", row.get("Exec_Master_Log_Pos"))),
            "read_from": f"replica {replica.connection_settings.location}",
        }
        gtid = _gtid(replica, row)
        if gtid:
            position["gtid"] = gtid
        if not was_running:
            log.info(
                "the SQL thread of replica %s is stopped; the dump matches the position it "
                "stopped at (%s:%s) and the thread is left stopped",
                replica.connection_settings.location,
                position["binlog_file"],
                position["binlog_position"],
            )
        yield position
    except BaseException:
        if was_running:
            try:
                _sql_thread(replica, "START")
            except BackupError as exc:
                log.error("%s", exc)
        raise
    if was_running:
        _sql_thread(replica, "START")


@contextlib.contextmanager
def replica_client(primary: MySQLClient, replica: str | DbClient) -> Iterator[MySQLClient]:
    """A client for the replica's copy of the primary's database: a URL takes what it leaves
    out (credentials, timeouts, TLS) from the primary's settings, as ``replicas=`` does."""
    settings = dataclasses.replace(
        replica_settings(primary.connection_settings, replica),
        database=primary.connection_settings.database,
    )
    client = DbClient.from_connection_settings(settings, retry=primary.retry)
    if not isinstance(client, MySQLClient):
        raise ConfigError(f"from_replica must be a MySQL server, got {settings.redacted()}")
    try:
        yield client
    finally:
        client.close()


def dump_from_replica(run: DumpRun) -> Iterator[bytes]:
    """The dump of ``run`` (whose client is the replica) with the SQL thread stopped, and the
    primary's coordinates it matches as its position; the replica's own binary log, if it has
    one, is not asked for."""
    run.binlog = False
    with applied_position(run.db) as position:
        yield from run.chunks()
        run.position.update(position)
