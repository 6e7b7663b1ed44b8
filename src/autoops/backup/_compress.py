"""Compression of backup streams: zstd (the default: fast, multi-threaded) or gzip."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import IO, Any, Final

import zstandard

from .._errors import ConfigError
from ._errors import BackupVerifyError

__all__ = ["COMPRESSIONS", "Compressor", "decompressed_chunks", "suffix_for"]

COMPRESSIONS: Final = ("zstd", "gzip")
_READ_SIZE: Final = 1 << 20
_GZIP_WINDOW: Final = 31  # zlib's "gzip container" window bits


def suffix_for(compression: str) -> str:
    """The file suffix of a compression (``.zst`` or ``.gz``)."""
    return {"zstd": ".zst", "gzip": ".gz"}[compression]


class Compressor:
    """A streaming compressor. zstd compresses in its own worker thread, so reading the dump and
    compressing overlap on two cores; gzip at level 1 matches ``gzip -1``."""

    def __init__(self, compression: str, level: int | None = None) -> None:
        if compression not in COMPRESSIONS:
            raise ConfigError(
                f"unknown compression {compression!r}; use one of {', '.join(COMPRESSIONS)}"
            )
        self.compression = compression
        self._object: Any
        if compression == "zstd":
            self.level = 1 if level is None else level
            self._object = zstandard.ZstdCompressor(level=self.level, threads=1).compressobj()
        else:
            self.level = 1 if level is None else level
            self._object = zlib.compressobj(self.level, zlib.DEFLATED, _GZIP_WINDOW)

    def feed(self, data: bytes) -> bytes:
        """Compress ``data``; returns whatever compressed bytes are ready."""
        return bytes(self._object.compress(data))

    def finish(self) -> bytes:
        """The remaining compressed bytes, ending the stream."""
        return bytes(self._object.flush())


def decompressed_chunks(handle: IO[bytes], compression: str, where: str) -> Iterator[bytes]:
    """Decompress a stored stream chunk by chunk; a truncated or damaged stream raises
    :class:`BackupVerifyError` naming ``where``."""
    decompressor: Any
    if compression == "zstd":
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        error: tuple[type[Exception], ...] = (zstandard.ZstdError,)
    elif compression == "gzip":
        decompressor = zlib.decompressobj(_GZIP_WINDOW)
        error = (zlib.error,)
    else:
        raise BackupVerifyError(f"{where}: unknown compression {compression!r} in the manifest")
    try:
        while chunk := handle.read(_READ_SIZE):
            if decompressor.eof:
                raise BackupVerifyError(f"{where}: data follows the end of the compressed stream")
            out = decompressor.decompress(chunk)
            if out:
                yield out
    except error as exc:
        raise BackupVerifyError(f"{where}: the compressed data is damaged ({exc})") from None
    if not decompressor.eof:
        raise BackupVerifyError(f"{where}: the compressed stream is truncated")
