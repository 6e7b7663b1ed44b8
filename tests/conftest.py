"""Fixtures shared by the whole suite: real MariaDB, Redis and sshd, each test isolated.

Every MariaDB test gets a database of its own and every Redis test a key namespace of its own,
both removed afterwards, so tests can run beside each other and beside real data.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pymysql
import pytest
import redis

import autoops
from _support.proxy import TcpProxy
from _support.redis_topologies import (
    RedisClusterTopology,
    SentinelTopology,
    redis_cluster,
    redis_sentinel,
    scratch_client,
)
from _support.services import (
    MYSQL_ADMIN_URL,
    REDIS_URL,
    _unavailable,
    admin_connection,
    require_program,
    require_tcp,
)
from _support.sshd import SSHD, SshServer, keygen, make_server


@pytest.fixture(autouse=True)
def _no_retry_sleep_leak() -> Iterator[None]:
    """Tests that switch retry testing mode on must not leak it into the next test."""
    yield
    autoops.set_testing(False)


@pytest.fixture
def mysql_admin() -> Iterator[pymysql.connections.Connection[pymysql.cursors.Cursor]]:
    """A raw pymysql connection with admin rights, for KILL and for checking behind the client."""
    require_tcp("MariaDB", MYSQL_ADMIN_URL)
    connection = admin_connection()
    yield connection
    connection.close()


@pytest.fixture
def mysql_url(mysql_admin: pymysql.connections.Connection[pymysql.cursors.Cursor]) -> Iterator[str]:
    """The URL of a fresh, empty database that is dropped after the test."""
    name = f"aot_{uuid.uuid4().hex[:12]}"
    with mysql_admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    parts = urlsplit(MYSQL_ADMIN_URL)
    yield f"{parts.scheme}://{parts.netloc}/{name}"
    with mysql_admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def mysql_db(mysql_url: str) -> Iterator[autoops.DbClient]:
    client = autoops.DbClient.from_url(mysql_url)
    yield client
    client.close()


@pytest.fixture
def redis_raw() -> Iterator[redis.Redis]:
    """A plain redis-py client on the test server, for checking behind the CacheClient."""
    require_tcp("Redis", REDIS_URL)
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def redis_namespace(redis_raw: redis.Redis) -> Iterator[str]:
    """A key namespace of this test's own; every key under it is removed afterwards."""
    namespace = f"aot:{uuid.uuid4().hex[:12]}"
    yield namespace
    keys = list(redis_raw.scan_iter(match=f"{namespace}:*", count=1000))
    for start in range(0, len(keys), 1000):
        redis_raw.unlink(*keys[start : start + 1000])


@pytest.fixture
def redis_url() -> str:
    require_tcp("Redis", REDIS_URL)
    return REDIS_URL


@pytest.fixture
def cache(redis_url: str, redis_namespace: str) -> Iterator[autoops.CacheClient]:
    client = autoops.CacheClient.from_url(redis_url, namespace=redis_namespace)
    yield client
    client.close()


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[[str, int], TcpProxy]]:
    """Make proxies to a host and port; all are closed after the test."""
    proxies: list[TcpProxy] = []

    def make(host: str, port: int) -> TcpProxy:
        proxy = TcpProxy(host, port)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture(scope="session")
def ssh_client_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ssh-client") / "id_ed25519"
    keygen(path)
    return path


@pytest.fixture
def sshd_factory(
    tmp_path_factory: pytest.TempPathFactory, ssh_client_key: Path
) -> Iterator[Callable[[], SshServer]]:
    """Start real sshd instances on free loopback ports; each is a separate test "host"."""
    require_program(SSHD, "openssh-server")
    servers: list[SshServer] = []

    def start() -> SshServer:
        server = make_server(tmp_path_factory.mktemp("sshd"), ssh_client_key)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sshd(sshd_factory: Callable[[], SshServer]) -> SshServer:
    return sshd_factory()


@pytest.fixture(scope="session")
def redis_cluster_topology(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterTopology]:
    """A private 6-node Redis Cluster (3 masters, 3 replicas), started once per session."""
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as topology:
        yield topology


@pytest.fixture(scope="session")
def redis_sentinel_topology(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SentinelTopology]:
    """A private master + 2 replicas + 3 sentinels, started once per session."""
    with redis_sentinel(tmp_path_factory.mktemp("redis-sentinel")) as topology:
        yield topology


@pytest.fixture
def cluster(redis_cluster_topology: RedisClusterTopology) -> Iterator[autoops.CacheClient]:
    """A client of the private cluster (healthy first) under a namespace of its own."""
    redis_cluster_topology.wait_healthy()
    with scratch_client(redis_cluster_topology.url()) as client:
        yield client


@pytest.fixture
def sentinel(redis_sentinel_topology: SentinelTopology) -> Iterator[autoops.CacheClient]:
    """A client of the private Sentinel set (settled first) under a namespace of its own."""
    redis_sentinel_topology.wait_settled()
    with scratch_client(redis_sentinel_topology.url()) as client:
        yield client


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for this test and unmounted afterwards."""
    if os.geteuid() != 0:
        _unavailable("mounting a small tmpfs needs root")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount_point)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True, capture_output=True)
