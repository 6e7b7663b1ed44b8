"""One parameter style for both dialects: pymysql's ``%s`` and ``%(name)s``.

With parameters, pymysql applies Python %-formatting to the whole statement; this module gives
SQLite the same meaning (``%%`` is ``%`` even inside a literal), rewrites a statement once (cached)
to ``?`` and ``:name``, refuses what would mean different things in the two dialects (a
placeholder inside a literal or comment), and adapts values SQLite has no type for.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

from .._errors import QueryError

__all__ = ["Params", "adapt_sqlite_params", "check_mysql_placeholders", "to_sqlite_style"]

Params = Sequence[Any] | Mapping[str, Any] | None


# What is not plain SQL, with the '%' that starts a placeholder: literals, quoted names and
# comments (an unterminated one runs to the end). MySQL also has backslash escapes and '#' comments.
_REGIONS_SQLITE: Final = (
    r"""'(?:[^']|'')*'?|"(?:[^"]|"")*"?|`(?:[^`]|``)*`?|--[^\n]*|/\*.*?(?:\*/|\Z)"""
)
_REGIONS_MYSQL: Final = (
    r"""'(?:[^'\\]|\\.|'')*'?|"(?:[^"\\]|\\.|"")*"?|`(?:[^`]|``)*`?|--[^\n]*|#[^\n]*"""
    r"""|/\*.*?(?:\*/|\Z)"""
)
_TOKENS: Final = {
    False: re.compile(f"{_REGIONS_SQLITE}|%", re.DOTALL),
    True: re.compile(f"{_REGIONS_MYSQL}|%", re.DOTALL),
}
_REGION_NAMES: Final = {"'": "string literal", '"': "double-quoted text", "`": "quoted name"}


def _placeholder(sql: str, percent: int) -> tuple[str, int]:
    """The placeholder at ``sql[percent]`` as sqlite3 writes it, and the index after it."""
    following = sql[percent + 1 : percent + 2]
    if following == "%":
        return "%", percent + 2
    if following == "s":
        return "?", percent + 2
    if following == "(":
        close = sql.find(")s", percent)
        if close == -1:
            raise QueryError(f"unterminated %(name)s placeholder at offset {percent}")
        name = sql[percent + 2 : close]
        if not name.isidentifier():
            raise QueryError(f"bad placeholder name {name!r} at offset {percent}")
        return f":{name}", close + 2
    raise QueryError(
        f"stray '%' at offset {percent}: with parameters, '%' is special everywhere in the "
        "statement, literals included (Python %-formatting, as pymysql does): write '%%' for a "
        "literal percent sign"
    )


def _percent_signs_only(sql: str, start: int, end: int, what: str) -> str:
    """The text of a literal or comment with ``%%`` made ``%``; a placeholder there is refused."""
    out: list[str] = []
    index = start
    while (percent := sql.find("%", index, end)) != -1:
        out.append(sql[index:percent])
        replacement, index = _placeholder(sql, percent)
        if replacement != "%":
            text = sql[percent:index]
            raise QueryError(
                f"placeholder {text} at offset {percent} is inside a {what}, where it cannot "
                "stand for a value: put it outside the quotes (the value is quoted for you), or "
                f"write %{text} for the literal text {text}"
            )
        out.append("%")
    out.append(sql[index:end])
    return "".join(out)


@lru_cache(maxsize=1024)
def _scan(sql: str, backslash_escapes: bool) -> str:
    """Check ``sql`` as Python %-formatting (what pymysql does with parameters) and return it in
    sqlite3's style: ``%s`` -> ``?``, ``%(name)s`` -> ``:name``, ``%%`` -> ``%``.

    As with pymysql, ``%`` is special everywhere in the statement, literals and comments
    included. A placeholder inside a literal or a comment is refused: pymysql would paste a quoted
    value there (or use up a parameter unseen), sqlite3 would not bind it at all.
    """
    tokens = _TOKENS[backslash_escapes]
    out: list[str] = []
    kinds: set[str] = set()
    index = 0
    while (match := tokens.search(sql, index)) is not None:
        out.append(sql[index : match.start()])
        if match.group() == "%":
            replacement, index = _placeholder(sql, match.start())
            if replacement != "%":
                kinds.add(replacement[0])
            out.append(replacement)
        else:
            what = _REGION_NAMES.get(sql[match.start()], "comment")
            out.append(_percent_signs_only(sql, match.start(), match.end(), what))
            index = match.end()
    out.append(sql[index:])
    if len(kinds) > 1:
        raise QueryError("a statement cannot mix %s and %(name)s placeholders")
    return "".join(out)


def to_sqlite_style(sql: str) -> str:
    """Rewrite pymysql's ``%s`` / ``%(name)s`` / ``%%`` for sqlite3, with pymysql's meaning."""
    return _scan(sql, False)


def check_mysql_placeholders(sql: str) -> None:
    """Refuse what :func:`to_sqlite_style` refuses, so both dialects accept the same statements;
    pymysql itself then formats ``sql`` (MySQL's backslash escapes in literals are honoured)."""
    _scan(sql, True)


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
