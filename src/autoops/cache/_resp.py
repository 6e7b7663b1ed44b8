"""Encoding Redis commands straight to RESP, for bulk writes without per-command objects."""

from __future__ import annotations

__all__ = ["pack_arguments", "pack_command"]


def pack_command(*args: bytes) -> bytes:
    """One command in RESP: ``*<n>\\r\\n`` then ``$<len>\\r\\n<arg>\\r\\n`` for each argument."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(b"\r\n")
    return b"".join(parts)


def pack_arguments(args: list[bytes]) -> bytes:
    """The RESP bulk strings of ``args`` without the array header, for splicing many arguments
    into one command whose header is written separately."""
    return b"".join([b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args])
