"""The Redis Cluster backend: redis-py's ``RedisCluster`` for routing, per-node pipelines for bulk.

Single-key operations go through ``RedisCluster`` itself (it follows MOVED and ASK). Multi-key
operations group keys by hash slot (a multi-key command must stay in one slot), then send each
node's commands in one write on one of its connections, all nodes written before any is read,
so a batch costs one round trip to the slowest node. A slot whose command comes back MOVED
(failover, resharding) is resent after the slot table is rebuilt; ASK and TRYAGAIN (a slot
migrating) fall back to single-key commands, which redis-py sends with ASKING. Only the slots
that failed are resent, and every bulk command is idempotent, so a resend cannot apply twice.
"""

from __future__ import annotations

import functools
import itertools
import threading
from binascii import crc_hqx
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.retry import Retry

from .._config import REDIS_OPTIONS, CacheUrl, Secret, convert_options
from .._connection import CacheConnectionSettings, TlsSettings
from .._errors import ConfigError, ConnectError
from .._resp import pack_command, unpack_arguments
from .._retry import Failure, RetryPolicy
from ._backend import FencedBatch
from ._client import TTL, CacheClient, escape_glob
from ._codec import Codec
from ._redis import _COMPARE_AND_SET, _DELETE_IF_EQUAL, _EXPIRE_IF_EQUAL, classify_redis_error
from ._sentinel import ReplicaCounts, _tls, ack_timeout_ms

__all__ = ["ClusterCache"]

CLUSTER_OPTIONS: Final = {"replica_ack_timeout": float}
_MSET_CHUNK: Final = 1000
# Replies that mean "this slot is elsewhere now": rebuild the slot table and resend.
_MOVED: Final = (redis.exceptions.MovedError, redis.exceptions.ClusterDownError)
# Replies that mean "this slot is migrating": single-key commands follow ASK.
_MIGRATING: Final = (redis.exceptions.AskError, redis.exceptions.TryAgainError)


class _NotReplicated(redis.exceptions.RedisError):
    """A node's master had a replica, and none acknowledged the batch in time."""


@dataclass(eq=False)
class _Work:
    """One slot's share of a bulk operation: its packed commands and, for the ASK fallback,
    the same work as single-key calls."""

    slot: int
    build: list[bytes] | Callable[[], list[bytes]]
    single: Callable[[RedisCluster], Any]
    replies: list[Any] = field(default_factory=list)
    #: For a write: the keys set (with values) and unlinked, so a node's writes can go as one
    #: script; ``ttls`` holds each set key's expiry in ms (None: no expiry).
    sets: list[tuple[bytes, bytes]] | None = None
    ttls: list[int] | None = None
    unlinks: list[bytes] | None = None
    #: The node refused the one-script form (a slot moving): send this slot's commands.
    unmerged: bool = False

    @functools.cached_property
    def commands(self) -> list[bytes]:
        """The slot's packed commands, built on first use (a merged write never needs them)."""
        return self.build if isinstance(self.build, list) else self.build()


class ClusterCache(CacheClient):
    """A :class:`CacheClient` on a Redis Cluster (``redis+cluster://n1:7000,n2:7001``: seed
    nodes; ``rediss+cluster://`` for TLS), through redis-py's ``RedisCluster``.

    Same API and behaviour as :class:`RedisCache`; ``get_many``, ``set_many`` and
    ``delete_prefix`` group keys by slot and pipeline them per node (SCAN runs on every master).
    MOVED, ASK, TRYAGAIN, CLUSTERDOWN and a lost node during a failover are retried by the
    client's :class:`RetryPolicy` after the slot table is rebuilt. Writes that carry a
    checkpoint (``CacheSync``) wait for one replica of each node (``WAIT 1``, up to
    ``replica_ack_timeout`` seconds, 2 by default) where the node's master has one. Cluster has
    database 0 only.
    """

    scheme = "redis+cluster"

    def __init__(
        self,
        *,
        nodes: Sequence[tuple[str, int]],
        username: str | None = None,
        password: str | Secret | None = None,
        tls: bool | TlsSettings = False,
        socket_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        max_connections: int = 50,
        client_name: str | None = None,
        ssl_ca_certs: str | None = None,
        ssl_cert_reqs: str = "required",
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_check_hostname: bool = True,
        replica_ack_timeout: float = 2.0,
        namespace: str | None = None,
        codec: Codec | None = None,
        retry: RetryPolicy | None = None,
        ttl_jitter: float = 0.0,
        chunk_size: int = 10_000,
    ) -> None:
        super().__init__(
            namespace=namespace,
            codec=codec,
            retry=retry,
            ttl_jitter=ttl_jitter,
            chunk_size=chunk_size,
        )
        if not nodes:
            raise ConfigError("ClusterCache needs at least one seed node host:port")
        if not replica_ack_timeout > 0:
            raise ConfigError(
                f"replica_ack_timeout must be a number of seconds above 0, got "
                f"{replica_ack_timeout!r}"
            )
        secret = password if isinstance(password, Secret) or password is None else Secret(password)
        self._password = secret
        tls_settings = _tls(tls, ssl_ca_certs, ssl_cert_reqs, ssl_certfile, ssl_keyfile,
                            ssl_check_hostname)  # fmt: skip
        self._settings = CacheConnectionSettings(
            scheme="rediss+cluster" if tls_settings else "redis+cluster",
            host=nodes[0][0],
            port=nodes[0][1],
            username=username or None,
            password=secret,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            client_name=client_name,
            tls=tls_settings,
            hosts=tuple((str(host), int(port)) for host, port in nodes),
        )
        self._location = self._settings.location
        self._ack_timeout_ms = ack_timeout_ms(replica_ack_timeout, socket_timeout)
        self._replicas = ReplicaCounts()
        self._max_connections = max_connections
        self._client: RedisCluster | None = None
        self._client_lock = threading.Lock()
        self._stale = False

    @classmethod
    def from_parsed(
        cls,
        url: CacheUrl,
        *,
        namespace: str | None = None,
        codec: Codec | None = None,
        retry: RetryPolicy | None = None,
        **options: Any,
    ) -> ClusterCache:
        """Build from a parsed ``redis+cluster://`` URL; ``options`` override its query."""
        common = {
            name: options.pop(name) for name in ("ttl_jitter", "chunk_size") if name in options
        }
        allowed = {**REDIS_OPTIONS, **CLUSTER_OPTIONS}
        merged = {**url.options, **convert_options(options, allowed, url.redacted())}
        if int(merged.pop("db", 0)) != 0:
            raise ConfigError(f"{url.redacted()}: Redis Cluster has only database 0")
        return cls(
            nodes=url.hosts,
            username=url.user or None,
            password=url.password,
            tls=url.scheme.startswith("rediss"),
            namespace=namespace,
            codec=codec,
            retry=retry,
            **common,
            **merged,
        )

    @classmethod
    def _from_connection_settings(
        cls,
        settings: CacheConnectionSettings,
        *,
        namespace: str | None,
        codec: Codec | None,
        retry: RetryPolicy | None,
        **options: Any,
    ) -> ClusterCache:
        return cls(
            nodes=settings.hosts,
            username=settings.username,
            password=settings.password,
            tls=settings.tls or False,
            socket_timeout=settings.socket_timeout,
            connect_timeout=settings.connect_timeout,
            client_name=settings.client_name,
            namespace=namespace,
            codec=codec,
            retry=retry,
            **options,
        )

    @property
    def connection_settings(self) -> CacheConnectionSettings:
        return self._settings

    @property
    def location(self) -> str:
        return self._location

    @property
    def redis(self) -> RedisCluster:
        """The underlying redis-py ``RedisCluster`` (made on first use), for commands this
        class does not wrap. It does not retry beyond following MOVED and ASK."""
        return self._call("redis cluster connect", self._cluster)  # type: ignore[no-any-return]

    def _cluster(self) -> RedisCluster:
        with self._client_lock:
            if self._client is None:
                kwargs = self._settings.redis_arguments()
                for name in ("host", "port", "db"):
                    kwargs.pop(name, None)
                self._client = RedisCluster(
                    startup_nodes=[
                        ClusterNode(host, port)  # type: ignore[no-untyped-call]
                        for host, port in self._settings.hosts
                    ],
                    retry=Retry(NoBackoff(), 0),
                    max_connections=self._max_connections,
                    require_full_coverage=True,
                    **kwargs,
                )
                self._stale = False
            elif self._stale:
                self._stale = False
                self._client.nodes_manager.initialize()
            return self._client

    # retry ----------------------------------------------------------------------------------

    def _classify(self, exc: BaseException, operation: str) -> Failure:
        if isinstance(exc, _NotReplicated):
            return Failure(
                True,
                ConnectError,
                f"{operation}: no replica in the cluster at {self._location} acknowledged the "
                f"batch within {self._ack_timeout_ms} ms ({exc}); check the replicas' links",
            )
        return classify_redis_error(exc, operation, self._location, self._password)

    def _call(self, operation: str, fn: Callable[[], Any]) -> Any:
        def attempt() -> Any:
            try:
                return fn()
            except (redis.RedisError, OSError):
                # The next attempt starts from a rebuilt slot table (a failover moved slots).
                self._stale = True
                raise

        return self.retry.call(
            attempt,
            classify=lambda exc: self._classify(exc, operation),
            operation=operation,
            where=self._location,
        )

    def _keyed(self, operation: str, fn: Callable[[RedisCluster], Any]) -> Any:
        return self._call(operation, lambda: fn(self._cluster()))

    # bulk engine ----------------------------------------------------------------------------

    def _run(
        self, operation: str, works: list[_Work], *, durable: bool = False, merge: bool = False
    ) -> None:
        """Send every slot's commands, pipelined per node; resend only failed slots (after
        rebuilding the slot table) under the retry policy. ``durable`` ends each node's
        pipeline with ``WAIT 1`` and fails the node's slots when its master has a replica and
        none acknowledged. ``merge`` sends each node's writes as one script (one reply per node
        instead of one per slot); a node that refuses it (a slot moved or migrating) gets its
        slots' own commands on the next try."""
        pending = list(works)

        def attempt() -> None:
            cluster = self._cluster()
            by_node: dict[str, tuple[ClusterNode, list[_Work]]] = {}
            for work in pending:
                node = cluster.nodes_manager.get_node_from_slot(work.slot)
                by_node.setdefault(node.name, (node, []))[1].append(work)
            failed: list[_Work] = []
            migrating: list[_Work] = []
            first_error: BaseException | None = None
            # Every node is written before any is read, so the masters work at the same time.
            started: list[tuple[ClusterNode, list[_Work], list[_Work], Any, Any, bool]] = []
            for node, node_works in by_node.values():
                if merge and all(not work.unmerged for work in node_works):
                    merged = [_Work(-1, [_node_script(node_works)], _unused)]
                else:
                    merged = []
                try:
                    sent = self._send_node(cluster, node, merged or node_works, durable)
                    started.append((node, node_works, merged, *sent))
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    first_error = first_error or exc
                    failed.extend(node_works)
            for node, node_works, merged, pool, connection, wait in started:
                try:
                    self._read_node(node, merged or node_works, pool, connection, wait)
                except (redis.ConnectionError, redis.TimeoutError, OSError, _NotReplicated) as exc:
                    first_error = first_error or exc
                    failed.extend(node_works)
                    continue
                if merged:
                    (reply,) = merged[0].replies
                    if isinstance(reply, redis.ResponseError):
                        for work in node_works:
                            work.unmerged = True
                        failed.extend(node_works)
                        first_error = first_error or redis.exceptions.TryAgainError(
                            f"{node.name} refused the batch as one script ({reply})"
                        )
                    continue
                for work in node_works:
                    errors = [r for r in work.replies if isinstance(r, redis.ResponseError)]
                    if not errors:
                        continue
                    if all(isinstance(error, _MIGRATING) for error in errors):
                        migrating.append(work)
                    elif all(isinstance(error, _MOVED + _MIGRATING) for error in errors):
                        first_error = first_error or errors[0]
                        failed.append(work)
                    else:
                        raise errors[0]
            for work in migrating:
                work.replies = [work.single(cluster)]
            pending[:] = failed
            if first_error is not None:
                self._stale = True
                raise first_error

        self._call(operation, attempt)

    def _send_node(
        self, cluster: RedisCluster, node: ClusterNode, works: list[_Work], durable: bool
    ) -> tuple[Any, Any, bool]:
        """Write a node's commands on one of its connections; the replies are read by
        :meth:`_read_node`."""
        client = cluster.get_redis_connection(node)
        wait = durable and self._replicas.count(node.name, client) > 0
        payload = [command for work in works for command in work.commands]
        if wait:
            payload.append(pack_command(b"WAIT", b"1", b"%d" % self._ack_timeout_ms))
        pool = client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([b"".join(payload)])  # type: ignore[no-untyped-call]
        except BaseException:
            connection.disconnect()  # type: ignore[no-untyped-call]
            pool.release(connection)
            raise
        return pool, connection, wait

    def _read_node(
        self, node: ClusterNode, works: list[_Work], pool: Any, connection: Any, wait: bool
    ) -> None:
        count = sum(len(work.commands) for work in works) + wait
        replies: list[Any] = []
        try:
            for _ in range(count):
                try:
                    replies.append(connection.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)
        if wait:
            acks = replies.pop()
            if isinstance(acks, int) and acks < 1:
                self._replicas.forget(node.name)
                raise _NotReplicated(f"WAIT 1 on {node.name} answered {acks}")
        at = 0
        for work in works:
            work.replies = replies[at : at + len(work.commands)]
            at += len(work.commands)

    @staticmethod
    def _by_slot(keys: Iterator[tuple[int, Any]] | list[tuple[int, Any]]) -> dict[int, list[Any]]:
        groups: dict[int, list[Any]] = defaultdict(list)
        for slot, item in keys:
            groups[slot].append(item)
        return groups

    def _set_works(self, items: list[tuple[bytes, bytes]], ttl_ms: list[int] | None) -> list[_Work]:
        if ttl_ms is None:
            return _mset_works(sorted([(slot_of(key), key, value) for key, value in items]))
        timed = self._by_slot(
            [
                (slot_of(key), (key, value, ms))
                for (key, value), ms in zip(items, ttl_ms, strict=True)
            ]
        )
        return [
            _Work(
                slot,
                [pack_command(b"SET", key, value, b"PX", b"%d" % ms) for key, value, ms in triples],
                functools.partial(_set_each_px, triples),
                sets=[(key, value) for key, value, _ in triples],
                ttls=[ms for _, _, ms in triples],
            )
            for slot, triples in timed.items()
        ]

    def _delete_works(self, keys: list[bytes]) -> list[_Work]:
        groups = self._by_slot([(slot_of(key), key) for key in keys])
        return [
            _Work(
                slot,
                [pack_command(b"UNLINK", *slot_keys)],
                _single_unlink(slot_keys),
                unlinks=slot_keys,
            )
            for slot, slot_keys in groups.items()
        ]

    # primitives -----------------------------------------------------------------------------

    def get_raw(self, key: str) -> bytes | None:
        return self._keyed("redis GET", lambda cluster: cluster.get(key))  # type: ignore[no-any-return]

    def get_many_raw(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        encoded = [key.encode("utf-8") for key in keys]
        groups = self._by_slot([(slot_of(key), key) for key in dict.fromkeys(encoded)])
        works = [
            _Work(slot, [pack_command(b"MGET", *slot_keys)], _single_gets(slot_keys))
            for slot, slot_keys in groups.items()
        ]
        self._run("redis MGET", works)
        found: dict[bytes, bytes | None] = {}
        for work, slot_keys in zip(works, groups.values(), strict=True):
            found.update(zip(slot_keys, work.replies[0], strict=True))
        return [found.get(key) for key in encoded]

    def _set(self, key: str, value: bytes, ttl_ms: int | None) -> None:
        self._keyed("redis SET", lambda cluster: cluster.set(key, value, px=ttl_ms))

    def _set_many(self, items: list[tuple[str, bytes]], ttl_ms: list[int] | None) -> None:
        encoded = [(key.encode("utf-8"), value) for key, value in items]
        self._run("redis set_many", self._set_works(encoded, ttl_ms))

    def set_many(self, mapping: Mapping[str, Any], ttl: TTL | None = None) -> int:
        """Store every item; keys are grouped by slot across the whole mapping (so a slot's keys
        go in one MSET) and sent in batches of about ``chunk_size`` keys, pipelined per node.
        Returns how many were written. Values are all encoded before anything is sent."""
        encode = self.codec.encode
        prefix = self._prefix
        by_slot: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        for name, value in mapping.items():
            if not isinstance(name, str):
                raise ConfigError(f"cache keys must be str, got {type(name).__name__}")
            key = (prefix + name).encode("utf-8")
            by_slot[slot_of(key)].append((key, encode(value)))
        total = 0
        batch: list[tuple[int, list[tuple[bytes, bytes]]]] = []
        size = 0
        for slot in sorted(by_slot):
            pairs = by_slot[slot]
            batch.append((slot, pairs))
            size += len(pairs)
            if size >= self.chunk_size:
                self._set_batch(batch, ttl)
                total += size
                batch, size = [], 0
        if batch:
            self._set_batch(batch, ttl)
            total += size
        return total

    def _set_batch(
        self, batch: list[tuple[int, list[tuple[bytes, bytes]]]], ttl: TTL | None
    ) -> None:
        if ttl is None:
            works = [_mset_work(slot, pairs) for slot, pairs in batch]
        else:
            items = [pair for _, pairs in batch for pair in pairs]
            works = self._set_works(items, [self._ttl_ms(ttl) or 1 for _ in items])
        self._run("redis set_many", works, merge=True)

    def _delete(self, keys: list[str]) -> int:
        works = self._delete_works([key.encode("utf-8") for key in keys])
        self._run("redis UNLINK", works)
        return sum(int(work.replies[0]) for work in works if _answered(work))

    def _masters(self) -> list[ClusterNode]:
        nodes: list[ClusterNode] = self._call(
            "redis cluster nodes",
            lambda: self._cluster().get_primaries(),  # type: ignore[no-untyped-call]
        )
        return nodes

    def _scan_node(self, node: ClusterNode, pattern: str, count: int) -> Iterator[list[bytes]]:
        cursor = 0

        def scan(cursor: int) -> Any:
            client = self._cluster().get_redis_connection(node)
            return client.scan(cursor=cursor, match=pattern, count=count)

        while True:
            cursor, keys = self._call("redis SCAN", functools.partial(scan, cursor))
            if keys:
                yield keys
            if cursor == 0:
                return

    def scan_prefix(self, prefix: str, count: int) -> Iterator[list[bytes]]:
        pattern = escape_glob(prefix) + "*"
        for node in self._masters():
            yield from self._scan_node(node, pattern, count)

    def _delete_matching(self, prefix: str) -> int:
        deleted = 0
        for keys in self.scan_prefix(prefix, 1000):
            works = self._delete_works(keys)
            self._run("redis UNLINK", works)
            deleted += sum(int(work.replies[0]) for work in works if _answered(work))
        return deleted

    def set_if_absent(self, key: str, value: bytes, ttl_ms: int) -> bool:
        return bool(
            self._keyed("redis SET NX", lambda cluster: cluster.set(key, value, nx=True, px=ttl_ms))
        )

    def delete_if_equal(self, key: str, value: bytes) -> bool:
        return bool(
            self._keyed(
                "redis EVAL (release)",
                lambda cluster: cluster.eval(_DELETE_IF_EQUAL, 1, key, value),
            )
        )

    def expire_if_equal(self, key: str, value: bytes, ttl_ms: int) -> bool:
        return bool(
            self._keyed(
                "redis EVAL (renew)",
                lambda cluster: cluster.eval(_EXPIRE_IF_EQUAL, 1, key, value, ttl_ms),
            )
        )

    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl_ms: int | None = None
    ) -> bool:
        return bool(
            self._keyed(
                "redis EVAL (compare and set)",
                lambda cluster: cluster.eval(
                    _COMPARE_AND_SET,
                    1,
                    key,
                    b"0" if expected is None else b"1",
                    expected or b"",
                    value,
                    ttl_ms or 0,
                ),
            )
        )

    def write_fenced(self, batch: FencedBatch) -> bool:
        """The cluster's form of the fenced batch (its keys span slots, so no one script can
        hold it): the fence is checked; rows and deletes go out per node, each node's writes
        followed by ``WAIT 1`` where its master has a replica; only when every node has
        acknowledged is the fence checked again and ``meta`` (the checkpoint) written, also
        waited for. A checkpoint is therefore never ahead of its rows, on the masters or on a
        promoted replica. What it cannot give: atomicity (a crash may leave a batch's rows
        without its checkpoint; the next pass writes them again) and a fence over the rows
        themselves (see docs/sync.md)."""
        fence = batch.fence
        ttl_ms = batch.ttl_ms
        meta = batch.meta
        parts = unpack_arguments(batch.packed_items, 2 * batch.item_count)
        if self.get_raw(fence[0]) != fence[1]:
            return False
        encoded = list(zip(parts[::2], parts[1::2], strict=True))
        ttls = None
        if ttl_ms is not None:
            ttls = [self._jittered(ttl_ms) or 1 for _ in encoded]
        works = self._set_works(encoded, ttls)
        works += self._delete_works([key.encode("utf-8") for key in batch.deletes])
        if works:
            self._run("redis fenced batch write", works, durable=True, merge=True)
        if not meta:
            return True
        if self.get_raw(fence[0]) != fence[1]:
            return False
        meta_works = self._set_works([(key.encode("utf-8"), value) for key, value in meta], None)
        self._run("redis checkpoint write", meta_works, durable=True)
        return True

    def _ping(self) -> None:
        self._call(
            "redis PING",
            lambda: self._cluster().ping(target_nodes=RedisCluster.PRIMARIES),
        )

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _answered(work: _Work) -> bool:
    return bool(work.replies) and isinstance(work.replies[0], int)


def _first(item: tuple[int, bytes, bytes]) -> int:
    return item[0]


def slot_of(key: bytes) -> int:
    """The hash slot of ``key``: redis-py's ``key_slot`` where a hash tag may apply, CRC16 modulo
    16384 directly otherwise (this runs once per key of a bulk write)."""
    if b"{" in key:
        return int(key_slot(key))
    return crc_hqx(key, 0) & 0x3FFF


def _mset_works(slotted: list[tuple[int, bytes, bytes]]) -> list[_Work]:
    """One MSET work per slot from ``(slot, key, value)`` sorted by slot."""
    return [
        _mset_work(slot, [(key, value) for _, key, value in group])
        for slot, group in itertools.groupby(slotted, key=_first)
    ]


def _mset_work(slot: int, pairs: list[tuple[bytes, bytes]]) -> _Work:
    """MSETs of up to 1,000 of one slot's keys (built only if sent), the RESP written directly."""
    return _Work(
        slot,
        functools.partial(_msets, pairs),
        functools.partial(_set_each, pairs),
        sets=pairs,
    )


def _msets(pairs: list[tuple[bytes, bytes]]) -> list[bytes]:
    commands = []
    for start in range(0, len(pairs), _MSET_CHUNK):
        part = pairs[start : start + _MSET_CHUNK]
        commands.append(
            b"".join(
                [
                    b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * len(part)),
                    *[
                        b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(key), key, len(value), value)
                        for key, value in part
                    ],
                ]
            )
        )
    return commands


# One node's share of a bulk write in one step. The keys go in ARGV, not KEYS: a node refuses
# declared keys of several slots, while the flag lets a script touch keys of several slots that
# the node serves (Redis 7); a key whose slot is elsewhere makes the node refuse the script.
# ARGV: how many keys are set, whether they expire (1/0), how many are unlinked, the keys set,
# the keys unlinked, the values, then the expiries in ms.
_NODE_WRITE: Final = b"""#!lua flags=allow-cross-slot-keys
local sets = tonumber(ARGV[1])
local unlinks = tonumber(ARGV[3])
local values = 3 + sets + unlinks
if ARGV[2] == '1' then
  local ttls = values + sets
  for i = 1, sets do redis.call('set', ARGV[3 + i], ARGV[values + i], 'px', ARGV[ttls + i]) end
else
  for i = 1, sets do redis.call('set', ARGV[3 + i], ARGV[values + i]) end
end
for i = 3 + sets + 1, 3 + sets + unlinks do redis.call('unlink', ARGV[i]) end
return 1
"""


def _number(value: int) -> bytes:
    text = b"%d" % value
    return b"$%d\r\n%b\r\n" % (len(text), text)


def _node_script(works: list[_Work]) -> bytes:
    """The EVAL of :data:`_NODE_WRITE` for every write in ``works`` (one node's)."""
    sets = [pair for work in works for pair in (work.sets or ())]
    unlinks = [key for work in works for key in (work.unlinks or ())]
    timed = any(work.ttls for work in works)
    ttls = [ms for work in works for ms in (work.ttls or ())] if timed else []
    count = 3 + 3 + 2 * len(sets) + len(unlinks) + len(ttls)
    parts = [
        b"*%d\r\n$4\r\nEVAL\r\n$%d\r\n%b\r\n$1\r\n0\r\n" % (count, len(_NODE_WRITE), _NODE_WRITE),
        _number(len(sets)),
        b"$1\r\n1\r\n" if timed else b"$1\r\n0\r\n",
        _number(len(unlinks)),
        *[b"$%d\r\n%b\r\n" % (len(key), key) for key, _ in sets],
        *[b"$%d\r\n%b\r\n" % (len(key), key) for key in unlinks],
        *[b"$%d\r\n%b\r\n" % (len(value), value) for _, value in sets],
        *[_number(ms) for ms in ttls],
    ]
    return b"".join(parts)


def _unused(_cluster: RedisCluster) -> None:
    """The merged form has no single-key fallback: a refusal resends the slots' own works."""


def _set_each(pairs: list[tuple[bytes, bytes]], cluster: RedisCluster) -> None:
    for key, value in pairs:
        cluster.set(key, value)


def _set_each_px(triples: list[tuple[bytes, bytes, int]], cluster: RedisCluster) -> None:
    for key, value, ms in triples:
        cluster.set(key, value, px=ms)


def _single_unlink(keys: list[bytes]) -> Callable[[RedisCluster], Any]:
    def run(cluster: RedisCluster) -> int:
        return sum(int(cluster.unlink(key)) for key in keys)

    return run


def _single_gets(keys: list[bytes]) -> Callable[[RedisCluster], Any]:
    def run(cluster: RedisCluster) -> list[Any]:
        return [cluster.get(key) for key in keys]

    return run
