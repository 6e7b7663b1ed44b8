"""The session time zone binlog TIMESTAMP values are shown in.

The log holds a TIMESTAMP as seconds since the epoch; a SELECT shows it as wall-clock time in the
session's ``time_zone``. The binlog sync must cache what the polling sync reads, so it turns the
seconds into that wall-clock time: at once for a fixed offset, and for ``SYSTEM`` or a named zone
by asking the server itself (``FROM_UNIXTIME`` in a session with the same ``time_zone``), which
is exact whatever zone data the server has, DST included. Each day's offset is asked once; a day
whose offset changes (a DST switch) is asked value by value.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Final

from .._connection import DbConnectionSettings

__all__ = ["SessionZone", "session_zone"]

_EPOCH: Final = dt.datetime(1970, 1, 1)
_DAY: Final = 86_400
_OFFSET: Final = re.compile(r"^([+-])(\d{1,2}):(\d{2})$")
_UTC_NAMES: Final = frozenset({"UTC", "GMT", "Etc/UTC", "Etc/GMT", "+00:00", "-00:00"})
# @@system_time_zone is the abbreviation in force when the server started: "UTC" only on a UTC
# clock, while "GMT" may be London in winter, so that is left to the server.
_SYSTEM_UTC: Final = "UTC"
_MAX_SECONDS: Final = 10_000


class SessionZone:
    """Turns a TIMESTAMP's seconds since the epoch into the naive wall-clock time a session in
    ``name`` reads; ``offset`` is set when the zone has one fixed offset (seconds east of UTC)."""

    def __init__(
        self, name: str, offset: int | None, settings: DbConnectionSettings | None = None
    ) -> None:
        self.name = name
        self.offset = offset
        self._settings = settings
        self._connection: Any = None
        self._days: dict[int, int | None] = {}
        self._seconds: dict[int, int | None] = {}

    def __repr__(self) -> str:
        return f"SessionZone({self.name!r}, offset={self.offset!r})"

    def local(self, seconds: int, microseconds: int = 0) -> dt.datetime:
        """The wall-clock time of ``seconds`` since the epoch (0 is MariaDB's zero TIMESTAMP,
        left as the library gives it)."""
        if not seconds:
            shift: int | None = 0
        elif self.offset is not None:
            shift = self.offset
        else:
            shift = self._shift(seconds)
        return _EPOCH + dt.timedelta(seconds=seconds + (shift or 0), microseconds=microseconds)

    def from_utc(self, value: dt.datetime) -> dt.datetime:
        """A naive UTC datetime (as python-mysql-replication decodes a TIMESTAMP) in this zone."""
        elapsed = value - _EPOCH
        return self.local(elapsed.days * _DAY + elapsed.seconds, elapsed.microseconds)

    def close(self) -> None:
        """Close the connection used to ask the server, if one was opened."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _shift(self, seconds: int) -> int | None:
        day = seconds - seconds % _DAY
        if day not in self._days:
            first, last = self._ask(day, day + _DAY - 1)
            self._days[day] = first if first == last else None
        shift = self._days[day]
        if shift is not None:
            return shift
        if seconds not in self._seconds:
            if len(self._seconds) >= _MAX_SECONDS:
                self._seconds.clear()
            self._seconds[seconds] = self._ask(seconds, seconds)[0]
        return self._seconds[seconds]

    def _ask(self, first: int, last: int) -> tuple[int | None, int | None]:
        if self._connection is None:
            assert self._settings is not None
            self._connection = self._settings.open_connection()
            with self._connection.cursor() as cursor:
                cursor.execute("SET time_zone = %s", (self.name,))
        with self._connection.cursor() as cursor:
            cursor.execute("SELECT FROM_UNIXTIME(%s), FROM_UNIXTIME(%s)", (first, last))
            row = cursor.fetchone()
        values = list(row.values()) if isinstance(row, dict) else list(row)
        return (
            _difference(values[0], first),
            _difference(values[1], last),
        )


def _difference(local: Any, seconds: int) -> int | None:
    if not isinstance(local, dt.datetime):
        return None  # past the server's FROM_UNIXTIME range
    return int((local - _EPOCH).total_seconds()) - seconds


UTC: Final = SessionZone("+00:00", 0)


def session_zone(db: Any) -> SessionZone:
    """The time zone of ``db``'s sessions (what its SELECTs show TIMESTAMPs in)."""
    row = db.query_one("SELECT @@session.time_zone AS zone, @@system_time_zone AS system_zone")
    name = str(row["zone"]) if row else "SYSTEM"
    system = str(row["system_zone"]) if row else ""
    if (name.upper() == "SYSTEM" and system == _SYSTEM_UTC) or name in _UTC_NAMES:
        return SessionZone(name, 0)
    fixed = _OFFSET.match(name)
    if fixed:
        sign = -1 if fixed.group(1) == "-" else 1
        return SessionZone(name, sign * (int(fixed.group(2)) * 3600 + int(fixed.group(3)) * 60))
    return SessionZone(name, None, db.connection_settings)
