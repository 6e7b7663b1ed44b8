"""Stopping a sync from outside: SIGINT/SIGTERM, or a caller's event."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["forward_stop", "stop_on_signals"]

log = logging.getLogger("autoops.sync")


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, name: str, *, enabled: bool) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set ``stop`` (main thread only; elsewhere, nothing)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        log.warning(
            "sync %s: %s received, stopping after the current batch",
            name,
            signal.Signals(signum).name,
        )
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def forward_stop(source: threading.Event | None, stop: threading.Event) -> Iterator[None]:
    """While inside, ``source`` being set sets ``stop`` too."""
    if source is None:
        yield
        return
    done = threading.Event()

    def forward() -> None:
        while not done.is_set():
            if source.wait(0.1):
                stop.set()
                return

    watcher = threading.Thread(target=forward, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
