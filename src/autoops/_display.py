"""Formatting shared by reports: numbers for terminals and small HTML tables for Jupyter."""

from __future__ import annotations

import decimal
import html
from collections.abc import Callable, Iterable, Sequence
from typing import Final, TypeVar

__all__ = [
    "Numeric",
    "ResultList",
    "format_bytes",
    "format_count",
    "format_quantity",
    "format_seconds",
    "html_table",
    "text_table",
]

_T = TypeVar("_T")


def format_count(value: float) -> str:
    """``1234567`` -> ``1,234,567``; fractions are rounded."""
    return f"{round(value):,}"


def format_bytes(value: float) -> str:
    """Bytes in binary units: ``1536`` -> ``1.5 KiB``."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def format_seconds(value: float) -> str:
    """A duration for people: ``0.0123`` -> ``12.3 ms``, ``75`` -> ``1 min 15 s``."""
    if 0 < abs(value) < 0.001:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    if value < 60:
        return f"{value:.2f} s"
    minutes, seconds = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def format_quantity(value: float, unit: str) -> str:
    """A perfdata value for people: ``(0.034284, "s")`` -> ``34.3 ms``, ``(7566248, "B")`` ->
    ``7.2 MiB``, ``(12.5, "%")`` -> ``12.5%``; ``c`` (a counter) and no unit give the number."""
    if unit in _SECONDS:
        return format_seconds(value * _SECONDS[unit])
    if unit in _BYTES:
        return format_bytes(value * _BYTES[unit])
    number = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4g}"
    return f"{number}%" if unit == "%" else number


_SECONDS: Final = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
# Nagios perfdata's KB/MB/TB are the binary units most plugins mean.
_BYTES: Final = {"B": 1, "KB": 1024, "MB": 1024**2, "TB": 1024**4}


class Numeric(str):
    """Text that stands for a number (``"34.3 ms"``): tables align it right, as numbers."""

    __slots__ = ()


def _is_number(value: object) -> bool:
    return isinstance(value, Numeric | int | float | decimal.Decimal) and not isinstance(
        value, bool
    )


def _cell(tag: str, value: object) -> str:
    align = "right" if _is_number(value) else "left"
    text = (
        ""
        if value is None
        else (
            f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
        )
    )
    return f"<{tag} style='text-align:{align}'>{html.escape(text)}</{tag}>"


def html_table(
    title: str,
    rows: Iterable[tuple[str, object]],
    *,
    columns: Sequence[str] | None = None,
    body: Iterable[Sequence[object]] = (),
) -> str:
    """A small, escaped HTML table: ``rows`` as name/value pairs, then an optional grid ``body``
    under ``columns`` (for per-host or per-check results). Numbers (and :class:`Numeric` text)
    are aligned right, everything else left: JupyterLab's default would right-align it all."""
    parts = [f"<div><strong>{html.escape(title)}</strong>"]
    pairs = list(rows)
    if pairs:
        parts.append("<table>")
        for name, value in pairs:
            parts.append(f"<tr>{_cell('th', name)}{_cell('td', value)}</tr>")
        parts.append("</table>")
    if columns:
        lines = [list(line) for line in body]
        parts.append("<table><tr>")
        for index, column in enumerate(columns):
            numeric = bool(lines) and all(
                _is_number(line[index]) or line[index] is None for line in lines
            )
            parts.append(_cell("th", Numeric(column) if numeric else column))
        parts.append("</tr>")
        for line in lines:
            parts.append("<tr>" + "".join(_cell("td", cell) for cell in line) + "</tr>")
        parts.append("</table>")
    parts.append("</div>")
    return "".join(parts)


def text_table(columns: Sequence[str], body: Iterable[Sequence[object]]) -> str:
    """The same grid as plain text for a terminal: padded columns, numbers aligned right."""
    rows: list[list[object]] = [list(line) for line in body]
    header: list[object] = [
        Numeric(column) if rows and all(_is_number(row[index]) for row in rows) else column
        for index, column in enumerate(columns)
    ]
    lines = [header, *rows]
    texts = [["" if cell is None else str(cell) for cell in line] for line in lines]
    widths = [max(len(line[index]) for line in texts) for index in range(len(columns))]
    out = []
    for raw, line in zip(lines, texts, strict=True):
        cells = [
            text.rjust(width) if _is_number(cell) else text.ljust(width)
            for cell, text, width in zip(raw, line, widths, strict=True)
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


class ResultList(list[_T]):
    """A list of results (a real ``list``) that shows as one table: an HTML table in Jupyter,
    a text table from ``repr``. ``row`` turns an item into the cells under ``columns``."""

    def __init__(
        self,
        items: Iterable[_T] = (),
        *,
        title: str,
        columns: Sequence[str],
        row: Callable[[_T], Sequence[object]],
    ) -> None:
        super().__init__(items)
        self.title = title
        self.columns = tuple(columns)
        self._row = row

    def __repr__(self) -> str:
        if not self:
            return f"{self.title}: none"
        grid = text_table(self.columns, [self._row(item) for item in self])
        return f"{self.title} ({len(self)}):\n{grid}"

    def _repr_html_(self) -> str:
        return html_table(
            f"{self.title} ({len(self)})",
            [],
            columns=self.columns,
            body=[self._row(item) for item in self],
        )
