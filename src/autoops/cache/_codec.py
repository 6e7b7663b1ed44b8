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

By default a fraction of a second is written only when it is not zero (Python's ``isoformat``).
``fraction_digits=6`` (0 to 6) writes every datetime, time and timedelta with that many digits,
so a consumer's fixed format (PHP's ``Y-m-d\\TH:i:s.u``) parses every value; CacheSync writes each
column at its declared precision (``DATETIME(3)``: 3 digits).

``safe_integers=True`` writes integers outside +/-(2**53 - 1) as strings (``"9007199254740993"``),
the convention of Twitter's ``id_str`` and of Protobuf's JSON mapping of int64: JavaScript numbers
are doubles and would round them silently. CacheSync turns it on unless its cache's codec was made
with ``safe_integers=False``.

Decoding is plain JSON: dates, decimals and bytes come back as the strings above.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import functools
import math
from collections.abc import Callable
from typing import Any, Final, Protocol, runtime_checkable

import orjson

from .._errors import CodecError, ConfigError

__all__ = ["Codec", "JsonCodec", "RawCodec", "fixed_fraction"]

# Integers JavaScript (a double) holds exactly: Number.MAX_SAFE_INTEGER.
_SAFE_INTEGER: Final = 2**53 - 1


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


def _timedelta_text(value: dt.timedelta, digits: int | None = None) -> str:
    total = value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds
    sign = "-" if total < 0 else ""
    total = abs(total)
    seconds, micros = divmod(total, 1_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
    if digits is None:
        return f"{text}.{micros:06d}" if micros else text
    return _with_fraction(text, micros, digits, value)


def _with_fraction(whole: str, micros: int, digits: int, value: object) -> str:
    if micros % 10 ** (6 - digits):
        raise CodecError(
            f"{value!r} has more than {digits} fraction digits; raise fraction_digits to keep them"
        )
    return f"{whole}.{micros:06d}"[: len(whole) + 1 + digits] if digits else whole


def fixed_fraction(value: dt.datetime | dt.time | dt.timedelta, digits: int) -> str:
    """``value`` as the codec writes it, with exactly ``digits`` (0-6) fraction digits; a
    :class:`~autoops.CodecError` if that would drop non-zero digits."""
    if isinstance(value, dt.timedelta):
        return _timedelta_text(value, digits)
    text = value.isoformat(timespec="seconds")
    end = 19 if isinstance(value, dt.datetime) else 8  # where the whole seconds end
    return _with_fraction(text[:end], value.microsecond, digits, value) + text[end:]


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


def _default_fixed(value: Any, *, digits: int) -> Any:
    if isinstance(value, dt.datetime | dt.time | dt.timedelta):
        return fixed_fraction(value, digits)
    if isinstance(value, dt.date):
        return value.isoformat()
    return _default(value)


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(item) for item in value)
    return False


def _integers_as_strings(value: Any) -> Any:
    if isinstance(value, int) and not -_SAFE_INTEGER <= value <= _SAFE_INTEGER:
        return str(int(value))
    if isinstance(value, dict):
        return {key: _integers_as_strings(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_integers_as_strings(item) for item in value]
    return value


class JsonCodec:
    """Plain JSON (UTF-8, compact) with the conventions in this module's docstring.

    ``fraction_digits`` (0-6) writes every datetime, time and timedelta with that many fraction
    digits instead of only non-zero ones; ``safe_integers=True`` writes integers JavaScript cannot
    hold exactly as strings (None: off here, on in CacheSync).
    """

    name = "json"

    def __init__(
        self, *, safe_integers: bool | None = None, fraction_digits: int | None = None
    ) -> None:
        if fraction_digits is not None and (
            isinstance(fraction_digits, bool)
            or not isinstance(fraction_digits, int)
            or not 0 <= fraction_digits <= 6
        ):
            raise ConfigError(
                f"fraction_digits must be a whole number from 0 to 6, got {fraction_digits!r}"
            )
        self.safe_integers = safe_integers
        self.fraction_digits = fraction_digits
        # OPT_STRICT_INTEGER makes orjson refuse what JavaScript would round: the common case
        # (no such integer) costs nothing, and only a refused value is walked and converted.
        self._option = orjson.OPT_STRICT_INTEGER if safe_integers else 0
        self._default: Callable[[Any], Any] = _default
        if fraction_digits is not None:
            self._option |= orjson.OPT_PASSTHROUGH_DATETIME
            self._default = functools.partial(_default_fixed, digits=fraction_digits)

    def encode(self, value: Any) -> bytes:
        try:
            try:
                data = orjson.dumps(value, default=self._default, option=self._option)
            except TypeError:
                if not self.safe_integers:
                    raise
                data = orjson.dumps(
                    _integers_as_strings(value),
                    default=self._default,
                    option=self._option & ~orjson.OPT_STRICT_INTEGER,
                )
        except TypeError as exc:
            if isinstance(exc.__cause__, CodecError):
                raise exc.__cause__ from None
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
        options = [
            f"{name}={value!r}"
            for name, value in (
                ("safe_integers", self.safe_integers),
                ("fraction_digits", self.fraction_digits),
            )
            if value is not None
        ]
        return f"JsonCodec({', '.join(options)})"


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
