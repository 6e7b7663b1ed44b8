"""Pages: one batch of rows, encoded the way the cache writes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigError
from .._resp import pack_arguments
from ..cache import CacheBackend
from ._plan import KeyTemplate, TablePlan

__all__ = ["Page", "encode_rows"]


@dataclass(slots=True)
class Page:
    """One batch of rows, encoded and ready to write."""

    rows: int
    last_pk: Any
    last_updated: Any
    pks: list[Any] = field(default_factory=list)
    dense: tuple[int, int] | None = None
    item_count: int = 0
    packed: bytes = b""
    deletes: list[str] = field(default_factory=list)
    #: The cache's own work on ``packed`` done ahead (``CacheBackend.prepare_rows``).
    prepared: object = None


def encode_rows(
    plan: TablePlan,
    rows: list[dict[str, Any]],
    cache: CacheBackend,
    template: KeyTemplate,
    table: str,
) -> Page:
    """The page of ``rows`` as read by ``plan`` (keys and values built by the server when it
    is server-side), packed as RESP arguments (the form every cache backend takes)."""
    if plan.server_side:
        return _encode_server(plan, rows, cache)
    return _encode(plan, rows, cache, template, table)


def _encode(
    plan: TablePlan,
    rows: list[dict[str, Any]],
    cache: CacheBackend,
    template: KeyTemplate,
    table: str,
) -> Page:
    pk_name = plan.primary_key.name
    prefix = cache.key(template.prefix)
    suffix = template.suffix
    encode = plan.row_encoder(cache.codec)
    deleted_name = plan.deleted.name if plan.deleted is not None else None
    items: list[tuple[str, bytes]] = []
    deletes: list[str] = []
    pks: list[Any] = []
    for row in rows:
        pk = row[pk_name]
        if not isinstance(pk, int | str) or isinstance(pk, bool):
            raise ConfigError(
                f"primary key {pk_name!r} of {table!r} holds {type(pk).__name__} values; "
                "CacheSync keys rows by integer or text primary keys"
            )
        key = f"{prefix}{pk}{suffix}"
        if deleted_name is not None and plan.is_deleted(row[deleted_name]):
            deletes.append(key)
        else:
            items.append((key, encode(row)))
            pks.append(pk)
    last = rows[-1]
    page = Page(
        rows=len(rows),
        last_pk=last[pk_name],
        last_updated=last[plan.updated.name] if plan.updated is not None else None,
        pks=pks,
        item_count=len(items),
        deletes=deletes,
    )
    page.packed = pack_arguments([part for key, value in items for part in (key.encode(), value)])
    page.prepared = cache.prepare_rows(page.packed, page.item_count)
    return page


def _encode_server(plan: TablePlan, rows: list[dict[str, Any]], cache: CacheBackend) -> Page:
    live = rows
    deletes: list[str] = []
    if plan.deleted is not None:
        live = [row for row in rows if not row["deleted"]]
        deletes = [row["k"].decode() for row in rows if row["deleted"]]
    last = rows[-1]
    page = Page(
        rows=len(rows),
        last_pk=last["pk"],
        last_updated=last.get("updated"),
        pks=[row["pk"] for row in live],
        item_count=len(live),
        deletes=deletes,
    )
    page.packed = pack_arguments([part for row in live for part in (row["k"], row["v"])])
    page.prepared = cache.prepare_rows(page.packed, page.item_count)
    return page
