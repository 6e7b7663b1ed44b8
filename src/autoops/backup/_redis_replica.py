"""Where a Redis backup reads from: the client's own server, or a replica of a Sentinel group's
master (``prefer="replica"``), so the master does none of the work."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .._errors import ConfigError
from .._retry import RetryPolicy
from ..cache import CacheClient, RedisCache, SentinelCache
from ._errors import BackupError

__all__ = ["backup_source"]

_PREFERENCES = ("master", "replica")


@contextlib.contextmanager
def backup_source(client: RedisCache, prefer: str) -> Iterator[RedisCache]:
    """``client`` itself (``prefer="master"``), or a client on a healthy replica the sentinels
    name (``"replica"``, Sentinel only), with the same credentials, TLS, database and namespace;
    closed afterwards. No healthy replica is a :class:`BackupError`, not a silent fallback to
    the master."""
    if prefer not in _PREFERENCES:
        raise ConfigError(f"prefer must be 'master' or 'replica', got {prefer!r}")
    if prefer == "master":
        yield client
        return
    if not isinstance(client, SentinelCache):
        raise ConfigError(
            f"prefer='replica' needs a redis+sentinel:// cache (the sentinels name the replicas); "
            f"{client.location} is one server"
        )
    settings = client.connection_settings
    try:
        replicas: list[Any] = client.sentinel.discover_slaves(settings.service)  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise BackupError(
            f"cannot ask the sentinels at {client.location} for replicas: {exc}"
        ) from exc
    if not replicas:
        raise BackupError(
            f"no healthy replica of {settings.service!r} at {client.location}: the backup was not "
            "taken (use prefer='master' to back up from the master)"
        )
    host, port = replicas[0]
    replica = CacheClient.from_connection_settings(
        settings.server(str(host), int(port)),
        client.namespace,
        retry=RetryPolicy.none(),
    )
    assert isinstance(replica, RedisCache)
    try:
        yield replica
    finally:
        replica.close()
