"""A faster decoder for the row images of common column types.

python-mysql-replication decodes each value through a chain of type tests and small reads (about
ten Python calls a value), which bounds a sync at a few thousand rows a second. For tables whose
columns are all of the types below, this module compiles one reader per column once per table
map and decodes a row event's images straight from its bytes with ``struct.unpack_from``, giving
the same values as the library (but TIMESTAMPs in the session's zone, see ``_binlog_zone``).
Any other type (DECIMAL, JSON, ENUM, SET, BIT, spatial, TIME, old DATETIME/TIMESTAMP) leaves the
event to the library.
"""

from __future__ import annotations

import codecs
import datetime as dt
import struct
from collections.abc import Callable
from typing import Any, Final

from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.row_event import RowsEvent

from ._binlog_zone import UTC, SessionZone

__all__ = ["Reader", "Skipper", "decode_images", "fast_readers"]

# A reader takes the event's bytes and an offset, returns the value and the next offset; a
# skipper only the next offset (a column whose value is not needed costs no object).
Reader = Callable[[bytes, int], tuple[Any, int]]
Skipper = Callable[[bytes, int], int]

_UNPACK: Final = {
    (FIELD_TYPE.TINY, False): struct.Struct("<b"),
    (FIELD_TYPE.TINY, True): struct.Struct("<B"),
    (FIELD_TYPE.SHORT, False): struct.Struct("<h"),
    (FIELD_TYPE.SHORT, True): struct.Struct("<H"),
    (FIELD_TYPE.LONG, False): struct.Struct("<i"),
    (FIELD_TYPE.LONG, True): struct.Struct("<I"),
    (FIELD_TYPE.LONGLONG, False): struct.Struct("<q"),
    (FIELD_TYPE.LONGLONG, True): struct.Struct("<Q"),
    (FIELD_TYPE.FLOAT, False): struct.Struct("<f"),
    (FIELD_TYPE.FLOAT, True): struct.Struct("<f"),
    (FIELD_TYPE.DOUBLE, False): struct.Struct("<d"),
    (FIELD_TYPE.DOUBLE, True): struct.Struct("<d"),
}
_EPOCH: Final = dt.datetime(1970, 1, 1)


def _skip(size: int) -> Skipper:
    return lambda data, at: at + size


def _skip_text(length_size: int) -> Skipper:
    def skip(data: bytes, at: int) -> int:
        end = at + length_size
        return end + int.from_bytes(data[at:end], "little")

    return skip


def _fixed(unpacker: struct.Struct) -> Reader:
    size = unpacker.size
    unpack_from = unpacker.unpack_from

    def read(data: bytes, at: int) -> tuple[Any, int]:
        return unpack_from(data, at)[0], at + size

    return read


def _int24(unsigned: bool) -> Reader:
    def read(data: bytes, at: int) -> tuple[Any, int]:
        return int.from_bytes(data[at : at + 3], "little", signed=not unsigned), at + 3

    return read


def _text(length_size: int, encoding: str | None) -> Reader:
    def read(data: bytes, at: int) -> tuple[Any, int]:
        end = at + length_size
        length = int.from_bytes(data[at:end], "little")
        raw = data[end : end + length]
        return (raw.decode(encoding) if encoding else raw), end + length

    return read


def _encoding(column: Any) -> str | None:
    """The Python codec of a text column, as the library picks it (None: bytes, as the
    library leaves binary columns and charsets Python does not know)."""
    encoding = RowsEvent.charset_to_encoding(column.character_set_name)
    try:
        codecs.lookup(encoding)
    except LookupError:
        return None
    return str(encoding)


def _fraction(fsp: int) -> tuple[int, int]:
    """Bytes of a DATETIME2/TIMESTAMP2 fraction, and the factor to microseconds."""
    size = (fsp + 1) // 2
    return size, 10 ** (6 - 2 * size) if size else 0


def _datetime2(fsp: int) -> Reader:
    size, factor = _fraction(fsp)

    def read(data: bytes, at: int) -> tuple[Any, int]:
        packed = int.from_bytes(data[at : at + 5], "big")
        micro = int.from_bytes(data[at + 5 : at + 5 + size], "big") * factor if size else 0
        year_month = (packed >> 22) & 0x1FFFF
        try:
            value: Any = dt.datetime(
                year_month // 13,
                year_month % 13,
                (packed >> 17) & 0x1F,
                (packed >> 12) & 0x1F,
                (packed >> 6) & 0x3F,
                packed & 0x3F,
                micro,
            )
        except ValueError:
            value = None  # a zero date, as the library gives
        return value, at + 5 + size

    return read


def _timestamp2(fsp: int, zone: SessionZone) -> Reader:
    size, factor = _fraction(fsp)
    offset = zone.offset
    local = zone.local

    def read(data: bytes, at: int) -> tuple[Any, int]:
        seconds = int.from_bytes(data[at : at + 4], "big")
        micro = int.from_bytes(data[at + 4 : at + 4 + size], "big") * factor if size else 0
        if offset is None:
            return local(seconds, micro), at + 4 + size
        # 0 is the zero TIMESTAMP, which no zone shifts.
        shifted = seconds + offset if seconds else 0
        return _EPOCH + dt.timedelta(seconds=shifted, microseconds=micro), at + 4 + size

    return read


def _date(data: bytes, at: int) -> tuple[Any, int]:
    packed = int.from_bytes(data[at : at + 3], "little")
    try:
        value: Any = dt.date(packed >> 9, (packed >> 5) & 0xF, packed & 0x1F)
    except ValueError:
        value = None
    return value, at + 3


def _reader(column: Any, unsigned: bool, zone: SessionZone) -> tuple[Reader, Skipper] | None:
    kind = column.type
    if (kind, unsigned) in _UNPACK:
        unpacker = _UNPACK[(kind, unsigned)]
        return _fixed(unpacker), _skip(unpacker.size)
    if kind == FIELD_TYPE.INT24:
        return _int24(unsigned), _skip(3)
    if kind in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING, FIELD_TYPE.BLOB):
        if getattr(column, "character_set_name", None) is None:
            return None  # no charset metadata: the library's own guess applies
        size = column.length_size if kind == FIELD_TYPE.BLOB else 1 + (column.max_length > 255)
        return _text(size, _encoding(column)), _skip_text(size)
    if kind == FIELD_TYPE.DATETIME2:
        return _datetime2(column.fsp), _skip(5 + _fraction(column.fsp)[0])
    if kind == FIELD_TYPE.TIMESTAMP2:
        return _timestamp2(column.fsp, zone), _skip(4 + _fraction(column.fsp)[0])
    if kind == FIELD_TYPE.DATE:
        return _date, _skip(3)
    return None


def fast_readers(table: Any, zone: SessionZone = UTC) -> tuple[tuple[Reader, Skipper], ...] | None:
    """A reader and a skipper per column of a python-mysql-replication ``Table``, or None when
    a column has a type this module leaves to the library. TIMESTAMPs are read in ``zone``
    (the library reads them in UTC)."""
    readers = []
    for column in table.columns:
        reader = _reader(column, bool(getattr(column, "unsigned", False)), zone)
        if reader is None:
            return None
        readers.append(reader)
    return tuple(readers)


def decode_images(
    data: bytes,
    readers: tuple[tuple[Reader, Skipper], ...],
    names: tuple[str, ...],
    images: int,
    key_columns: frozenset[str] | None = None,
    *,
    first_locates: bool = False,
) -> list[list[dict[str, Any]]]:
    """The rows of a row event's body (after its column bitmaps), each a list of ``images``
    dicts (1 for writes and deletes, 2 for updates: before, after). Every column is present
    (``binlog_row_image=FULL``), so each image is a null bitmap and the non-null values.

    ``key_columns`` with ``first_locates``: the first image only locates a key (an update's
    before image, a delete's image), so it holds just these columns, the others skipped; None
    decodes every column."""
    count = len(readers)
    bitmap_size = (count + 7) // 8
    full = tuple(zip(range(count), names, readers, strict=True))
    partial = tuple(
        (index, name, reader, name in key_columns)
        for index, name, reader in full
        if key_columns is not None
    )
    skim = key_columns is not None and first_locates
    rows: list[list[dict[str, Any]]] = []
    at, end = 0, len(data)
    while at < end:
        row = []
        for image in range(images):
            nulls = int.from_bytes(data[at : at + bitmap_size], "little")
            at += bitmap_size
            values: dict[str, Any] = {}
            if skim and image == 0:
                for index, name, (read, skip), wanted in partial:
                    if nulls >> index & 1:
                        if wanted:
                            values[name] = None
                    elif wanted:
                        values[name], at = read(data, at)
                    else:
                        at = skip(data, at)
            else:
                for index, name, (read, _) in full:
                    if nulls >> index & 1:
                        values[name] = None
                    else:
                        values[name], at = read(data, at)
            row.append(values)
        rows.append(row)
    return rows
