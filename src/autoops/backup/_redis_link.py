"""The Redis side of a backup: the client to back up, and a connection of its own to its server.

A link is opened by redis-py from the client's connection settings, so TLS, AUTH and SELECT are
exactly the client's; only the bytes after that handshake (the RDB stream, bulk replies for
hiredis) are read straight from the connection's socket.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import Iterator
from typing import Any, Final

import redis

from .._errors import ConfigError
from ..cache import CacheClient, ClusterCache, RedisCache
from ._errors import BackupError

__all__ = ["CHUNK", "Link", "cache_client", "redis_client", "refused", "server_label"]

CHUNK: Final = 1 << 20


@contextlib.contextmanager
def cache_client(cache: CacheClient | str) -> Iterator[CacheClient]:
    """The client given, or one made from a URL and closed afterwards."""
    client = CacheClient.from_url(cache) if isinstance(cache, str) else cache
    try:
        yield client
    finally:
        if isinstance(cache, str):
            client.close()


@contextlib.contextmanager
def redis_client(cache: CacheClient | str) -> Iterator[RedisCache]:
    """The :class:`RedisCache` given, or one made from a redis:// URL and closed afterwards."""
    with cache_client(cache) as client:
        if isinstance(client, ClusterCache):
            raise ConfigError(
                f"{client.location} is a Redis Cluster: only logical backups "
                "(mode='logical') are taken from it and restored into it"
            )
        if not isinstance(client, RedisCache):
            raise ConfigError(f"expected a Redis cache client or redis:// URL, got {client!r}")
        yield client


def server_label(cache: RedisCache) -> str:
    """``redis://host:port`` (or ``unix:///path``) with no credentials."""
    return cache.connection_settings.server_label


def refused(where: str, command: str, exc: redis.RedisError) -> BackupError:
    message = str(exc)
    if isinstance(exc, redis.AuthenticationError) or message.startswith(
        ("NOAUTH", "WRONGPASS", "NOPERM")
    ):
        advice = "check the user name, password and ACL permissions"
    else:
        advice = "if SYNC is disabled (managed Redis), use the logical dump instead"
    return BackupError(
        f"Redis at {where} refused {command}: {message}; {advice}", tool_message=message
    )


class Link:
    """A connection of its own to the cache's server, opened by redis-py from the client's
    connection settings: TLS, AUTH (or ACL user) and SELECT exactly as the client does them."""

    def __init__(self, cache: RedisCache, timeout: float, *, db: int | None = None) -> None:
        settings = cache.connection_settings
        settings = dataclasses.replace(
            settings,
            db=settings.db if db is None else db,
            socket_timeout=timeout,
            connect_timeout=min(timeout, settings.connect_timeout or timeout),
        )
        self.where = settings.server_label
        try:
            self.connection = settings.open_connection()
        except (redis.ResponseError, redis.AuthenticationError) as exc:
            raise refused(self.where, "the connection", exc) from exc
        except (redis.RedisError, OSError) as exc:
            raise BackupError(f"cannot connect to Redis at {self.where}: {exc}") from exc
        # Once the handshake is done every byte is read here, straight from redis-py's own
        # (TLS-wrapped) socket: the RDB stream is not RESP, and bulk replies go to hiredis.
        sock = self.connection._get_socket()
        assert sock is not None
        self.sock: socket.socket = sock
        self.buffer = bytearray()

    def command(self, *args: str, allow_error: bool = False) -> Any:
        """Send one command and read its reply through redis-py (no raw bytes pending)."""
        try:
            self.connection.send_command(*args)  # type: ignore[no-untyped-call]
            return self.connection.read_response()
        except redis.ResponseError as exc:
            if allow_error:
                return exc
            raise refused(self.where, args[0], exc) from exc
        except redis.AuthenticationError as exc:
            raise refused(self.where, args[0], exc) from exc
        except (redis.RedisError, OSError) as exc:
            raise BackupError(f"the connection to Redis at {self.where} failed: {exc}") from exc

    def send(self, payload: bytes) -> None:
        try:
            self.sock.sendall(payload)
        except OSError as exc:
            raise BackupError(f"the connection to Redis at {self.where} failed: {exc}") from exc

    def receive(self, limit: int = CHUNK) -> bytes:
        """Up to ``limit`` bytes from the socket; the server closing it is an error."""
        try:
            data = self.sock.recv(limit)
        except OSError as exc:
            raise BackupError(f"the connection to Redis at {self.where} failed: {exc}") from exc
        if not data:
            raise BackupError(f"Redis at {self.where} closed the connection mid-transfer")
        return data

    def fill(self, limit: int = CHUNK) -> None:
        self.buffer += self.receive(limit)

    def take(self, size: int) -> bytes:
        """The first ``size`` buffered bytes, removed from the buffer (one copy)."""
        with memoryview(self.buffer) as view:
            data = bytes(view[:size])
        del self.buffer[:size]
        return data

    def line(self) -> bytes:
        """The next line, skipping the bare newlines a server sends as keepalives."""
        while True:
            while self.buffer[:1] == b"\n":
                del self.buffer[:1]
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = self.take(end)
                del self.buffer[:2]
                return line
            self.fill()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.disconnect()  # type: ignore[no-untyped-call]
