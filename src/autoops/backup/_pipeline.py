"""Overlapping the stages of a stream: the source is read in a thread of its own."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Final, TypeVar, cast

__all__ = ["read_ahead"]

_END_OF_STREAM: Final = object()
_Item = TypeVar("_Item")


def read_ahead(chunks: Iterable[_Item], depth: int = 8) -> Iterator[_Item]:
    """Iterate ``chunks`` (byte chunks, or batches of anything) in a thread of its own,
    ``depth`` items ahead, so reading and decompressing overlap with the consumer (as a separate
    ``gunzip`` process would); an error in the producer is raised in the consumer."""
    pending: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not offer(chunk):
                    return
            offer(_END_OF_STREAM)
        except BaseException as exc:
            offer(exc)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    producer = threading.Thread(target=produce, name="autoops-restore-read", daemon=True)
    producer.start()
    try:
        while True:
            item = pending.get()
            if item is _END_OF_STREAM:
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(_Item, item)
    finally:
        stop.set()
        # Bounded: a producer stuck in a read of a stalled source must not hang the caller.
        producer.join(timeout=5)
