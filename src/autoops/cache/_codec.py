"""Codecs: how cache values become bytes and back.

The default :class:`JsonCodec` writes plain JSON that any consumer (a PHP or Node app reading the
same cache) can read, with these conventions for what a database row holds:

========================  ==========================================================
Python value              JSON
========================  ==========================================================
str, int, bool, None      string, number, true/false, null
float                     number (NaN and infinities are refused: JSON has none)
decimal.Decimal           string, exact (``"19.99"``), so no precision is lost
datetime.datetime         ISO-8601 string, ``"2024-05-01T12:30:00.123456"`` (offset kept
                          when the value is aware: ``"...+00:00"``)
datetime.date / time      ``"2024-05-01"`` / ``"12:30:00"``
datetime.timedelta        MySQL TIME text, ``"-01:02:03.500000"``
bytes, bytearray          base64 string (standard alphabet, padded)
uuid.UUID                 string
dict, list, tuple         object, array (dict keys must be strings)
========================  ==========================================================

Decoding is plain JSON: dates, decimals and bytes come back as the strings above.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
from typing import Any, Protocol, runtime_checkable

import orjson

from .._errors import CodecError

__all__ = ["Codec", "JsonCodec", "RawCodec"]


@runtime_checkable
class Codec(Protocol):
    """Turns values into bytes for the cache and back. Implement both methods to add one."""

    name: str

    def encode(self, value: Any) -> bytes:
        """Bytes for ``value``; raise :class:`~autoops.CodecError` for what cannot be encoded."""
        ...

    def decode(self, data: bytes) -> Any:
        """The value stored as ``data``."""
        ...


def _timedelta_text(value: dt.timedelta) -> str:
    total = value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds
    sign = "-" if total < 0 else ""
    total = abs(total)
    seconds, micros = divmod(total, 1_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{text}.{micros:06d}" if micros else text


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise TypeError(f"a non-finite Decimal ({value}) has no JSON form")
        # Positional, as the database prints it: str() would write DECIMAL 0.0000001000 as
        # "1.000E-7", which consumers reading the cache (PHP, JS) do not expect.
        return format(value, "f")
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.timedelta):
        return _timedelta_text(value)
    if isinstance(value, set | frozenset):
        raise TypeError("a set has no JSON form; convert it to a sorted list first")
    raise TypeError(f"values of type {type(value).__name__} have no JSON form")


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(item) for item in value)
    return False


class JsonCodec:
    """Plain JSON (UTF-8, compact) with the conventions in this module's docstring."""

    name = "json"

    def encode(self, value: Any) -> bytes:
        try:
            data = orjson.dumps(value, default=_default)
        except TypeError as exc:
            reason = exc.__cause__ if isinstance(exc.__cause__, TypeError) else exc
            raise CodecError(f"cannot encode value as JSON: {reason}") from None
        # orjson writes NaN and infinities as null; refuse them instead of losing them silently.
        if b"null" in data and _has_non_finite(value):
            raise CodecError(
                "cannot encode value as JSON: it holds NaN or an infinity, which JSON cannot "
                "represent; replace them with None or a string first"
            )
        return data

    def decode(self, data: bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CodecError(
                f"cached value is not JSON ({exc}); was it written with another codec?"
            ) from None

    def __repr__(self) -> str:
        return "JsonCodec()"


class RawCodec:
    """Bytes in, bytes out; ``str`` is stored as UTF-8. ``text=True`` decodes values to str."""

    name = "raw"

    def __init__(self, *, text: bool = False) -> None:
        self.text = text

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        raise CodecError(
            f"RawCodec stores bytes or str, not {type(value).__name__}; use JsonCodec for "
            "structured values"
        )

    def decode(self, data: bytes) -> Any:
        if self.text:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CodecError(f"cached value is not UTF-8 text: {exc}") from None
        return data

    def __repr__(self) -> str:
        return f"RawCodec(text={self.text})"
