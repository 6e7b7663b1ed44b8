"""One parameter style for both dialects: pymysql's ``%s`` and ``%(name)s``.

SQLite wants ``?`` and ``:name``; this module rewrites a statement once (cached) outside string
literals and comments, and adapts values SQLite has no type for.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

from .._errors import QueryError

__all__ = ["Params", "adapt_sqlite_params", "to_sqlite_style"]

Params = Sequence[Any] | Mapping[str, Any] | None


@lru_cache(maxsize=1024)
def to_sqlite_style(sql: str) -> str:
    """Rewrite ``%s`` -> ``?``, ``%(name)s`` -> ``:name`` and ``%%`` -> ``%`` outside literals."""
    out: list[str] = []
    index = 0
    length = len(sql)
    positional = named = False
    while index < length:
        char = sql[index]
        if char in "'\"`":
            end = index + 1
            while end < length:
                if sql[end] == char:
                    if end + 1 < length and sql[end + 1] == char:
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[index : end + 1])
            index = end + 1
        elif sql.startswith("--", index):
            end = sql.find("\n", index)
            end = length if end == -1 else end
            out.append(sql[index:end])
            index = end
        elif sql.startswith("/*", index):
            end = sql.find("*/", index + 2)
            end = length if end == -1 else end + 2
            out.append(sql[index:end])
            index = end
        elif char == "%":
            following = sql[index + 1 : index + 2]
            if following == "s":
                out.append("?")
                positional = True
                index += 2
            elif following == "%":
                out.append("%")
                index += 2
            elif following == "(":
                close = sql.find(")s", index)
                if close == -1:
                    raise QueryError(f"unterminated %(name)s placeholder at offset {index}")
                name = sql[index + 2 : close]
                if not name.isidentifier():
                    raise QueryError(f"bad placeholder name {name!r} at offset {index}")
                out.append(f":{name}")
                named = True
                index = close + 2
            else:
                raise QueryError(
                    f"stray '%' at offset {index}: write '%%' for a literal percent sign"
                )
        else:
            out.append(char)
            index += 1
    if positional and named:
        raise QueryError("a statement cannot mix %s and %(name)s placeholders")
    return "".join(out)


def _datetime(value: Any) -> str:
    return str(value.isoformat(sep=" "))


def _isoformat(value: Any) -> str:
    return str(value.isoformat())


# Stored as MySQL writes them as text, so ordering and SQLite's date functions work.
_ADAPTERS: Final[dict[type, Callable[[Any], Any]]] = {
    dt.datetime: _datetime,
    dt.date: _isoformat,
    dt.time: _isoformat,
    decimal.Decimal: str,
}


def _adapt(value: Any) -> Any:
    adapter = _ADAPTERS.get(type(value))
    return adapter(value) if adapter is not None else value


def adapt_sqlite_params(params: Params) -> Sequence[Any] | Mapping[str, Any]:
    """Convert values SQLite cannot store (datetime, Decimal, ...) to text."""
    if params is None:
        return ()
    if isinstance(params, Mapping):
        return {name: _adapt(value) for name, value in params.items()}
    if isinstance(params, str | bytes):
        raise QueryError("params must be a sequence or a mapping, not a single string")
    return [_adapt(value) for value in params]
