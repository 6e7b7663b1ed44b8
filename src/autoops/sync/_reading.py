"""Reading a table as pages: by primary key for a full pass, by ``(updated, pk)`` position for
changes, by key for a window's changed rows; packed pages are read by several connections."""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

from .._errors import ConfigError
from ..cache import CacheBackend
from ..db import DbClient
from ._page import Page, encode_rows
from ._plan import KeyTemplate, TablePlan, quote_name
from ._replica import ReadPoint

__all__ = ["KEYS_CHUNK", "PageReader"]

KEYS_CHUNK: Final = 1000
# A window holding at least this share of the table is read by primary-key ranges filtered to
# the window: reading it through the updated column's index looks each row up in primary-key
# order's stead (random reads; 1.9x a full pass when the window is the whole table, measured
# in benchmarks/bench_sync_load.py), while a range read also reads the rows outside the
# window, cheaply (no key or JSON is built for them).
_BY_KEY_SHARE: Final = 5


class PageReader:
    """The page reads of one sync: ``readers`` connections' worth of packed page reads run in
    a pool of threads; every read stops between pages once ``stop`` is set."""

    def __init__(
        self,
        db: DbClient,
        cache: CacheBackend,
        template: KeyTemplate,
        *,
        table: str,
        batch_size: int,
        readers: int,
        stop: threading.Event,
        reads: ReadPoint | None = None,
    ) -> None:
        self.db = db
        self.reads = reads if reads is not None else ReadPoint(db, "primary", table)
        self.cache = cache
        self.template = template
        self.table = table
        self.batch_size = batch_size
        self.readers = readers
        self.stop = stop
        self._pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="autoops-sync-page")

    def close(self) -> None:
        """Wait for the page reads still running and stop their threads."""
        self._pool.shutdown(wait=True)

    def _key_parts(self) -> tuple[str, str]:
        return (self.cache.key(self.template.prefix), self.template.suffix)

    def _encode(self, plan: TablePlan, rows: list[dict[str, Any]]) -> Page:
        return encode_rows(plan, rows, self.cache, self.template, self.table)

    def packed_copy(self, plan: TablePlan) -> bool:
        """Whether the full copy reads pages the server packs whole (see ``packed_page_sql``)."""
        return plan.server_side and plan.deleted is None and plan.primary_key.integer

    def estimated_rows(self) -> int | None:
        """The server's estimate of the table's row count, for progress (MySQL only)."""
        if self.db.dialect != "mysql":
            return None
        schema, name = self.table.split(".", 1) if "." in self.table else ("", self.table)
        row = self.db.query_one(
            "SELECT TABLE_ROWS AS n FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s",
            (schema or None, name),
        )
        return int(row["n"]) if row and row["n"] else None

    # full pass ------------------------------------------------------------------------------

    def copy_pages(self, plan: TablePlan, cursor: Any) -> Generator[Page, None, None]:
        """The full copy's pages after ``cursor``: packed when :meth:`packed_copy`."""
        if self.packed_copy(plan):
            return self._read_packed_pages(plan, cursor)
        return self._read_pages(plan, cursor)

    def _read_pages(self, plan: TablePlan, cursor: Any) -> Generator[Page, None, None]:
        """Full-pass pages, one result row per table row, by primary key after ``cursor``."""
        pk = quote_name(self.db, plan.primary_key.name)
        key_parts = self._key_parts()
        while not self.stop.is_set():
            sql, params = plan.select_sql(
                self.db,
                where="1 = 1" if cursor is None else f"{pk} > %s",
                order_by_updated=False,
                limit=self.batch_size,
                key_parts=key_parts,
            )
            rows = self.db.query(
                sql, params if cursor is None else [*params, cursor], **self.reads.options()
            )
            if not rows:
                return
            page = self._encode(plan, rows)
            yield page
            if len(rows) < self.batch_size:
                return
            cursor = page.last_pk

    def _read_packed_pages(self, plan: TablePlan, cursor: Any) -> Generator[Page, None, None]:
        """Full-pass pages built whole by the server (see ``TablePlan.packed_page_sql``), cut
        ahead by primary key and read by ``readers`` connections at once, yielded in order."""
        for pages in self._packed_ranges(plan, cursor):
            yield from pages

    def _packed_ranges(
        self, plan: TablePlan, cursor: Any, window: tuple[str, list[Any]] | None = None
    ) -> Generator[list[Page], None, None]:
        """The table after ``cursor`` cut ahead into primary-key ranges of ``batch_size``
        rows, each read (filtered to ``window``, see :meth:`_packed_range`) by ``readers``
        connections at once; yields each range's pages in primary-key order."""
        pending: collections.deque[Future[list[Page]]] = collections.deque()
        low, exhausted = cursor, False
        try:
            while not self.stop.is_set() and (pending or not exhausted):
                while not exhausted and len(pending) < self.readers + 1:
                    first = low is None
                    row = self.db.query_one(
                        plan.boundary_sql(self.db, first=first, limit=self.batch_size),
                        None if first else [low],
                        **self.reads.options(),
                    )
                    count = int(row["n"]) if row is not None else 0
                    if count == 0:
                        exhausted = True
                        break
                    assert row is not None
                    high = int(row["last_pk"])
                    pending.append(self._pool.submit(self._packed_range, plan, low, high, window))
                    exhausted = count < self.batch_size
                    low = high
                if pending:
                    yield pending.popleft().result()
        finally:
            _abandon(pending)

    def _packed_range(
        self,
        plan: TablePlan,
        low: Any,
        high: int,
        window: tuple[str, list[Any]] | None = None,
    ) -> list[Page]:
        """The rows with ``low < pk <= high`` (and within ``window``, a condition and its
        parameters) as packed pages: one, unless the server had to cut its GROUP_CONCAT short
        (a page larger than it lets one value be), in which case the range is read again in
        smaller pages."""
        key_parts = self._key_parts()
        limit = self.batch_size
        pages: list[Page] = []
        only, only_params = window if window is not None else (None, [])
        while True:
            first = low is None
            sql, params = plan.packed_page_sql(
                self.db, first=first, limit=limit, key_parts=key_parts, bounded=True, only=only
            )
            row = self.db.query_one(
                sql,
                [*params, *([] if first else [low]), high, *only_params],
                **self.reads.options(),
            )
            if row is None or not row["n"]:
                return pages
            packed = row["packed"] or b""
            if len(packed) != int(row["size"]):
                if limit == 1:
                    raise ConfigError(
                        f"a row of {self.table!r} is too large to be read whole "
                        "(max_allowed_packet); use server_side=False"
                    )
                limit = max(1, limit // 2)
                continue
            count = int(row["n"])
            first_pk, last_pk = int(row["first_pk"]), int(row["last_pk"])
            dense = window is None and count == last_pk - first_pk + 1
            pks: list[Any] = []
            if not dense and window is None:
                # Rare on tables without deletes; the keys are read again, from the index.
                keys_sql = plan.keys_in_range_sql(self.db, first=first)
                bounds = [last_pk] if first else [low, last_pk]
                pks = [key["pk"] for key in self.db.query(keys_sql, bounds, **self.reads.options())]
            pages.append(
                Page(
                    rows=count,
                    last_pk=last_pk,
                    last_updated=None,
                    pks=sorted(pks),
                    dense=(first_pk, last_pk) if dense else None,
                    item_count=count,
                    packed=packed,
                    prepared=self.cache.prepare_rows(packed, count),
                )
            )
            if last_pk >= high or count < limit:
                return pages
            low = last_pk

    # changes --------------------------------------------------------------------------------

    def changes(
        self, plan: TablePlan, lower: tuple[Any, Any], upper: tuple[Any, Any] | None
    ) -> Generator[Page, None, None]:
        """The rows after ``lower`` (up to ``upper``) in ``(updated, pk)`` order, paged by that
        pair: as packed pages built by the server when the full copy can use them."""
        if self.packed_copy(plan):
            yield from self._read_packed_changes(plan, lower, upper)
            return
        key_parts = self._key_parts()
        while not self.stop.is_set():
            where, where_params = plan.keyset_where(self.db, lower, upper)
            sql, params = plan.select_sql(
                self.db,
                where=where,
                order_by_updated=True,
                limit=self.batch_size,
                key_parts=key_parts,
            )
            rows = self.db.query(sql, [*params, *where_params], **self.reads.options())
            if not rows:
                return
            page = self._encode(plan, rows)
            yield page
            if len(rows) < self.batch_size:
                return
            lower = (page.last_updated, page.last_pk)

    def _read_packed_changes(
        self, plan: TablePlan, lower: tuple[Any, Any], upper: tuple[Any, Any] | None
    ) -> Generator[Page, None, None]:
        """:meth:`changes` as packed pages: each page's last position is cut first from the
        index (``batch_size`` rows on, or the last row), then the range up to it is read whole
        by one of ``readers`` connections, as the full copy does."""
        if upper is None:
            last = self._large_window_end(plan, lower)
            if last is not None:
                yield from self._read_window_by_key(plan, lower, last)
                lower = last
        pending: collections.deque[Future[list[Page]]] = collections.deque()
        low, exhausted = lower, False
        try:
            while not self.stop.is_set() and (pending or not exhausted):
                while not exhausted and len(pending) < self.readers + 1:
                    high = self._position(plan, low, upper, self.batch_size - 1)
                    if high is None:
                        exhausted = True
                        high = self._position(plan, low, upper, None)
                        if high is None:
                            break
                    pending.append(self._pool.submit(self._packed_changes, plan, low, high))
                    low = high
                if pending:
                    yield from pending.popleft().result()
        finally:
            _abandon(pending)

    def _large_window_end(self, plan: TablePlan, lower: tuple[Any, Any]) -> tuple[Any, Any] | None:
        """The last row's position when the rows after ``lower`` are at least a
        ``1/_BY_KEY_SHARE`` share of the table (the server's estimate of its size), else None."""
        estimated = self.estimated_rows()
        if estimated is None or estimated < self.batch_size:
            return None
        offset = max(self.batch_size, estimated // _BY_KEY_SHARE) - 1
        if self._position(plan, lower, None, offset) is None:
            return None
        return self._position(plan, lower, None, None)

    def _read_window_by_key(
        self, plan: TablePlan, lower: tuple[Any, Any], upper: tuple[Any, Any]
    ) -> Generator[Page, None, None]:
        """The rows in ``(lower, upper]`` as the full copy reads the table (primary-key
        ranges cut ahead, read by ``readers`` connections), each range filtered to the
        window. The rows come in primary-key order, so no page but the last moves the
        checkpoint: each carries ``lower`` as its position and a last page (maybe empty)
        carries ``upper``. A row changed during the read leaves the window (its new stamp is
        after ``upper``) and is read after it."""
        window = plan.keyset_where(self.db, lower, upper)
        # closing: a pass stopped mid-window abandons the ranges still being read at once.
        with contextlib.closing(self._packed_ranges(plan, None, window)) as ranges:
            for pages in ranges:
                for page in pages:
                    page.last_updated, page.last_pk = lower
                    yield page
        if not self.stop.is_set():
            yield Page(rows=0, last_pk=upper[1], last_updated=upper[0])

    def _position(
        self,
        plan: TablePlan,
        lower: tuple[Any, Any],
        upper: tuple[Any, Any] | None,
        offset: int | None,
    ) -> tuple[Any, Any] | None:
        where, params = plan.keyset_where(self.db, lower, upper)
        row = self.db.query_one(
            plan.position_sql(self.db, where, offset), params, **self.reads.options()
        )
        return None if row is None else (row["updated"], row["pk"])

    def _packed_changes(
        self, plan: TablePlan, low: tuple[Any, Any], high: tuple[Any, Any]
    ) -> list[Page]:
        """The rows in ``(low, high]`` as one packed page, or, when the server had to cut its
        GROUP_CONCAT short, as the two halves of the range."""
        where, where_params = plan.keyset_where(self.db, low, high)
        sql, params = plan.packed_changes_sql(self.db, where=where, key_parts=self._key_parts())
        row = self.db.query_one(sql, [*params, *where_params], **self.reads.options())
        if row is None or not row["n"]:
            return []
        count = int(row["n"])
        packed = row["packed"] or b""
        if len(packed) != int(row["size"]):
            middle = self._position(plan, low, high, count // 2 - 1) if count > 1 else None
            if middle is None or middle == high:
                raise ConfigError(
                    f"a row of {self.table!r} is too large to be read whole "
                    "(max_allowed_packet); use server_side=False"
                )
            return self._packed_changes(plan, low, middle) + self._packed_changes(
                plan, middle, high
            )
        return [
            Page(
                rows=count,
                last_pk=high[1],
                last_updated=high[0],
                item_count=count,
                packed=packed,
            )
        ]

    def keys(self, plan: TablePlan, keys: list[Any]) -> Generator[Page, None, None]:
        """The rows with these primary keys, a thousand at a time."""
        key_parts = self._key_parts()
        pk = quote_name(self.db, plan.primary_key.name)
        for start in range(0, len(keys), KEYS_CHUNK):
            chunk = keys[start : start + KEYS_CHUNK]
            sql, params = plan.select_sql(
                self.db,
                where=f"{pk} IN ({', '.join(['%s'] * len(chunk))})",
                order_by_updated=False,
                limit=None,
                key_parts=key_parts,
            )
            rows = self.db.query(sql, [*params, *chunk], **self.reads.options())
            if rows:
                yield self._encode(plan, rows)


def _abandon(pending: Iterable[Future[Any]]) -> None:
    """Cancel page reads not yet started and wait out the running ones, whatever they raise:
    a pass that stops early leaves no reader working behind it."""
    futures = list(pending)
    for future in futures:
        future.cancel()
    for future in futures:
        with contextlib.suppress(BaseException):
            future.result()
