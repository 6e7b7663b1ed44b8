"""Overlapping the stages of a stream: the source is read in a thread of its own."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Final, TypeVar, cast

__all__ = ["read_ahead"]

_END_OF_STREAM: Final = object()
_Item = TypeVar("_Item")


class _Failed:
    """The producer's error, wrapped so that a stream of exception objects stays a stream."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(
    chunks: Iterable[_Item],
    depth: int = 8,
    *,
    name: str = "autoops-read-ahead",
    join_timeout: float | None = 5,
) -> Iterator[_Item]:
    """Iterate ``chunks`` (byte chunks, pages, or batches of anything) in a thread of its own,
    ``depth`` items ahead, so reading overlaps with the consumer (as a separate ``gunzip``
    process would); an error in the producer is raised in the consumer. When the consumer
    stops, the producer is waited for ``join_timeout`` seconds (None: until it has stopped,
    for a source whose connection the caller uses next)."""
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
            offer(_Failed(exc))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    producer = threading.Thread(target=produce, name=name, daemon=True)
    producer.start()
    try:
        while True:
            item = pending.get()
            if item is _END_OF_STREAM:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield cast(_Item, item)
    finally:
        stop.set()
        producer.join(timeout=join_timeout)
