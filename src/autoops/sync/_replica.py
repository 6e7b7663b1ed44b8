"""Where a sync's row reads go: the primary, or a replica that has caught up with the horizon.

A pass takes its horizon on the primary (its clock, its open transactions): every row stamped
before it is committed there. Rows read from a replica are as complete only once the replica
has applied everything the primary had committed when the horizon was taken. So right after
the horizon, the pass marks that moment and waits (up to the lag bound and a little more) for
a replica whose lag reading proves it has applied everything before it; its reads then go
only to such a replica, and to the primary when there is none. The replica's lag thus delays
the reads instead of moving the horizon, and the horizon's guarantee holds as on the primary.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Final, Literal

from .._errors import ConfigError
from ..db import DbClient, MySQLClient
from ..db._replicas import LAG_READING_TTL

__all__ = ["ReadFrom", "ReadPoint"]

log: Final = logging.getLogger("autoops.sync")

ReadFrom = Literal["primary", "replica"]
# Seconds_Behind_Master counts whole seconds, so a replica proves it has caught up with a
# moment only about a second after it, plus the age of a lag reading.
_PROOF_DELAY: Final = 1.0 + LAG_READING_TTL


class ReadPoint:
    """The read options of one sync's row reads: none for ``read_from="primary"``; with
    ``"replica"``, ``replica_ok`` and the moment the replica must have applied."""

    def __init__(self, db: DbClient, read_from: str, name: str) -> None:
        if read_from not in ("primary", "replica"):
            raise ConfigError(f"read_from must be 'primary' or 'replica', got {read_from!r}")
        if read_from == "replica" and not (isinstance(db, MySQLClient) and db.replicas):
            raise ConfigError(
                "read_from='replica' needs a MySQL client with replicas "
                "(DbClient.from_url(url, replicas=[...]) or replicas in [db])"
            )
        self.db = db
        self.replica = read_from == "replica"
        self.name = name
        self._since: float | None = None
        self._lock = threading.Lock()

    def new_pass(self) -> None:
        """Forget the last pass's moment: the next read marks one."""
        self._since = None

    def mark(self) -> None:
        """Take now as the moment the pass's reads must see (call it just after the horizon)
        and wait for a replica to have applied everything before it."""
        if not self.replica:
            return
        assert isinstance(self.db, MySQLClient)
        since = time.monotonic()
        timeout = self.db.max_replica_lag + _PROOF_DELAY
        if not self.db.wait_for_replica(since, timeout):
            log.info(
                "sync %s: no replica caught up with the horizon within %g s; this pass reads "
                "from the primary",
                self.name,
                timeout,
            )
        self._since = since

    def options(self) -> dict[str, Any]:
        """Keyword arguments for a row read (``DbClient.query``, ``query_one``)."""
        if not self.replica:
            return {}
        with self._lock:
            if self._since is None:
                self.mark()
            return {"replica_ok": True, "applied_since": self._since}
