"""Private Redis topologies for the scale-out tests: a 6-node Cluster and a Sentinel group.

Each is started once per test session (the machine has two cores: starting six servers per test
would dominate the run), on free loopback ports, with its data in a temporary directory, and
stopped by the PIDs it started. Tests that kill a node call :meth:`restart` so the next test
finds every node up again (a killed master comes back as a replica of the node that replaced it).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

import autoops
from _support.certs import ServerTls
from _support.services import require_program, wait_for_port
from _support.sshd import free_port

CLUSTER_NODE_TIMEOUT_MS = 1500
SENTINEL_DOWN_AFTER_MS = 1000


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randrange(20_000, 29_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class _Server:
    port: int
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    # A TLS-only server (no plaintext port) and its password, for the checking client.
    tls: ServerTls | None = None
    password: str | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, self.process, "redis-server", seconds=15)

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing flushed, no goodbye to the cluster."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self) -> redis.Redis:
        if self.tls is None:
            return redis.Redis(
                host="127.0.0.1", port=self.port, socket_timeout=5, password=self.password
            )
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=5,
            password=self.password,
            ssl=True,
            ssl_ca_certs=str(self.tls.ca_file),
        )


def tls_lines(tls: ServerTls, port: int) -> list[str]:
    """Config lines for a TLS-only server on ``port``: no plaintext port, TLS between servers
    too, no client certificate asked for (the test certificate is for servers)."""
    return [
        "port 0",
        f"tls-port {port}",
        f"tls-cert-file {tls.cert_file}",
        f"tls-key-file {tls.key_file}",
        f"tls-ca-cert-file {tls.ca_file}",
        "tls-auth-clients no",
        "tls-replication yes",
    ]


def _query(tls: ServerTls | None) -> str:
    return f"?ssl_ca_certs={quote(str(tls.ca_file), safe='')}" if tls else ""


def _userinfo(password: str | None) -> str:
    return f":{quote(password, safe='')}@" if password else ""


@dataclass
class RedisClusterTopology:
    """Cluster masters (three in the tests), each with its replicas (one in the tests), made by
    ``redis-cli --cluster create``."""

    directory: Path
    nodes: list[_Server] = field(default_factory=list)
    master_count: int = 3
    tls: ServerTls | None = None
    password: str | None = None

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def url(self, *, seeds: int = 2) -> str:
        """``redis+cluster://`` (``rediss+cluster://`` with TLS) with the first ``seeds`` nodes
        as seeds."""
        scheme = "rediss+cluster" if self.tls else "redis+cluster"
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports[:seeds])
        return f"{scheme}://{_userinfo(self.password)}{hosts}{_query(self.tls)}"

    def node(self, port: int) -> _Server:
        return next(node for node in self.nodes if node.port == port)

    def masters(self) -> list[int]:
        """The ports of the nodes that are masters now, as a live node sees it."""
        return sorted(
            int(address.rsplit(":", 1)[1].split("@")[0])
            for address, flags in self._cluster_nodes().items()
            if "master" in flags and "fail" not in flags
        )

    def master_of_key(self, key: str) -> int:
        """The port of the master that serves ``key`` now."""
        for node in self.nodes:
            if node.running:
                with contextlib.closing(node.client()) as client:
                    slot = client.cluster("KEYSLOT", key)
                    for start, end, master, *_ in client.cluster("SLOTS"):
                        if start <= slot <= end:
                            return int(master[1])
        raise RuntimeError("no running node")

    def replicas_of(self, port: int) -> list[int]:
        """The ports of the replicas of the master on ``port``."""
        with contextlib.closing(self.node(port).client()) as client:
            table: Any = client.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
            master_id = client.cluster("MYID")
        if isinstance(master_id, bytes):
            master_id = master_id.decode()
        return [
            int(address.rsplit(":", 1)[1].split("@")[0])
            for address, info in table.items()
            if info.get("master_id") == master_id and "fail" not in str(info.get("flags"))
        ]

    def _cluster_nodes(self) -> dict[str, str]:
        for node in self.nodes:
            if node.running:
                with contextlib.closing(node.client()) as client:
                    text = client.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
                if isinstance(text, bytes):
                    text = text.decode()
                if isinstance(text, dict):
                    return {address: str(info.get("flags")) for address, info in text.items()}
                return {line.split()[1]: line.split()[2] for line in str(text).splitlines() if line}
        raise RuntimeError("no running node")

    def wait_healthy(self, seconds: float = 60) -> None:
        """Wait until every running node says ``cluster_state:ok``, every master has a replica
        again (after a restart the old master rejoins as one) and every replica's link is up."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                if self._healthy():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                nodes = self._cluster_nodes()
                raise RuntimeError(f"the test cluster did not become healthy: {nodes}")
            time.sleep(0.2)

    def _healthy(self) -> bool:
        for node in self.nodes:
            if not node.running:
                return False
            with contextlib.closing(node.client()) as client:
                if client.cluster("INFO").get("cluster_state") != "ok":
                    return False
                # A replica still in its first full sync holds nothing yet: a master killed
                # then would lose what it had acknowledged.
                replication = client.info("replication")
                if replication.get("role") == "slave" and (
                    replication.get("master_link_status") != "up"
                ):
                    return False
        flags = self._cluster_nodes().values()
        masters = sum("master" in flag for flag in flags)
        return not any("fail" in flag for flag in flags) and masters == self.master_count

    def kill(self, port: int) -> None:
        self.node(port).kill()

    def restart(self, port: int) -> None:
        """Start a killed node again with its nodes.conf, so it rejoins the cluster."""
        node = self.node(port)
        if not node.running:
            node.start()

    def flush(self) -> None:
        for port in self.masters():
            with contextlib.closing(self.node(port).client()) as client:
                client.flushall()


@contextlib.contextmanager
def redis_cluster(
    directory: Path,
    *,
    node_timeout_ms: int = CLUSTER_NODE_TIMEOUT_MS,
    replicas: int = 1,
    masters: int = 3,
    tls: ServerTls | None = None,
    password: str | None = None,
) -> Iterator[RedisClusterTopology]:
    """Start ``masters`` masters (at least 3, as redis-cli requires) and ``replicas`` replicas
    of each, cluster-enabled, join them with
    ``redis-cli --cluster create ... --cluster-replicas N``, wait for ``cluster_state:ok``;
    stop them afterwards. The tests' short ``node_timeout_ms`` makes failovers quick; a
    benchmark passes Redis's default (15 s), so a loaded machine does not fail nodes over
    mid-measurement. With ``tls`` every node is TLS-only, the cluster bus and replication
    too; ``password`` is required of clients and used between servers (both are in each node's
    config file, never in an argv)."""
    require_program("/usr/bin/redis-cli", "redis-tools")
    topology = RedisClusterTopology(directory, master_count=masters, tls=tls, password=password)
    try:
        for _ in range(masters * (1 + replicas)):
            port = free_cluster_port()
            node_dir = directory / f"node-{port}"
            node_dir.mkdir()
            config = node_dir / "redis.conf"
            lines = [*tls_lines(tls, port), "tls-cluster yes"] if tls else [f"port {port}"]
            if password:
                lines += [f'requirepass "{password}"', f'masterauth "{password}"']
            config.write_text("\n".join(lines) + "\n")
            config.chmod(0o600)
            server = _Server(
                port,
                [
                    "redis-server",
                    str(config),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(node_dir / "nodes.conf"),
                    "--cluster-node-timeout", str(node_timeout_ms),
                    "--cluster-replica-validity-factor", "0",
                    "--repl-diskless-sync-delay", "0",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(node_dir),
                ],
                tls=tls,
                password=password,
            )  # fmt: skip
            server.start()
            topology.nodes.append(server)
        tls_options = ["--tls", "--cacert", str(tls.ca_file)] if tls else []
        subprocess.run(
            [
                "redis-cli", *tls_options, "--cluster", "create",
                *(f"127.0.0.1:{port}" for port in topology.ports),
                "--cluster-replicas", str(replicas), "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
            env={**os.environ, "REDISCLI_AUTH": password} if password else None,
        )  # fmt: skip
        topology.wait_healthy()
        yield topology
    finally:
        for server in topology.nodes:
            server.stop()


@dataclass
class SentinelTopology:
    """A master, two replicas and three sentinels watching them as ``mymaster`` (quorum 2)."""

    directory: Path
    name: str = "mymaster"
    servers: list[_Server] = field(default_factory=list)
    sentinels: list[_Server] = field(default_factory=list)
    tls: ServerTls | None = None
    password: str | None = None

    def url(self, *, db: int = 0, scheme: str | None = None) -> str:
        scheme = scheme or ("rediss+sentinel" if self.tls else "redis+sentinel")
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"{scheme}://{_userinfo(self.password)}{hosts}/{self.name}/{db}{_query(self.tls)}"

    def master_port(self) -> int:
        """The master's port as the sentinels agree on it now."""
        for sentinel in self.sentinels:
            if sentinel.running:
                with contextlib.closing(sentinel.client()) as client:
                    address: Any = client.sentinel_get_master_addr_by_name(self.name)
                    return int(address[1])
        raise RuntimeError("no sentinel running")

    def server(self, port: int) -> _Server:
        return next(server for server in self.servers if server.port == port)

    def failover(self, seconds: float = 30) -> int:
        """``SENTINEL FAILOVER`` and wait until a replica is master; returns its port."""
        before = self.master_port()
        with contextlib.closing(self.sentinels[0].client()) as client:
            client.execute_command("SENTINEL FAILOVER", self.name)  # type: ignore[no-untyped-call]
        return self.wait_new_master(before, seconds)

    def wait_new_master(self, old: int, seconds: float = 30) -> int:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            port = self.master_port()
            if port != old:
                with (
                    contextlib.closing(self.server(port).client()) as client,
                    contextlib.suppress(redis.RedisError),
                ):
                    if client.info("replication")["role"] == "master":
                        return port
            time.sleep(0.1)
        raise RuntimeError("the sentinels did not promote a replica in time")

    def wait_settled(self, seconds: float = 30) -> None:
        """Wait until every server runs, the agreed master is master and has two replicas
        online."""
        deadline = time.monotonic() + seconds
        while True:
            with contextlib.suppress(redis.RedisError, RuntimeError):
                port = self.master_port()
                with contextlib.closing(self.server(port).client()) as client:
                    info = client.info("replication")
                if info["role"] == "master" and info.get("connected_slaves") == 2:
                    online = [
                        value for name, value in info.items()
                        if name.startswith("slave") and isinstance(value, dict)
                        and value.get("state") == "online"
                    ]  # fmt: skip
                    if len(online) == 2:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinel group did not settle")
            time.sleep(0.2)

    def restart(self, port: int) -> None:
        server = self.server(port)
        if not server.running:
            server.start()

    def flush(self) -> None:
        with contextlib.closing(self.server(self.master_port()).client()) as client:
            client.flushall()


@contextlib.contextmanager
def redis_sentinel(
    directory: Path, *, tls: ServerTls | None = None, password: str | None = None
) -> Iterator[SentinelTopology]:
    """Start a master, two replicas of it and three sentinels (quorum 2, down after 1 s). With
    ``tls`` every server and sentinel is TLS-only, replication too; ``password`` is required of
    the master's clients (the sentinels ask none), and given to the sentinels and replicas in
    their config files."""
    topology = SentinelTopology(directory, tls=tls, password=password)
    try:
        master_port = free_port()
        for index in range(3):
            port = master_port if index == 0 else free_port()
            server_dir = directory / f"redis-{port}"
            server_dir.mkdir()
            # Each server's config file says whom it replicates; a sentinel rewrites it on
            # failover, so a restarted server follows the new master.
            config = server_dir / "redis.conf"
            lines = [
                *(tls_lines(tls, port) if tls else [f"port {port}"]),
                "bind 127.0.0.1", 'save ""', "appendonly no",
                f"dir {server_dir}", "replica-serve-stale-data yes",
                "repl-diskless-sync-delay 0",
            ]  # fmt: skip
            if password:
                lines += [f'requirepass "{password}"', f'masterauth "{password}"']
            if index:
                lines.append(f"replicaof 127.0.0.1 {master_port}")
            config.write_text("\n".join(lines) + "\n")
            config.chmod(0o600)
            server = _Server(port, ["redis-server", str(config)], tls=tls, password=password)
            server.start()
            topology.servers.append(server)
        for _ in range(3):
            port = free_port()
            config = directory / f"sentinel-{port}.conf"
            lines = [
                *(tls_lines(tls, port) if tls else [f"port {port}"]),
                "bind 127.0.0.1",
                f"dir {directory}",
                f"sentinel monitor {topology.name} 127.0.0.1 {master_port} 2",
                f"sentinel down-after-milliseconds {topology.name} {SENTINEL_DOWN_AFTER_MS}",
                f"sentinel failover-timeout {topology.name} 10000",
                f"sentinel parallel-syncs {topology.name} 2",
            ]
            if password:
                lines.append(f'sentinel auth-pass {topology.name} "{password}"')
            config.write_text("\n".join(lines) + "\n")
            config.chmod(0o600)
            sentinel = _Server(port, ["redis-server", str(config), "--sentinel"], tls=tls)
            sentinel.start()
            topology.sentinels.append(sentinel)
        _wait_sentinels_see_replicas(topology)
        topology.wait_settled()
        yield topology
    finally:
        for server in [*topology.sentinels, *topology.servers]:
            server.stop()


def _wait_sentinels_see_replicas(topology: SentinelTopology, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        ready = 0
        for sentinel in topology.sentinels:
            with (
                contextlib.closing(sentinel.client()) as client,
                contextlib.suppress(redis.RedisError),
            ):
                master: Any = client.sentinel_master(topology.name)
                if (
                    int(master.get("num-slaves", 0)) == 2
                    and int(master.get("num-other-sentinels", 0)) == 2
                ):
                    ready += 1
        if ready == 3:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the sentinels did not discover each other and the replicas")
        time.sleep(0.2)


#: A failover takes a few seconds (node timeout 1.5 s, then an election); under load more.
PATIENT = autoops.RetryPolicy(attempts=60, timeout=90.0, wait_initial=0.1, wait_max=1.0)


@contextlib.contextmanager
def scratch_client(url: str) -> Iterator[autoops.CacheClient]:
    """A client of ``url`` under a namespace of its own, patient through failovers; its keys
    are removed afterwards (as far as the topology still answers)."""
    client = autoops.CacheClient.from_url(url, f"aot:{uuid.uuid4().hex[:10]}", retry=PATIENT)
    try:
        yield client
    finally:
        with contextlib.suppress(autoops.AutoOpsError):
            client.delete_prefix("")
        client.close()
