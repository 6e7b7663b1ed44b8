"""The Redis Cluster backend: redis-py's ``RedisCluster`` for routing, per-node pipelines for bulk.

Single-key operations go through ``RedisCluster`` itself (it follows MOVED and ASK). Multi-key
operations group keys by hash slot (a multi-key command must stay in one slot), then send each
node's commands in one write on one of its connections, all nodes written before any is read,
so a batch costs one round trip to the slowest node. A slot whose command comes back MOVED
(failover, resharding) is resent after the slot table is rebuilt; ASK and TRYAGAIN (a slot
migrating) fall back to single-key commands, which redis-py sends with ASKING. Only the slots
that failed are resent, and every bulk command is idempotent, so a resend cannot apply twice.

Packed writes (``CacheSync``'s batches, ``set_many`` with a TTL) go as one script per node
instead, its rows cut out of the packed batch as they came; the script checks the batch's
fencing token against a fence key on that node first (see :meth:`ClusterCache.claim_fences`).
"""

from __future__ import annotations

import functools
import itertools
import operator
import random
import threading
from binascii import crc_hqx
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.retry import Retry

from .._config import REDIS_OPTIONS, CacheUrl, Secret, convert_options
from .._connection import CacheConnectionSettings, TlsSettings
from .._errors import ConfigError, ConnectError
from .._resp import pack_arguments, pack_command, pack_header, unpack_arguments
from .._retry import Failure, RetryPolicy
from ._backend import FencedBatch
from ._client import TTL, CacheClient, escape_glob
from ._codec import Codec
from ._redis import _COMPARE_AND_SET, _DELETE_IF_EQUAL, _EXPIRE_IF_EQUAL, classify_redis_error
from ._sentinel import ReplicaCounts, _tls, ack_timeout_ms

__all__ = ["ClusterCache"]

CLUSTER_OPTIONS: Final = {"replica_ack_timeout": float}
_SLOTS: Final = 16384
# Rows per step of a packed write (one script per node per step). Fewer, larger scripts cost the
# servers less (bench_cluster: 1,000-row steps took 6.8 server CPU-seconds for a million rows,
# whole 5,000-row batches 5.7); the bound keeps one script from blocking its node for long.
_CHUNK_ROWS: Final = 10_000
_MSET_CHUNK: Final = 1000
# Replies that mean "this slot is elsewhere now": rebuild the slot table and resend.
_MOVED: Final = (redis.exceptions.MovedError, redis.exceptions.ClusterDownError)
# Replies that mean "this slot is migrating": single-key commands follow ASK. (redis-py's
# MovedError is a subclass of AskError: see _migrating.)
_MIGRATING: Final = (redis.exceptions.AskError, redis.exceptions.TryAgainError)
_SLOT_MASK: Final = _SLOTS - 1


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

    @functools.cached_property
    def commands(self) -> list[bytes]:
        """The slot's packed commands, built on first use."""
        return self.build if isinstance(self.build, list) else self.build()


@dataclass(eq=False)
class _Share:
    """One node's share of a packed write: its ``count`` rows (``$len key $len value`` each, as
    packed), the keys it unlinks, and a slot it serves (whose fence key the node's script
    checks)."""

    rows: bytes = b""
    count: int = 0
    deletes: list[bytes] = field(default_factory=list)
    slot: int = -1


@dataclass(frozen=True, slots=True)
class _Prepared:
    """Rows split by node ahead of their write, with the slot table the split followed."""

    table: Any
    shares: list[_Share]


T = TypeVar("T")


@dataclass(eq=False)
class _Outcome(Generic[T]):
    """What one attempt of a bulk command came to, unit by unit (a unit is a slot's work):
    failed (its node lost, or MOVED: resent whole after the slot table is rebuilt), migrating
    (ASK or TRYAGAIN: written key by key), and the first refusal that is not about routing."""

    failed: list[T] = field(default_factory=list)
    migrating: list[T] = field(default_factory=list)
    first_error: BaseException | None = None
    refused: BaseException | None = None

    def lost(self, units: list[T], exc: BaseException) -> None:
        self.first_error = self.first_error or exc
        self.failed.extend(units)

    def judge(self, unit: T, replies: list[Any], node: ClusterNode) -> None:
        """Sort ``unit`` by its replies; a refusal is kept to be raised once every node's
        replies are read (each connection left in step)."""
        errors = [reply for reply in replies if isinstance(reply, redis.ResponseError)]
        if not errors:
            return
        if _migrating(errors):
            self.migrating.append(unit)
        elif all(isinstance(error, _MOVED + _MIGRATING) for error in errors):
            self.lost([unit], errors[0])
        else:
            self.refused = self.refused or _naming(errors[0], node)


class ClusterCache(CacheClient):
    """A :class:`CacheClient` on a Redis Cluster (``redis+cluster://n1:7000,n2:7001``: seed
    nodes; ``rediss+cluster://`` for TLS), through redis-py's ``RedisCluster``.

    Same API and behaviour as :class:`RedisCache`; ``get_many``, ``set_many`` and
    ``delete_prefix`` group keys by slot and pipeline them per node (SCAN runs on every master).
    MOVED, ASK, TRYAGAIN, CLUSTERDOWN and a lost node during a failover are retried by the
    client's :class:`RetryPolicy` after the slot table is rebuilt. The rows of a batch that
    carries a checkpoint (``CacheSync``) wait for one replica of each node (``WAIT 1``, up to
    ``replica_ack_timeout`` seconds, 2 by default) where the node's master has one, and are
    refused by every node once a newer lock holder has claimed the fences
    (:meth:`claim_fences`). Cluster has database 0 only.
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
        # The slot table the owner list was built from, the masters, each slot's master and
        # each CRC16's master as four bytes (see _split): one tuple, so a reader thread never
        # sees parts of two tables.
        self._owner_table: tuple[Any, list[ClusterNode], list[int], list[bytes]] | None = None

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

    def _run(self, operation: str, works: list[_Work]) -> None:
        """Send every slot's commands, pipelined per node; resend only failed slots (after
        rebuilding the slot table) under the retry policy."""
        pending = list(works)

        def attempt() -> None:
            cluster = self._cluster()
            by_node: dict[str, tuple[ClusterNode, list[_Work]]] = {}
            for work in pending:
                node = cluster.nodes_manager.get_node_from_slot(work.slot)
                by_node.setdefault(node.name, (node, []))[1].append(work)
            outcome: _Outcome[_Work] = _Outcome()
            # Every node is written before any is read, so the masters work at the same time.
            started: list[tuple[_Exchange, list[_Work]]] = []
            for node, node_works in by_node.values():
                commands = [command for work in node_works for command in work.commands]
                try:
                    started.append((self._send_node(cluster, node, commands, False), node_works))
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    outcome.lost(node_works, exc)
            for exchange, node_works, replies in self._read_all(started, outcome):
                at = 0
                for work in node_works:
                    work.replies = replies[at : at + len(work.commands)]
                    at += len(work.commands)
                    outcome.judge(work, work.replies, exchange.node)

            def single(work: _Work) -> None:
                work.replies = [work.single(cluster)]

            self._settle(outcome, pending, single)

        self._call(operation, attempt)

    def _read_all(
        self, started: list[tuple[_Exchange, list[T]]], outcome: _Outcome[T]
    ) -> Iterator[tuple[_Exchange, list[T], list[Any]]]:
        """Each exchange with its units and replies, read in turn; a node lost meanwhile has
        its units counted as failed in ``outcome``. Anything else (or the loop left early)
        drops the unread exchanges' connections."""
        read = 0
        try:
            for exchange, units in started:
                read += 1
                try:
                    replies = self._read_node(exchange)
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    outcome.lost(units, exc)
                    continue
                yield exchange, units, replies
        finally:
            for later, _ in started[read:]:
                _abandon(later)

    def _settle(
        self, outcome: _Outcome[T], pending: list[T], single: Callable[[T], object]
    ) -> None:
        """End an attempt of a bulk command: raise what a node refused (not retried); write each
        migrating unit key by key through ``RedisCluster`` (which follows ASK); leave the failed
        units in ``pending`` and raise the first failure, so the retry policy sends them again
        after the slot table is rebuilt."""
        if outcome.refused is not None:
            raise outcome.refused
        if outcome.failed or outcome.migrating:
            self._owner_table = None
        pending[:] = outcome.failed
        for number, unit in enumerate(outcome.migrating):
            try:
                single(unit)
            except BaseException:
                pending.extend(outcome.migrating[number:])
                raise
        if outcome.first_error is not None:
            self._stale = True
            raise outcome.first_error

    def _send_node(
        self, cluster: RedisCluster, node: ClusterNode, commands: list[bytes], durable: bool
    ) -> _Exchange:
        """Write ``commands`` to ``node`` on one of its connections, followed by ``WAIT 1``
        when ``durable`` and the node's master has a replica; :meth:`_read_node` reads the
        replies."""
        exchange = self._open(cluster, node, durable)
        self._send(exchange, [*commands, *([self._wait_command()] if exchange.wait else [])])
        return exchange

    def _wait_command(self) -> bytes:
        return pack_command(b"WAIT", b"1", b"%d" % self._ack_timeout_ms)

    def _open(self, cluster: RedisCluster, node: ClusterNode, durable: bool) -> _Exchange:
        """A connection to ``node`` taken from its pool for an exchange; ``wait``: the writes
        must be acknowledged by a replica (``durable`` and the master has one)."""
        client = cluster.get_redis_connection(node)
        wait = durable and self._replicas.count(node.name, client) > 0
        pool = client.connection_pool
        return _Exchange(node, pool, pool.get_connection(), 0, wait)

    @staticmethod
    def _send(exchange: _Exchange, commands: list[bytes]) -> None:
        """Write ``commands`` on the exchange's connection; their replies are read later. A
        failed write drops the connection."""
        try:
            exchange.connection.send_packed_command([b"".join(commands)])
        except BaseException:
            _abandon(exchange)
            raise
        exchange.count += len(commands)

    def _read_node(self, exchange: _Exchange) -> list[Any]:
        """The replies to the exchange's commands (a refused command's error in its place);
        raises :class:`_NotReplicated` when it ended with ``WAIT`` and no replica acknowledged."""
        connection = exchange.connection
        replies: list[Any] = []
        try:
            for _ in range(exchange.count):
                try:
                    replies.append(connection.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            connection.disconnect()
            raise
        finally:
            exchange.pool.release(connection)
        if exchange.wait:
            acks = replies.pop()
            if isinstance(acks, int) and acks < 1:
                self._replicas.forget(exchange.node.name)
                raise _NotReplicated(f"WAIT 1 on {exchange.node.name} answered {acks}")
        return replies

    def _owners(
        self, cluster: RedisCluster
    ) -> tuple[Any, list[ClusterNode], list[int], list[bytes]]:
        """The client's slot table, its masters, for each of the 16384 slots the index of the
        one serving it, and the same per CRC16 for :func:`_split` (rebuilt when the table is);
        one read, so the four always belong together."""
        table = cluster.nodes_manager.slots_cache
        routing = self._owner_table
        if routing is None or routing[0] is not table:
            masters: dict[str, int] = {}
            nodes: list[ClusterNode] = []
            owner = [0] * _SLOTS
            for slot in range(_SLOTS):
                node = table[slot][0]
                index = masters.get(node.name)
                if index is None:
                    index = masters[node.name] = len(nodes)
                    nodes.append(node)
                owner[slot] = index
            routing = (table, nodes, owner, _quads(owner, len(nodes)))
            self._owner_table = routing
        return routing

    def _write_packed(
        self,
        operation: str,
        rows: bytes,
        count: int,
        deletes: list[bytes],
        *,
        ttl_ms: int | None,
        fence: tuple[str, int] | None,
        durable: bool,
        prepared: object = None,
    ) -> bool:
        """Set ``count`` packed rows (``ttl_ms`` jittered per key by the node) and unlink
        ``deletes``: one script per node, every node written before any is read, each followed
        by ``WAIT 1`` when ``durable``. With ``fence`` (a lock key and its fencing token) each
        node's script first reads the fence key of one slot it serves and refuses its whole
        share when a newer token has claimed it; returns False if any share was refused (the
        caller lost its lock). A node that refuses the script (a slot moved or migrating) gets
        one script per slot, keys declared, through ``RedisCluster``, which follows ASK and
        MOVED. Shares that failed (node down, no replica ack) are resent after the slot table
        is rebuilt, split by the new table. ``prepared`` (from :meth:`prepare_rows`) saves the
        split when the slot table is the one it was made with."""
        pending: tuple[bytes, int, list[bytes]] = (rows, count, deletes)
        ready = prepared if isinstance(prepared, _Prepared) else None
        refused = False
        jitter = round(self.ttl_jitter * 1_000_000)

        def steps(cluster: RedisCluster) -> Iterator[tuple[list[ClusterNode], list[_Share]]]:
            nonlocal ready
            table, nodes, owner, quads = self._owners(cluster)
            rows, count, deletes = pending
            if ready is not None and ready.table is table:
                shares, ready = ready.shares, None
                _add_deletes(shares, deletes, owner)
                yield nodes, shares
                return
            ready = None
            position = done = 0
            while True:
                take = min(_CHUNK_ROWS, count - done)
                # Only a write of more than one step walks its rows to cut them.
                step, position = (rows, 0) if take == count else _step(rows, position, take)
                shares = _split(step, take, owner, quads, len(nodes))
                if not done:
                    _add_deletes(shares, deletes, owner)
                done += take
                yield nodes, shares
                if done >= count:
                    return

        def attempt() -> None:
            nonlocal pending, refused
            cluster = self._cluster()
            # Each node's exchange and the shares sent on it, in order (one per step).
            sent: dict[int, tuple[_Exchange, list[_Share]]] = {}
            failed: list[_Share] = []
            moving: list[_Share] = []
            down: set[int] = set()
            first_error: BaseException | None = None
            for nodes, shares in steps(cluster):
                for index, share in enumerate(shares):
                    if not share.count and not share.deletes:
                        continue
                    if index in down:
                        failed.append(share)
                        continue
                    fence_key = b"" if fence is None else _fence_key(fence[0], share.slot)
                    command = _write_command(share, fence_key, fence, ttl_ms, jitter)
                    try:
                        if index not in sent:
                            sent[index] = (self._open(cluster, nodes[index], durable), [])
                        exchange, node_shares = sent[index]
                        node_shares.append(share)
                        self._send(exchange, [command])
                    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                        first_error = first_error or exc
                        down.add(index)
                        failed.extend(sent.pop(index)[1] if index in sent else [share])
            # Every node's WAIT goes out before any reply is read, so the replicas acknowledge
            # at the same time rather than one after another.
            waiting: list[tuple[_Exchange, list[_Share]]] = []
            for exchange, node_shares in sent.values():
                try:
                    if exchange.wait:
                        self._send(exchange, [self._wait_command()])
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    first_error = first_error or exc
                    failed.extend(node_shares)
                    continue
                waiting.append((exchange, node_shares))
            for exchange, node_shares in waiting:
                try:
                    replies = self._read_node(exchange)
                except (redis.ConnectionError, redis.TimeoutError, OSError, _NotReplicated) as exc:
                    first_error = first_error or exc
                    failed.extend(node_shares)
                    continue
                for share, reply in zip(node_shares, replies, strict=True):
                    if isinstance(reply, redis.ResponseError):
                        moving.append(share)
                    elif reply == 0:
                        refused = True
            if moving:
                # The slot table is out of date (redis-py may even have patched it in place
                # while following a MOVED): the next write starts from a rebuilt one.
                self._stale = True
                self._owner_table = None
            for share in moving:
                for slot_share in _by_slot_shares(share):
                    try:
                        if not self._write_slot(cluster, slot_share, fence, ttl_ms, jitter):
                            refused = True
                    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                        first_error = first_error or exc
                        failed.append(slot_share)
                    except redis.ResponseError as exc:
                        if not isinstance(exc, _MOVED + _MIGRATING):
                            raise
                        first_error = first_error or exc
                        failed.append(slot_share)
            if refused:
                return
            pending = (
                b"".join(share.rows for share in failed),
                sum(share.count for share in failed),
                [key for share in failed for key in share.deletes],
            )
            if first_error is not None:
                self._stale = True
                raise first_error

        self._call(operation, attempt)
        return not refused

    def _write_slot(
        self,
        cluster: RedisCluster,
        share: _Share,
        fence: tuple[str, int] | None,
        ttl_ms: int | None,
        jitter: int,
    ) -> bool:
        """One slot's share as one script with its keys declared, sent by ``RedisCluster``
        (which follows MOVED and ASK, and waits out TRYAGAIN while the slot migrates)."""
        rows = unpack_arguments(share.rows, 2 * share.count)
        fence_key = b"" if fence is None else _fence_key(fence[0], share.slot)
        keys = [*([fence_key] if fence_key else []), *rows[::2], *share.deletes]
        arguments = [
            *_write_head(fence_key, fence, ttl_ms, jitter, share.count, len(share.deletes)),
            *rows,
            *share.deletes,
        ]
        return bool(cluster.eval(_NODE_WRITE_TEXT, len(keys), *keys, *arguments))

    def prepare_rows(self, packed: bytes, count: int) -> object:
        """The rows split by the node serving each (cut at their CRLFs, CRC16 per key, each
        node's rows picked by C-level passes), so a reader thread does it while the previous
        batch is being written; the write uses it if the slot table has not changed meanwhile.
        None for more rows than one step, or when the cluster cannot be asked now (the write
        will split them)."""
        if count > _CHUNK_ROWS:
            return None
        try:
            cluster = self._cluster()
            table, nodes, owner, quads = self._owners(cluster)
        except (redis.RedisError, OSError):
            return None
        return _Prepared(table, _split(packed, count, owner, quads, len(nodes)))

    def claim_fences(self, key: str) -> int:
        """Take the next fencing token of the lock ``key`` (an ``INCR``, waited for by a
        replica) and raise the fence key of every slot to it (one script per master, each
        waited for), so that from now on a write carrying an older token is refused by every
        node. Returns the token. Called right after the lock is taken, before any read of the
        source, so a stale holder's write either lands before this claim (and before anything
        its successor reads) or is refused."""
        counter = _fence_base(key) + b":fence-token"
        token = int(self._call("redis INCR (fencing token)", lambda: self._bump(counter, None)))
        while True:
            highest = int(
                self._call("redis fence claim", functools.partial(self._claim, key, token))
            )
            if highest <= token:
                return token
            # The counter is behind a fence (a failover lost its last INCR): jump past it.
            token = int(
                self._call(
                    "redis SET (fencing token)", functools.partial(self._bump, counter, highest + 1)
                )
            )

    def _bump(self, counter: bytes, at_least: int | None) -> int:
        cluster = self._cluster()
        node = cluster.nodes_manager.get_node_from_slot(slot_of(counter))
        command = (
            pack_command(b"INCR", counter)
            if at_least is None
            else pack_command(b"EVAL", _RAISE_TO, b"1", counter, b"%d" % at_least)
        )
        (reply,) = self._read_node(self._send_node(cluster, node, [command], True))
        if isinstance(reply, Exception):
            raise reply
        return int(reply)

    def _claim(self, key: str, token: int) -> int:
        cluster = self._cluster()
        _, nodes, owner, _ = self._owners(cluster)
        slots: list[list[int]] = [[] for _ in nodes]
        for slot in range(_SLOTS):
            slots[owner[slot]].append(slot)
        exchanges = []
        for node, node_slots in zip(nodes, slots, strict=True):
            command = pack_command(
                b"EVAL", _CLAIM, b"0", b"%d" % token,
                *[_fence_key(key, slot) for slot in node_slots],
            )  # fmt: skip
            exchanges.append((node_slots, self._send_node(cluster, node, [command], True)))
        highest = 0
        first_error: BaseException | None = None
        for node_slots, exchange in exchanges:
            try:
                (reply,) = self._read_node(exchange)
            except (redis.RedisError, OSError) as exc:
                first_error = first_error or exc
                continue
            if isinstance(reply, redis.ResponseError):
                # A slot is moving: each slot's fence key on its own, following ASK.
                replies = [
                    cluster.eval(_CLAIM_TEXT, 1, _fence_key(key, slot), token)
                    for slot in node_slots
                ]
                reply = max(int(value) for value in replies)
            highest = max(highest, int(reply))
        if first_error is not None:
            raise first_error
        return highest

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
        go in one MSET) and every master is sent its share at the same time, in rounds of about
        ``chunk_size`` keys per master. Returns how many were written. Values are all encoded
        before anything is sent."""
        encode = self.codec.encode
        prefix = self._prefix
        ttl_ms = None if ttl is None else max(1, int(self._base_ttl_ms(ttl)))
        # Each key-value pair is packed as it is grouped: this loop runs once per key.
        slots: list[list[bytes]] = [[] for _ in range(_SLOTS)]
        for name, value in mapping.items():
            if not isinstance(name, str):
                raise ConfigError(f"cache keys must be str, got {type(name).__name__}")
            key = (prefix + name).encode("utf-8")
            data = encode(value)
            slot = crc_hqx(key, 0) & 0x3FFF if b"{" not in key else int(key_slot(key))
            slots[slot].append(b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(key), key, len(data), data))
        if ttl_ms is None:
            return self._mset_slots(slots)
        total = 0
        batch: list[list[bytes]] = []
        size = 0
        for pairs in slots:
            if not pairs:
                continue
            batch.append(pairs)
            size += len(pairs)
            if size >= self.chunk_size:
                self._set_batch_px(batch, size, ttl_ms)
                total += size
                batch, size = [], 0
        if batch:
            self._set_batch_px(batch, size, ttl_ms)
            total += size
        return total

    def _set_batch_px(self, batch: list[list[bytes]], count: int, ttl_ms: int) -> None:
        """SET PX per key, the expiry jittered by the node: one script per node."""
        rows = b"".join([pair for pairs in batch for pair in pairs])
        self._write_packed(
            "redis set_many", rows, count, [], ttl_ms=ttl_ms, fence=None, durable=False
        )

    def _mset_slots(self, slots: list[list[bytes]]) -> int:
        """MSET each slot's packed pairs (``slots[slot]``) on the master serving it, one MSET per
        slot (and per 1,000 pairs); returns how many pairs were written.

        Every master gets its own connection and is sent its next ``chunk_size`` keys in turn,
        round after round, before any reply is read: the masters store keys at the same time,
        while the client joins the next round (Redis buffers the replies). A slot refused with
        MOVED or CLUSTERDOWN, or whose node was lost, is sent again after the slot table is
        rebuilt, under the retry policy; a slot answering ASK or TRYAGAIN (migrating) is written
        key by key through ``RedisCluster``, which follows ASK. MSET is idempotent, so a slot
        written twice holds the same values."""
        pending = [slot for slot in range(_SLOTS) if slots[slot]]
        total = sum(len(slots[slot]) for slot in pending)
        chunk = self.chunk_size

        def attempt() -> None:
            cluster = self._cluster()
            _, nodes, owner, _ = self._owners(cluster)
            queues: list[list[int]] = [[] for _ in nodes]
            for slot in pending:
                queues[owner[slot]].append(slot)
            positions = [0] * len(nodes)
            # Each node's exchange and the slots sent on it, in order.
            sent: dict[int, tuple[_Exchange, list[int]]] = {}
            outcome: _Outcome[int] = _Outcome()
            try:
                while True:
                    progressed = False
                    for index, queue in enumerate(queues):
                        start = end = positions[index]
                        size = 0
                        while end < len(queue) and size < chunk:
                            size += len(slots[queue[end]])
                            end += 1
                        if start == end:
                            continue
                        progressed = True
                        positions[index] = end
                        round_slots = queue[start:end]
                        commands = [c for slot in round_slots for c in _msets(slots[slot])]
                        try:
                            if index not in sent:
                                sent[index] = (self._open(cluster, nodes[index], False), [])
                            exchange, node_slots = sent[index]
                            self._send(exchange, commands)
                            node_slots.extend(round_slots)
                        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                            # The node is lost for this attempt: none of its slots counts as
                            # written, and it is sent nothing more.
                            outcome.lost(sent.pop(index)[1] if index in sent else [], exc)
                            outcome.lost(queue[start:], exc)
                            positions[index] = len(queue)
                    if not progressed:
                        break
            except BaseException:
                for exchange, _ in sent.values():
                    _abandon(exchange)
                raise
            for exchange, node_slots, replies in self._read_all(list(sent.values()), outcome):
                at = 0
                for slot in node_slots:
                    count = -(-len(slots[slot]) // _MSET_CHUNK)
                    outcome.judge(slot, replies[at : at + count], exchange.node)
                    at += count
            self._settle(outcome, pending, lambda slot: _set_each(slots[slot], cluster))

        self._call("redis set_many", attempt)
        return total

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
        hold it). Rows and deletes go out as one script per node, every node written before
        any is read, each followed by ``WAIT 1`` where its master has a replica; only when
        every node has acknowledged is ``meta`` (the checkpoint) written, so a checkpoint is
        never ahead of its rows, on the masters or on a promoted replica.

        With a fencing token (``batch.token``, from :meth:`claim_fences`) each node's script
        checks a fence key on that node and refuses its share when a newer holder has claimed
        the lock's fences: a runner that lost its lock writes nothing from its successor's
        claim on. Without one (token 0) the lock is read before the rows and before the
        checkpoint, which leaves a runner paused between a read and its write able to write.
        What neither gives: atomicity across nodes (a crash between rows and checkpoint leaves
        rows without their checkpoint; the next pass writes them again). See docs/sync.md."""
        fence_key, fence_value = batch.fence
        fence = (fence_key, batch.token) if batch.token else None
        if fence is None and self.get_raw(fence_key) != fence_value:
            return False
        deletes = [key.encode("utf-8") for key in batch.deletes]
        if (batch.item_count or deletes) and not self._write_packed(
            "redis fenced batch write",
            batch.packed_items,
            batch.item_count,
            deletes,
            ttl_ms=batch.ttl_ms,
            fence=fence,
            durable=True,
            prepared=batch.prepared,
        ):
            return False
        if not batch.meta:
            return True
        if fence is None and self.get_raw(fence_key) != fence_value:
            return False
        meta = pack_arguments([part for key, value in batch.meta for part in (key.encode(), value)])
        # Not waited for: its rows are on a replica already, so a replica that has it is never
        # ahead, and a failover that loses it only makes the next pass write the batch again.
        return self._write_packed(
            "redis checkpoint write", meta, len(batch.meta), [], ttl_ms=None, fence=fence,
            durable=False,
        )  # fmt: skip

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


def _migrating(errors: list[redis.ResponseError]) -> bool:
    """Whether every one of ``errors`` says the slot is migrating (ASK, TRYAGAIN), so its keys
    are written one by one following ASK; a MOVED (in redis-py a subclass of ASK's error) means
    the slot table is out of date, and the slot is resent whole once it is rebuilt."""
    return all(
        isinstance(error, _MIGRATING) and not isinstance(error, redis.exceptions.MovedError)
        for error in errors
    )


def _naming(error: redis.ResponseError, node: ClusterNode) -> redis.ResponseError:
    """``error`` (of the same class, so it is judged the same) saying which master answered it."""
    return type(error)(f"{error} (answered by the master at {node.name})")


def _abandon(exchange: _Exchange) -> None:
    """Drop an exchange whose replies will not be read: its connection is closed, not reused."""
    exchange.connection.disconnect()
    exchange.pool.release(exchange.connection)


def _answered(work: _Work) -> bool:
    return bool(work.replies) and isinstance(work.replies[0], int)


def slot_of(key: bytes) -> int:
    """The hash slot of ``key``: redis-py's ``key_slot`` where a hash tag may apply, CRC16 modulo
    16384 directly otherwise (this runs once per key of a bulk write)."""
    if b"{" in key:
        return int(key_slot(key))
    return crc_hqx(key, 0) & 0x3FFF


def _mset_works(slotted: list[tuple[int, bytes, bytes]]) -> list[_Work]:
    """One MSET work per slot from ``(slot, key, value)`` sorted by slot."""
    return [
        _mset_work(slot, [pack_arguments([key, value]) for _, key, value in group])
        for slot, group in itertools.groupby(slotted, key=operator.itemgetter(0))
    ]


def _mset_work(slot: int, pairs: list[bytes]) -> _Work:
    """MSETs of up to 1,000 of one slot's packed key-value pairs, joined only if sent."""
    return _Work(slot, functools.partial(_msets, pairs), functools.partial(_set_each, pairs))


def _msets(pairs: list[bytes]) -> list[bytes]:
    return [
        b"".join(
            [
                b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * len(pairs[start : start + _MSET_CHUNK])),
                *pairs[start : start + _MSET_CHUNK],
            ]
        )
        for start in range(0, len(pairs), _MSET_CHUNK)
    ]


# One node's share of a packed write in one step. The keys go in ARGV: a node refuses declared
# keys of several slots, while the flag lets a script touch keys of several slots that the node
# serves (Redis 7); a key whose slot is elsewhere makes the node refuse the script. The same
# script serves one slot's share with its keys also declared (so ASK and TRYAGAIN apply).
# ARGV: the fence key ('' for none), the fencing token, ttl ms (0: none), jitter (millionths),
# the jitter's seed, how many rows, how many unlinks, then the rows (key, value, ...) and the
# keys to unlink. Returns 0, writing nothing, when the fence holds a newer token.
_NODE_WRITE: Final = b"""#!lua flags=allow-cross-slot-keys
if ARGV[1] ~= '' then
  local fence = redis.call('get', ARGV[1])
  if fence and tonumber(fence) > tonumber(ARGV[2]) then return 0 end
end
local ttl = tonumber(ARGV[3])
local jitter = tonumber(ARGV[4]) / 1000000
local state = tonumber(ARGV[5])
local first = 8
local last = first + 2 * tonumber(ARGV[6]) - 1
if ttl > 0 and jitter > 0 then
  for i = first, last, 2 do
    state = (state * 16807) % 2147483647
    local px = math.max(1, math.floor(ttl * (1 - jitter * state / 2147483647)))
    redis.call('set', ARGV[i], ARGV[i + 1], 'px', px)
  end
elseif ttl > 0 then
  for i = first, last, 2 do redis.call('set', ARGV[i], ARGV[i + 1], 'px', ttl) end
else
  for i = first, last, 2 do redis.call('set', ARGV[i], ARGV[i + 1]) end
end
for i = last + 1, last + tonumber(ARGV[7]) do redis.call('unlink', ARGV[i]) end
return 1
"""
# Raise fence keys to a token: ARGV[1] the token, the keys in KEYS (one slot's, declared) or in
# the rest of ARGV (one node's slots). Returns the highest value a key held before.
_CLAIM: Final = b"""#!lua flags=allow-cross-slot-keys
local token = tonumber(ARGV[1])
local keys, first = KEYS, 1
if #KEYS == 0 then keys, first = ARGV, 2 end
local highest = 0
for i = first, #keys do
  local held = tonumber(redis.call('get', keys[i]) or '0')
  if held > highest then highest = held end
  if held < token then redis.call('set', keys[i], ARGV[1]) end
end
return highest
"""
_NODE_WRITE_TEXT: Final = _NODE_WRITE.decode()
_CLAIM_TEXT: Final = _CLAIM.decode()
# Set a counter to at least ARGV[1]; returns its value.
_RAISE_TO: Final = b"""
local held = tonumber(redis.call('get', KEYS[1]) or '0')
if held < tonumber(ARGV[1]) then redis.call('set', KEYS[1], ARGV[1]); return tonumber(ARGV[1]) end
return held
"""


@dataclass(slots=True)
class _Exchange:
    """Commands written to a node whose ``count`` replies are still to be read."""

    node: ClusterNode
    pool: Any
    connection: Any
    count: int
    wait: bool


def _quads(owner: list[int], nodes: int) -> list[bytes]:
    """For each of the 65536 CRC16 values, the index of the master serving that CRC's slot as
    four equal bytes (one per piece of a row in :func:`_split`); empty for more masters than a
    byte can number, which :func:`_split` then handles row by row."""
    if nodes > 255:
        return []
    patterns = [bytes([index]) * 4 for index in range(nodes)]
    return [patterns[index] for index in owner] * (65536 // _SLOTS)


@functools.cache
def _marks(index: int) -> bytes:
    """A ``bytes.translate`` table marking the byte ``index`` (1) and no other (0)."""
    return bytes(int(byte == index) for byte in range(256))


def _step(rows: bytes, position: int, count: int) -> tuple[bytes, int]:
    """The ``count`` packed rows from byte ``position`` on, and the position after them."""
    start = position
    find = rows.find
    for _ in range(count):
        end = find(b"\r\n", position)
        stop = end + 2 + int(rows[position + 1 : end])
        end = find(b"\r\n", stop + 2)
        position = end + 4 + int(rows[stop + 3 : end])
    return rows[start:position], position


def _split(
    rows: bytes, count: int, owner: list[int], quads: list[bytes], nodes: int
) -> list[_Share]:
    """Each node's share of the ``count`` packed rows (all ``rows`` holds), by slot owner.

    Rows are cut at CRLFs: a row has four of its own (after each header and each string) and
    a CRLF inside a key or value would add a piece, so ``4 * count + 1`` pieces are exactly the
    headers and strings; otherwise (binary values, more masters than a byte numbers) each row
    is walked by its headers' lengths. The pieces go to their node as they came (not
    re-encoded), picked by C-level passes rather than a Python loop per row: this runs for
    every row a sync writes (0.7 CPU-seconds per million rows, the walk 1.7)."""
    shares = [_Share() for _ in range(nodes)]
    pieces = rows.split(b"\r\n") if count and quads else []
    if len(pieces) == 4 * count + 1 and not pieces[-1]:
        keys = pieces[1::4]
        if b"{" in b"".join(keys):
            codes = list(map(slot_of, keys))
        else:
            codes = list(map(crc_hqx, keys, itertools.repeat(0)))
        # Each piece's node index: one byte per piece, so a node's pieces are one compress().
        spread = b"".join(map(quads.__getitem__, codes))
        for index, share in enumerate(shares):
            mark = bytes([index])
            share.count = spread.count(mark) // 4
            if share.count:
                share.slot = codes[spread.index(mark) // 4] & _SLOT_MASK
                mask = spread.translate(_marks(index))
                share.rows = b"\r\n".join(itertools.compress(pieces, mask)) + b"\r\n"
        return shares
    grouped: list[list[bytes]] = [[] for _ in range(nodes)]
    position = 0
    find = rows.find
    for _ in range(count):
        end = find(b"\r\n", position)
        start = end + 2
        stop = start + int(rows[position + 1 : end])
        end = find(b"\r\n", stop + 2)
        following = end + 4 + int(rows[stop + 3 : end])
        slot = slot_of(rows[start:stop])
        share = shares[owner[slot]]
        if share.slot < 0:
            share.slot = slot
        share.count += 1
        grouped[owner[slot]].append(rows[position:following])
        position = following
    for share, node_rows in zip(shares, grouped, strict=True):
        share.rows = b"".join(node_rows)
    return shares


def _add_deletes(shares: list[_Share], deletes: list[bytes], owner: list[int]) -> None:
    """Add each key of ``deletes`` to the share of the node serving its slot."""
    for key in deletes:
        slot = slot_of(key)
        share = shares[owner[slot]]
        share.deletes.append(key)
        if share.slot < 0:
            share.slot = slot


def _by_slot_shares(share: _Share) -> list[_Share]:
    """A node's share split into one share per slot."""
    by_slot: dict[int, _Share] = {}
    position = 0
    for _ in range(share.count):
        row, position = _step(share.rows, position, 1)
        slot = slot_of(unpack_arguments(row, 1)[0])
        slot_share = by_slot.setdefault(slot, _Share(slot=slot))
        slot_share.rows += row
        slot_share.count += 1
    for key in share.deletes:
        slot = slot_of(key)
        by_slot.setdefault(slot, _Share(slot=slot)).deletes.append(key)
    return list(by_slot.values())


def _write_head(
    fence_key: bytes,
    fence: tuple[str, int] | None,
    ttl_ms: int | None,
    jitter: int,
    rows: int,
    deletes: int,
) -> list[bytes]:
    """The leading ARGV of :data:`_NODE_WRITE`."""
    return [
        fence_key,
        b"%d" % (fence[1] if fence else 0),
        b"%d" % (ttl_ms or 0),
        b"%d" % jitter,
        b"%d" % random.randrange(1, 2_147_483_647),
        b"%d" % rows,
        b"%d" % deletes,
    ]


def _write_command(
    share: _Share, fence_key: bytes, fence: tuple[str, int] | None, ttl_ms: int | None, jitter: int
) -> bytes:
    """The EVAL of :data:`_NODE_WRITE` for one node's share, its rows spliced in as packed."""
    head = _write_head(fence_key, fence, ttl_ms, jitter, share.count, len(share.deletes))
    count = 3 + len(head) + 2 * share.count + len(share.deletes)
    return b"".join(
        [
            pack_header(count),
            pack_arguments([b"EVAL", _NODE_WRITE, b"0", *head]),
            share.rows,
            pack_arguments(share.deletes),
        ]
    )


@functools.cache
def _slot_tags() -> list[bytes]:
    """For each slot, a short hash tag that maps to it (found once per process: it takes
    about 315,000 CRCs, 40 ms, and every lock key's fence keys use the same tags)."""
    tags: list[bytes | None] = [None] * _SLOTS
    missing = _SLOTS
    for number in itertools.count():
        tag = b"%x" % number
        slot = crc_hqx(tag, 0) & 0x3FFF
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
            if not missing:
                return [tag or b"" for tag in tags]
    raise AssertionError("unreachable")


def _fence_base(lock_key: str) -> bytes:
    """The lock key, braces replaced, so the fence keys' own hash tags are the ones that count."""
    return lock_key.encode("utf-8").replace(b"{", b"(").replace(b"}", b")")


@functools.lru_cache(maxsize=8)
def _fence_keys(lock_key: str) -> list[bytes]:
    base = _fence_base(lock_key) + b":fence:{"
    return [base + tag + b"}" for tag in _slot_tags()]


def _fence_key(lock_key: str, slot: int) -> bytes:
    """The key holding the newest fencing token seen for ``lock_key`` in ``slot``; it moves
    with its slot when the slot migrates, and reaches a replica before a claim counts."""
    return _fence_keys(lock_key)[slot]


def _set_each(pairs: list[bytes], cluster: RedisCluster) -> None:
    for pair in pairs:
        key, value = unpack_arguments(pair, 2)
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
