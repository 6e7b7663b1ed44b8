"""What a sync reads: the key template, the table's columns, and the SQL for each page.

Two ways to build a row's value. The portable one reads the columns and encodes them with the
cache's codec in Python. The fast one (MySQL/MariaDB, JSON codec, every cached column of a type
whose JSON form the server writes exactly as the codec would) has the server build the key and
the JSON object, so the driver decodes two short byte strings a row instead of every column:
pymysql is pure Python and row decoding bounds the throughput.
"""

from __future__ import annotations

import datetime as dt
import functools
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from .._errors import ConfigError
from ..cache import Codec, JsonCodec
from ..cache._codec import fixed_fraction
from ..db import DbClient
from ..db._identifiers import quote_any_name

__all__ = ["Column", "KeyTemplate", "TablePlan", "inspect_table", "quote_name"]

_INTEGER_TYPES: Final = frozenset({"tinyint", "smallint", "mediumint", "int", "bigint"})
_TEXT_TYPES: Final = frozenset(
    {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum"}
)
_BINARY_TYPES: Final = frozenset(
    {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}
)
_NO_LIMIT: Final = 18446744073709551615
# A BIGINT JavaScript cannot hold exactly becomes a JSON string (the codec's safe_integers):
# IF() of a number and a string is a string, so both arms are JSON text that JSON_EXTRACT parses.
_SAFE_BIGINT: Final = (
    "JSON_EXTRACT(IF({c} BETWEEN -9007199254740991 AND 9007199254740991, CAST({c} AS CHAR), "
    "JSON_QUOTE(CAST({c} AS CHAR))), '$')"
)


def quote_name(db: DbClient, name: str) -> str:
    """Quote a table or column name, ``schema.table`` allowed: any legal name (``order-items``,
    ``usérs``, ``2fa_codes``), its quote characters doubled, so no name can carry SQL. Refused
    (a :class:`ConfigError`): empty parts, parts over 64 characters or ending in a space, NUL,
    and ``%`` (statements with parameters would read it as a placeholder)."""
    if not isinstance(name, str):
        raise ConfigError(f"a table or column name must be a string, got {type(name).__name__}")
    parts = name.split(".", 1)
    for part in parts:
        if not part or len(part) > 64 or part != part.rstrip() or "\0" in part or "%" in part:
            raise ConfigError(
                f"{name!r} is not a usable table or column name: each part (schema.table) must "
                "be 1 to 64 characters, not end in a space, and hold no NUL or '%'"
            )
    return ".".join(quote_any_name(part, db.dialect) for part in parts)


def _name_literal(name: str) -> str:
    """A column name as a SQL string literal (the JSON object's key)."""
    return "'" + name.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class KeyTemplate:
    """``"users:{id}"``: a literal prefix, the primary key, an optional literal suffix."""

    prefix: str
    suffix: str
    field: str

    @classmethod
    def parse(cls, template: str, primary_key: str) -> KeyTemplate:
        """Check ``template`` names the primary key once, and nothing else."""
        if not isinstance(template, str) or not template:
            raise ConfigError(f"key must be a template such as 'users:{{id}}', got {template!r}")
        try:
            parts = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ConfigError(f"key template {template!r} is malformed: {exc}") from None
        fields = [(name, spec, conv) for _, name, spec, conv in parts if name is not None]
        if len(fields) != 1 or fields[0][0] != primary_key or fields[0][1] or fields[0][2]:
            raise ConfigError(
                f"key template {template!r} must name the primary key {{{primary_key}}} once and "
                "no other column (no format spec): keys built from other columns go stale when "
                "those change, and reconciliation maps every key back to its row by primary key"
            )
        prefix = parts[0][0]
        suffix = "".join(literal for literal, *_ in parts[1:])
        if not prefix:
            raise ConfigError(
                f"key template {template!r} must start with a literal prefix such as 'users:', "
                "so the sync's keys can be told apart from every other key"
            )
        if prefix.startswith(META_PREFIX):
            raise ConfigError(f"key prefixes starting with {META_PREFIX!r} are the sync's own")
        return cls(prefix=prefix, suffix=suffix, field=primary_key)

    def format(self, primary_key: Any) -> str:
        """The key of the row whose primary key is ``primary_key``."""
        return f"{self.prefix}{primary_key}{self.suffix}"

    def primary_key_of(self, name: str, integer: bool) -> Any:
        """The primary key a key name stands for, or None if it is not one of this sync's keys."""
        if not name.startswith(self.prefix) or not name.endswith(self.suffix):
            return None
        text = name[len(self.prefix) : len(name) - len(self.suffix)]
        if len(name) < len(self.prefix) + len(self.suffix) or not text:
            return None
        if not integer:
            return text
        try:
            value = int(text)
        except ValueError:
            return None
        return value if str(value) == text else None


META_PREFIX: Final = "autoops-sync:"


@dataclass(frozen=True, slots=True)
class Column:
    """A table column and what the sync knows of its type."""

    name: str
    data_type: str
    integer: bool
    server_json: str | None
    """The MySQL expression writing this column's JSON value as the codec would, or None."""
    to_json: Callable[[Any], Any] | None = None
    """What the Python path hands the codec instead of the driver's value (None: the value):
    times at the column's declared precision, a JSON column's text embedded as JSON."""


def _fraction(digits: int) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, dt.datetime | dt.timedelta | dt.time):
            return fixed_fraction(value, digits)
        return value

    return convert


def _embedded(value: Any) -> Any:
    if isinstance(value, str | bytes):
        return orjson.Fragment(value)
    return value


def _to_json(data_type: str, precision: int | None, is_json: bool) -> Callable[[Any], Any] | None:
    if is_json:
        return _embedded
    if data_type in ("datetime", "timestamp", "time"):
        return _fraction(precision or 0)
    return None


def _server_json(
    quoted: str,
    data_type: str,
    charset: str | None,
    precision: int | None,
    *,
    is_json: bool = False,
    safe_integers: bool = True,
) -> str | None:
    if is_json:
        # The server parses and embeds the document, as the Python path's orjson.Fragment does.
        return f"JSON_EXTRACT({quoted}, '$')"
    if data_type == "bigint" and safe_integers:
        return _SAFE_BIGINT.format(c=quoted)
    if data_type in _INTEGER_TYPES:
        return quoted
    if data_type in _TEXT_TYPES and charset not in (None, "binary"):
        return quoted
    if data_type == "decimal":
        return f"CAST({quoted} AS CHAR)"
    if data_type in ("datetime", "timestamp"):
        # CAST prints the column's declared number of fraction digits, as the Python path
        # writes them (one width per column), and is much cheaper than DATE_FORMAT.
        return f"REPLACE(CAST({quoted} AS CHAR), ' ', 'T')"
    if data_type == "time":
        return f"CAST({quoted} AS CHAR)"
    if data_type == "date":
        return f"DATE_FORMAT({quoted}, '%%Y-%%m-%%d')"
    if data_type in _BINARY_TYPES or (data_type in ("char", "varchar") and charset == "binary"):
        # MariaDB's TO_BASE64 breaks lines every 76 characters; Python's base64 does not.
        return f"REPLACE(TO_BASE64({quoted}), '\\n', '')"
    # FLOAT/DOUBLE print differently, YEAR differs in form, BIT and spatial types are binary:
    # the codec encodes those.
    return None


def inspect_table(db: DbClient, table: str, *, safe_integers: bool = True) -> list[Column]:
    """The table's columns in order; a :class:`ConfigError` if the table does not exist.
    ``safe_integers``: the server writes BIGINTs beyond 2**53 - 1 as strings, as the codec."""
    quoted_table = quote_name(db, table)
    columns: list[Column] = []
    if db.dialect == "mysql":
        schema, name = table.split(".", 1) if "." in table else ("", table)
        rows = db.query(
            "SELECT c.COLUMN_NAME AS name, c.DATA_TYPE AS data_type, "
            "c.CHARACTER_SET_NAME AS charset, c.DATETIME_PRECISION AS precision_, "
            "EXISTS(SELECT 1 FROM information_schema.CHECK_CONSTRAINTS k "
            "  WHERE k.CONSTRAINT_SCHEMA = c.TABLE_SCHEMA AND k.TABLE_NAME = c.TABLE_NAME "
            "  AND k.CHECK_CLAUSE LIKE CONCAT('json_valid(`', c.COLUMN_NAME, '`)')) AS is_json "
            "FROM information_schema.COLUMNS c "
            "WHERE c.TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND c.TABLE_NAME = %s "
            "ORDER BY c.ORDINAL_POSITION",
            (schema or None, name),
        )
        for row in rows:
            data_type = str(row["data_type"]).lower()
            quoted = quote_name(db, str(row["name"]))
            is_json = bool(row["is_json"]) or data_type == "json"
            precision = row["precision_"]
            server = _server_json(
                quoted,
                data_type,
                row["charset"],
                precision,
                is_json=is_json,
                safe_integers=safe_integers,
            )
            columns.append(
                Column(
                    str(row["name"]),
                    data_type,
                    data_type in _INTEGER_TYPES,
                    server,
                    _to_json(data_type, precision, is_json),
                )
            )
    else:
        for row in db.query(f"PRAGMA table_info({quoted_table})"):
            data_type = str(row["type"]).lower()
            columns.append(Column(str(row["name"]), data_type, "int" in data_type, None))
    if not columns:
        raise ConfigError(
            f"table {table!r} does not exist in {db.url.redacted()} (or has no columns you may "
            "read); check the table name and the database in the URL"
        )
    return columns


@dataclass(frozen=True, slots=True)
class TablePlan:
    """The resolved columns of a sync and the SQL of its pages."""

    table: str
    cached: tuple[Column, ...]
    primary_key: Column
    updated: Column | None
    deleted: Column | None
    server_side: bool
    selected: tuple[str, ...]
    """Result column names of the Python-encoding query, in order."""
    mariadb: bool = False

    @classmethod
    def build(
        cls,
        db: DbClient,
        table: str,
        template: KeyTemplate,
        *,
        columns: Sequence[str] | None,
        exclude: Sequence[str],
        primary_key: str,
        updated_column: str | None,
        deleted_column: str | None,
        server_side: bool,
        codec: Codec | None = None,
    ) -> TablePlan:
        """Resolve the names against the table; unknown names fail before anything is written.
        ``codec`` is the cache's (its ``safe_integers`` decides how the server writes BIGINTs)."""
        found = inspect_table(db, table, safe_integers=sync_safe_integers(codec))
        by_name = {column.name: column for column in found}

        def need(name: str, role: str) -> Column:
            column = by_name.get(name)
            if column is None:
                raise ConfigError(
                    f"{role} {name!r} is not a column of {table!r}; its columns are "
                    f"{', '.join(by_name)}"
                )
            return column

        key_column = need(primary_key, "primary key")
        need(template.field, "the key template's column")
        for name in exclude:
            need(name, "excluded column")
        if columns is None:
            cached = tuple(column for column in found if column.name not in set(exclude))
        else:
            cached = tuple(need(name, "column") for name in columns if name not in set(exclude))
        if not cached:
            raise ConfigError(f"no columns of {table!r} are left to cache after exclude=")
        updated = need(updated_column, "updated_column") if updated_column else None
        deleted = need(deleted_column, "deleted_column") if deleted_column else None
        names = [column.name for column in cached]
        for extra in (key_column, updated, deleted):
            if extra is not None and extra.name not in names:
                names.append(extra.name)
        server_ok = (
            server_side
            and db.dialect == "mysql"
            and all(column.server_json is not None for column in cached)
            and (key_column.integer or key_column.server_json == quote_name(db, primary_key))
        )
        mariadb = False
        if db.dialect == "mysql":
            version = db.query_one("SELECT VERSION() AS v")
            mariadb = version is not None and "mariadb" in str(version["v"]).lower()
        return cls(
            mariadb=mariadb,
            table=table,
            cached=cached,
            primary_key=key_column,
            updated=updated,
            deleted=deleted,
            server_side=server_ok,
            selected=tuple(names),
        )

    def keyset_where(
        self, db: DbClient, lower: tuple[Any, Any] | None, upper: tuple[Any, Any] | None
    ) -> tuple[str, list[Any]]:
        """The rows between two ``(updated, pk)`` positions, in SQL: after ``lower`` (a pk of
        None: every row at that time) and up to ``upper`` included (None: every row at that
        time). Both None: every row."""
        assert self.updated is not None
        updated = quote_name(db, self.updated.name)
        pk = quote_name(db, self.primary_key.name)
        parts, params = [], []
        if lower is not None:
            if lower[1] is None:
                parts.append(f"{updated} >= %s")
                params.append(lower[0])
            else:
                # This OR form, not "u >= a AND (u > a OR pk > b)": the optimizer turns it
                # into an index range starting at (a, b) instead of scanning every row at a.
                parts.append(f"({updated} > %s OR ({updated} = %s AND {pk} > %s))")
                params += [lower[0], lower[0], lower[1]]
        if upper is not None:
            if upper[1] is None:
                parts.append(f"{updated} <= %s")
                params.append(upper[0])
            else:
                parts.append(f"({updated} < %s OR ({updated} = %s AND {pk} <= %s))")
                params += [upper[0], upper[0], upper[1]]
        return " AND ".join(parts) or "1 = 1", params

    def select_sql(
        self,
        db: DbClient,
        *,
        where: str,
        order_by_updated: bool,
        limit: int | None,
        key_parts: tuple[str, str],
    ) -> tuple[str, list[Any]]:
        """A page's SELECT, one result row per table row, and its leading parameters (the
        caller appends those of ``where``).

        ``key_parts`` is the full key prefix (namespace included) and suffix, for keys built by
        the server. Full passes page by primary key (``pk > last``); incremental passes by
        ``(updated, pk)``. Never OFFSET.
        """
        quote = functools.partial(quote_name, db)
        table = quote(self.table)
        pk = quote(self.primary_key.name)
        params: list[Any] = []
        if self.server_side:
            pairs = ", ".join(
                f"{_name_literal(column.name)}, {column.server_json}" for column in self.cached
            )
            fields = [f"{pk} AS pk"]
            if self.updated is not None:
                fields.append(f"{quote(self.updated.name)} AS updated")
            if self.deleted is not None:
                fields.append(f"{self.deleted_condition(db)} AS deleted")
            fields.append(f"CAST(CONCAT(%s, {pk}, %s) AS BINARY) AS k")
            fields.append(f"CAST(JSON_OBJECT({pairs}) AS BINARY) AS v")
            params.extend(key_parts)
            select = ", ".join(fields)
        else:
            select = ", ".join(quote(name) for name in self.selected)
        if order_by_updated:
            assert self.updated is not None
            order = f"{quote(self.updated.name)}, {pk}"
        else:
            order = pk
        tail = "" if limit is None else f" LIMIT {int(limit)}"
        return (
            f"SELECT {select} FROM {table} WHERE {where} ORDER BY {order}{tail}",  # noqa: S608
            params,
        )

    def versions_sql(self, db: DbClient, where: str, limit: int) -> str:
        """The ``(pk, updated)`` pairs of the rows matching ``where``, from the index on the
        updated column alone (it holds the primary key): what a pass remembers of the rows
        that may still see a late commit."""
        assert self.updated is not None
        pk = quote_name(db, self.primary_key.name)
        updated = quote_name(db, self.updated.name)
        return (
            f"SELECT {pk} AS pk, {updated} AS updated FROM {quote_name(db, self.table)} "  # noqa: S608
            f"WHERE {where} LIMIT {int(limit)}"
        )

    def keys_in_range_sql(self, db: DbClient, *, first: bool) -> str:
        """The primary keys in ``(%s, %s]`` (or ``<= %s`` when ``first``), index only."""
        pk = quote_name(db, self.primary_key.name)
        where = f"{pk} <= %s" if first else f"{pk} > %s AND {pk} <= %s"
        return f"SELECT {pk} AS pk FROM {quote_name(db, self.table)} WHERE {where}"  # noqa: S608

    def boundary_sql(self, db: DbClient, *, first: bool, limit: int) -> str:
        """The last primary key of the next ``limit`` rows after ``%s`` (index only, cheap),
        so pages can be cut ahead and read by several connections at once."""
        pk = quote_name(db, self.primary_key.name)
        where = "1 = 1" if first else f"{pk} > %s"
        return (
            f"SELECT COUNT(*) AS n, MAX(pk) AS last_pk FROM (SELECT {pk} AS pk "  # noqa: S608
            f"FROM {quote_name(db, self.table)} WHERE {where} ORDER BY {pk} "
            f"LIMIT {int(limit)}) AS page_keys"
        )

    def packed_page_sql(
        self,
        db: DbClient,
        *,
        first: bool,
        limit: int,
        key_parts: tuple[str, str],
        bounded: bool = False,
        only: str | None = None,
    ) -> tuple[str, list[Any]]:
        """A full-pass page as one row: the RESP bulk strings of every key and value, joined
        by the server (so the driver decodes one value per page, not two per row), with the
        row count, the first and last primary keys, the expected byte size (to detect a
        truncated GROUP_CONCAT). ``only``: a further condition on the rows (a window of
        ``(updated, pk)`` positions), the page then holding ``limit`` rows that meet it.
        Parameters: the key prefix and suffix, then ``pk >`` (unless ``first``), then
        ``pk <=`` (when ``bounded``), then those of ``only``."""
        pk = quote_name(db, self.primary_key.name)
        where = "1 = 1" if first else f"{pk} > %s"
        if bounded:
            where += f" AND {pk} <= %s"
        if only is not None:
            where += f" AND {only}"
        return self._packed_sql(db, where, limit, key_parts)

    def packed_changes_sql(
        self, db: DbClient, *, where: str, key_parts: tuple[str, str]
    ) -> tuple[str, list[Any]]:
        """:meth:`packed_page_sql` for an incremental page: every row matching ``where`` (a
        range of ``(updated, pk)`` positions cut beforehand by :meth:`position_sql`).
        Parameters: the key prefix and suffix, then those of ``where``."""
        return self._packed_sql(db, where, None, key_parts)

    def position_sql(self, db: DbClient, where: str, offset: int | None) -> str:
        """The ``(updated, pk)`` position of the row ``offset`` rows into those matching
        ``where``, in that order (None: the last row), from the index alone."""
        assert self.updated is not None
        updated = quote_name(db, self.updated.name)
        pk = quote_name(db, self.primary_key.name)
        order = f"{updated}, {pk}" if offset is not None else f"{updated} DESC, {pk} DESC"
        return (
            f"SELECT {updated} AS updated, {pk} AS pk FROM {quote_name(db, self.table)} "  # noqa: S608
            f"WHERE {where} ORDER BY {order} LIMIT 1 OFFSET {int(offset or 0)}"
        )

    def _packed_sql(
        self, db: DbClient, where: str, limit: int | None, key_parts: tuple[str, str]
    ) -> tuple[str, list[Any]]:
        quote = functools.partial(quote_name, db)
        pk = quote(self.primary_key.name)
        pairs = self._json_pairs()
        crlf = "CHAR(13, 10 USING ascii)"
        hint = "" if self.mariadb else "/*+ SET_VAR(group_concat_max_len = 1073741824) */ "
        # A derived table without LIMIT is merged into the outer query, which then builds each
        # row's key and JSON object once per reference (four each): the largest LIMIT keeps it
        # materialized, so they are built once (an incremental page read 1.8x slower without).
        tail = f" LIMIT {_NO_LIMIT}" if limit is None else f" ORDER BY {pk} LIMIT {int(limit)}"
        # Each RESP bulk string adds "$", the digits of its length and two CRLFs (5 + digits).
        sql = (
            f"SELECT {hint}COUNT(*) AS n, MIN(pk) AS first_pk, MAX(pk) AS last_pk, "  # noqa: S608
            "SUM(LENGTH(k) + LENGTH(v) + LENGTH(LENGTH(k)) + LENGTH(LENGTH(v)) + 10) AS size, "
            f"CAST(GROUP_CONCAT('$', LENGTH(k), {crlf}, k, {crlf}, '$', LENGTH(v), {crlf}, v, "
            f"{crlf} SEPARATOR '') AS BINARY) AS packed "
            f"FROM (SELECT {pk} AS pk, CONCAT(%s, {pk}, %s) AS k, JSON_OBJECT({pairs}) AS v "
            f"FROM {quote(self.table)} WHERE {where}{tail}) AS page_rows"
        )
        if self.mariadb:
            sql = f"SET STATEMENT group_concat_max_len = 1073741824 FOR {sql}"
        return sql, list(key_parts)

    def row_encoder(self, codec: Codec) -> Callable[[dict[str, Any]], bytes]:
        """The Python path's encoding of a row's cached columns, the values the server path
        writes: times at each column's precision, JSON embedded, safe integers by default."""
        names = [column.name for column in self.cached]
        if not isinstance(codec, JsonCodec):
            return lambda row: codec.encode({name: row[name] for name in names})
        if codec.safe_integers is None:
            codec = JsonCodec(safe_integers=True, fraction_digits=codec.fraction_digits)
        encode = codec.encode
        fixes = [(column.name, column.to_json) for column in self.cached if column.to_json]

        def encode_row(row: dict[str, Any]) -> bytes:
            value = {name: row[name] for name in names}
            for name, fix in fixes:
                value[name] = fix(value[name])
            return encode(value)

        return encode_row

    def _json_pairs(self) -> str:
        """The JSON_OBJECT arguments: each cached column's name and its server-built value."""
        return ", ".join(
            f"{_name_literal(column.name)}, {column.server_json}" for column in self.cached
        )

    def deleted_condition(self, db: DbClient) -> str:
        """SQL true for a soft-deleted row: a non-zero number, or any other non-NULL value."""
        assert self.deleted is not None
        column = quote_name(db, self.deleted.name)
        if self.deleted.integer:
            return f"({column} IS NOT NULL AND {column} <> 0)"
        return f"({column} IS NOT NULL)"

    def is_deleted(self, value: Any) -> bool:
        """The Python side of :meth:`deleted_condition`."""
        if value is None:
            return False
        if isinstance(value, bool | int):
            return value != 0
        return True


def sync_safe_integers(codec: Codec | None) -> bool:
    """Whether a sync writes BIGINTs beyond 2**53 - 1 as strings: yes unless its cache's
    JsonCodec was made with ``safe_integers=False``."""
    return not isinstance(codec, JsonCodec) or codec.safe_integers is not False


def shift_back(value: Any, overlap: float) -> Any:
    """``value`` less the overlap window: seconds for dates and ISO text, units for numbers."""
    if isinstance(value, dt.datetime):
        return value - dt.timedelta(seconds=overlap)
    if isinstance(value, dt.date):
        return value - dt.timedelta(days=max(1, int(overlap // 86_400) + 1))
    if isinstance(value, bool):
        raise ConfigError("updated_column must hold times or numbers, not booleans")
    if isinstance(value, int):
        return value - int(overlap)
    if isinstance(value, float):
        return value - overlap
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(
                f"updated_column holds {value!r}, which is neither a time nor a number; point "
                "it at a TIMESTAMP/DATETIME (or ISO text) or an increasing version number"
            ) from None
        shifted = moment - dt.timedelta(seconds=overlap)
        return shifted.isoformat(sep="T" if "T" in value else " ")
    raise ConfigError(
        f"updated_column holds values of type {type(value).__name__}; use a time or a number"
    )
