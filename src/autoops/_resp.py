"""Encoding Redis commands straight to RESP, for bulk writes without per-command objects: the one
place protocol bytes are written by hand (the cache's packed writes, sync's pages, backup's
DUMP and RESTORE batches)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["pack_arguments", "pack_command", "pack_header", "pack_per_key", "unpack_arguments"]


def pack_header(count: int) -> bytes:
    """The array header of a command of ``count`` arguments: ``*<count>\\r\\n``."""
    return b"*%d\r\n" % count


def pack_command(*args: bytes) -> bytes:
    """One command in RESP: ``*<n>\\r\\n`` then ``$<len>\\r\\n<arg>\\r\\n`` for each argument."""
    parts = [pack_header(len(args))]
    for arg in args:
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(b"\r\n")
    return b"".join(parts)


def pack_arguments(args: list[bytes]) -> bytes:
    """The RESP bulk strings of ``args`` without the array header, for splicing many arguments
    into one command whose header is written separately."""
    return b"".join([b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args])


def pack_per_key(commands: Sequence[bytes], keys: Iterable[bytes]) -> bytes:
    """``<command> <key>`` for each key and, in turn, each of the one-word ``commands``
    (``DUMP k1``, ``PTTL k1``, ``DUMP k2``...), for one pipelined write."""
    heads = [pack_header(2) + pack_arguments([command]) for command in commands]
    # Each key's bulk string is made once and joined between the command heads.
    arguments = (b"$%d\r\n%b\r\n" % (len(key), key) for key in keys)
    return b"".join([argument.join(heads) + argument for argument in arguments])


def unpack_arguments(data: bytes, count: int) -> list[bytes]:
    """The first ``count`` bulk strings of ``data`` (as :func:`pack_arguments` writes them), for a
    backend that stores packed rows without sending them on a wire. Malformed data raises
    ValueError."""
    values: list[bytes] = []
    position = 0
    for _ in range(count):
        if data[position : position + 1] != b"$":
            raise ValueError(f"packed arguments: expected '$' at byte {position}")
        end = data.index(b"\r\n", position)
        length = int(data[position + 1 : end])
        start = end + 2
        values.append(data[start : start + length])
        position = start + length + 2
        if data[position - 2 : position] != b"\r\n":
            raise ValueError(f"packed arguments: argument at byte {start} is cut short")
    return values
