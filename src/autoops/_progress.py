"""A one-line progress display for long work: shown on a terminal, silent under cron."""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import TextIO

from ._display import format_bytes, format_count

__all__ = ["Progress"]


class Progress:
    """Count work and redraw one status line on stderr at most ten times a second.

    It draws only when the stream is a terminal (so cron mail stays empty) unless ``enabled`` says
    otherwise; ``AUTOOPS_PROGRESS=0`` turns it off everywhere.
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
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = os.environ.get("AUTOOPS_PROGRESS", "1") != "0" and _is_tty(self._stream)
        self.enabled = enabled
        self._min_interval = min_interval
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def advance(self, amount: int = 1) -> None:
        """Add ``amount`` to the count and redraw if enough time has passed."""
        self.done += amount
        if self.enabled:
            now = time.monotonic()
            if now - self._last_draw >= self._min_interval:
                self._last_draw = now
                self._draw(now)

    def set_total(self, total: int | None) -> None:
        """Set or change the expected total once it is known."""
        self.total = total

    @property
    def rate(self) -> float:
        """Units per second so far."""
        elapsed = time.monotonic() - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def _amount(self, value: float) -> str:
        return format_bytes(value) if self.unit == "bytes" else f"{format_count(value)} {self.unit}"

    def _draw(self, now: float) -> None:
        elapsed = now - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.label}: {self._amount(self.done)}"
        if self.total:
            percent = min(100.0, 100.0 * self.done / self.total)
            text += f" of {self._amount(self.total)} ({percent:.0f}%)"
        text += f", {self._amount(rate)}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", about {(self.total - self.done) / rate:.0f} s left"
        self._stream.write("\r\x1b[2K" + text)
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Draw the final state and end the line (only if anything was drawn)."""
        if self.enabled and (self._drawn or self.done):
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
