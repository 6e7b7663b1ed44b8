"""Quoting table and column names: only plain identifiers get through."""

from __future__ import annotations

import re
from typing import Final

from .._config import Dialect
from .._errors import ConfigError

__all__ = ["quote_any_name", "quote_identifier"]

_PLAIN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,63}")
_QUOTES: Final = {"mysql": "`", "sqlite": '"'}


def quote_identifier(name: str, dialect: Dialect = "mysql") -> str:
    """Quote a table or column name (``users`` -> ```users```), or a dotted ``schema.table``.

    Anything but letters, digits, ``_`` and ``$`` (starting with a letter or ``_``, at most 64
    characters a part) is refused with a :class:`ConfigError`, so a name from a config file or a
    command line can never carry SQL.
    """
    quote = _QUOTES.get(dialect)
    if quote is None:
        raise ConfigError(f"unknown SQL dialect {dialect!r}; use 'mysql' or 'sqlite'")
    if not isinstance(name, str):
        raise ConfigError(f"an identifier must be a string, got {type(name).__name__}")
    parts = name.split(".")
    if len(parts) > 2 or not all(_PLAIN.fullmatch(part) for part in parts):
        raise ConfigError(
            f"{name!r} is not a plain SQL identifier: use letters, digits, '_' and '$', "
            "starting with a letter or '_', at most 64 characters (optionally schema.table)"
        )
    return ".".join(f"{quote}{part}{quote}" for part in parts)


def quote_any_name(name: str, dialect: Dialect = "mysql") -> str:
    """Quote one name exactly as it is (``order-items``, ``2fa_codes``, ``usérs``, even
    ``a.b``), the quote character doubled, so it can carry no SQL: for names the server itself
    reported, or that the caller has checked, which :func:`quote_identifier` would refuse."""
    quote = _QUOTES[dialect]
    return quote + name.replace(quote, quote * 2) + quote
