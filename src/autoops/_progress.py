"""A one-line progress display for long work: shown on a terminal, silent under cron."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import unicodedata
from types import TracebackType
from typing import Any, TextIO

from ._display import format_bytes, format_count, format_seconds

__all__ = ["Progress"]

_CLEAR = "\r\x1b[2K"


class Progress:
    """Count work and redraw one status line on stderr at most ten times a second.

    It draws only when the stream is a terminal (so cron mail stays empty) unless ``enabled`` says
    otherwise; ``AUTOOPS_PROGRESS=0`` turns it off everywhere. The line is cut to the terminal's
    width at every redraw (a line that wraps cannot be redrawn in place). Log records written to
    the same stream clear it first; it is drawn again below them at the next update. On close
    it becomes what was done (count, time, rate: ``total`` is only an estimate), unless a log
    record (a report) came after it, which then has the last word.
    """

    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        unit: str = "rows",
        stream: TextIO | None = None,
        enabled: bool | None = None,
        min_interval: float = 0.1,
        start: int = 0,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        # ``start``: work a resumed run finds already done; it counts toward ``total`` but not
        # toward this run's rate or its final line.
        self.start = start
        self.done = start
        self._stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = os.environ.get("AUTOOPS_PROGRESS", "1") != "0" and _is_tty(self._stream)
        self.enabled = enabled
        self._min_interval = min_interval
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._shown = False  # the status line is on the screen, the cursor at its end
        self._drawn = False  # drawn at least once
        self._closed = False
        self._lock = threading.RLock()
        self._taken: list[tuple[logging.StreamHandler[Any], Any]] = []
        if enabled:
            self._take_log_handlers()

    def advance(self, amount: int = 1) -> None:
        """Add ``amount`` to the count and redraw if enough time has passed."""
        self.done += amount
        if self.enabled:
            now = time.monotonic()
            if now - self._last_draw >= self._min_interval:
                self._last_draw = now
                with self._lock:
                    if not self._closed:
                        self._draw(self._running_text(now))

    def set_total(self, total: int | None) -> None:
        """Set or change the expected total once it is known."""
        self.total = total

    @property
    def rate(self) -> float:
        """Units per second so far (this run's)."""
        elapsed = time.monotonic() - self._started
        return (self.done - self.start) / elapsed if elapsed > 0 else 0.0

    def _amount(self, value: float) -> str:
        return format_bytes(value) if self.unit == "bytes" else f"{format_count(value)} {self.unit}"

    def _running_text(self, now: float) -> list[str]:
        """The line's parts, most important first: later ones are dropped when narrow."""
        elapsed = now - self._started
        rate = (self.done - self.start) / elapsed if elapsed > 0 else 0.0
        head = f"{self.label}: {self._amount(self.done)}"
        # Past the estimate (a table's TABLE_ROWS is one) a total and percentage would mislead.
        if self.total and self.done <= self.total:
            percent = 100.0 * self.done / self.total
            head += f" of {self._amount(self.total)} ({percent:.0f}%)"
        parts = [head, f"{self._amount(rate)}/s"]
        if self.total and rate > 0 and self.done < self.total:
            left = (self.total - self.done) / rate
            parts.append(
                f"about {round(left)} s left" if left < 60 else f"about {format_seconds(left)} left"
            )
        return parts

    def _final_text(self) -> list[str]:
        elapsed = time.monotonic() - self._started
        this_run = self.done - self.start
        rate = this_run / elapsed if elapsed > 0 else 0.0
        return [
            f"{self.label}: {self._amount(this_run)} in {format_seconds(elapsed)}",
            f"{self._amount(rate)}/s",
        ]

    def _draw(self, parts: list[str]) -> None:
        width = _columns(self._stream) - 1  # the last column would wrap on some terminals
        text = parts[0]
        for part in parts[1:]:
            if _cells(f"{text}, {part}") > width:
                break
            text += f", {part}"
        self._stream.write(_CLEAR + _fit(text, width))
        self._stream.flush()
        self._shown = True
        self._drawn = True

    def _clear(self) -> None:
        """Take the status line off the screen (before other output uses the line)."""
        if self._shown:
            self._stream.write(_CLEAR)
            self._shown = False

    def _take_log_handlers(self) -> None:
        """Route log handlers writing to this terminal through :class:`_LogStream`."""
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is self._stream:
                self._taken.append((handler, handler.stream))
                handler.setStream(_LogStream(self, self._stream))

    def close(self) -> None:
        """Draw the final state (what was done) and end the line; give log handlers back."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for handler, stream in self._taken:
                handler.setStream(stream)
            if self.enabled and (self._shown or (self.done and not self._drawn)):
                self._draw(self._final_text())
                self._stream.write("\n")
                self._stream.flush()
                self._shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _LogStream:
    """What a log handler writes to while a progress line is open: clear the line, write the
    record, and let the next update draw the line again below it (a record written last, such
    as a report, is not followed by a stale status line)."""

    def __init__(self, progress: Progress, stream: TextIO) -> None:
        self._progress = progress
        self._stream = stream

    def write(self, text: str) -> int:
        progress = self._progress
        with progress._lock:
            progress._clear()
            progress._last_draw = 0.0
            return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _cells(text: str) -> int:
    """Terminal columns ``text`` takes: East Asian wide characters take two."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _fit(text: str, width: int) -> str:
    if _cells(text) <= width:
        return text
    while text and _cells(text) > width:
        text = text[:-1]
    return text


def _columns(stream: TextIO) -> int:
    """The terminal's width now (it may have been resized since the last redraw)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
