"""Formatting shared by reports: numbers for terminals and small HTML tables for Jupyter."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

__all__ = ["format_bytes", "format_count", "format_seconds", "html_table"]


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
    if value < 1:
        return f"{value * 1000:.1f} ms"
    if value < 60:
        return f"{value:.2f} s"
    minutes, seconds = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def html_table(
    title: str,
    rows: Iterable[tuple[str, object]],
    *,
    columns: Sequence[str] | None = None,
    body: Iterable[Sequence[object]] = (),
) -> str:
    """A small, escaped HTML table: ``rows`` as name/value pairs, then an optional grid ``body``
    under ``columns`` (for per-host or per-check results)."""
    parts = [f"<div><strong>{html.escape(title)}</strong><table>"]
    for name, value in rows:
        parts.append(
            f"<tr><th style='text-align:left'>{html.escape(name)}</th>"
            f"<td style='text-align:left'>{html.escape(str(value))}</td></tr>"
        )
    parts.append("</table>")
    if columns:
        parts.append("<table><tr>")
        parts.extend(f"<th>{html.escape(column)}</th>" for column in columns)
        parts.append("</tr>")
        for line in body:
            cells = "".join(f"<td>{html.escape(str(cell))}</td>" for cell in line)
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
    parts.append("</div>")
    return "".join(parts)
