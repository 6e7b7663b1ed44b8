"""Each check against the real thing: OK paths and forced WARNING/CRITICAL paths. A check that
also measures on an event loop (HTTP, TCP, a single Redis) is tested both ways."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pymysql
import pytest
import redis

from _support.certs import make_server_tls
from _support.monitor_servers import SilentServer, WebServer, make_certificate
from _support.proxy import TcpProxy
from _support.services import redis_server
from _support.sshd import SshServer, free_port
from autoops import (
    Check,
    CheckResult,
    CheckStatus,
    ConfigError,
    HostCheck,
    HttpCheck,
    MySQLCheck,
    RedisCheck,
    TcpCheck,
)
from autoops._ssh import SshOptions

Run = Callable[..., CheckResult]


@pytest.fixture(params=["thread", "event loop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Check.run(), or Check.run_async() on an event loop of its own (how run_checks() runs a
    check that measures without blocking)."""
    if request.param == "thread":
        return lambda check, state=None: check.run(state)

    def on_a_loop(check: Check, state: dict[str, object] | None = None) -> CheckResult:
        assert check.measures_async
        return asyncio.run(check.run_async(state))

    return on_a_loop


# --- MySQL -------------------------------------------------------------------------------------


def test_mysql_ok_reports_latency_connections_and_not_a_replica(mysql_url: str) -> None:
    result = MySQLCheck("db", mysql_url).run()
    assert result.status is CheckStatus.OK, result.summary
    labels = {metric.label for metric in result.metrics}
    assert {"latency", "connect_time", "connections", "slow_queries"} <= labels
    assert "not a replica" in result.summary


def test_mysql_connections_over_a_tight_threshold_warn(mysql_url: str) -> None:
    result = MySQLCheck("db", mysql_url, thresholds={"connections": ("0", None)}).run()
    assert result.status is CheckStatus.WARNING
    assert "connections" in result.summary
    assert "(warning 0)" in result.summary


def test_mysql_slow_queries_are_a_rate_since_the_previous_run(
    mysql_url: str, mysql_admin: pymysql.connections.Connection[pymysql.cursors.Cursor]
) -> None:
    check = MySQLCheck("db", mysql_url, thresholds={"slow_queries_rate": ("0", None)})
    state: dict[str, object] = {}
    first = check.run(state)
    assert "rates from the next run on" in first.summary
    with mysql_admin.cursor() as cursor:
        # long_query_time 0 makes every statement of this session count in Slow_queries.
        cursor.execute("SET SESSION long_query_time = 0")
        for _ in range(5):
            cursor.execute("SELECT 1")
        cursor.execute("SET SESSION long_query_time = 10")
    second = check.run(state)
    rate = next(metric for metric in second.metrics if metric.label == "slow_queries_rate")
    assert rate.value > 0
    assert second.status is CheckStatus.WARNING
    # The summary speaks in the metric's and the threshold's unit: per second.
    assert f"{rate.value:.2f} slow queries/s (warning 0)" in second.summary


def test_mysql_aborted_connects_count_failed_logins(mysql_url: str) -> None:
    check = MySQLCheck("db", mysql_url)
    state: dict[str, object] = {}
    check.run(state)
    parts = urlsplit(mysql_url)
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(
            host=parts.hostname,
            port=parts.port or 3306,
            user="autoops_nobody",
            password="wrong",
            connect_timeout=5,
        )
    second = check.run(state)
    rate = next(metric for metric in second.metrics if metric.label == "aborted_connects_rate")
    assert rate.value > 0


def test_mysql_behind_a_refusing_proxy_is_critical_and_says_where(
    mysql_url: str, tcp_proxy: Callable[[str, int], TcpProxy]
) -> None:
    parts = urlsplit(mysql_url)
    proxy = tcp_proxy(parts.hostname or "127.0.0.1", parts.port or 3306)
    proxy.refuse()
    result = MySQLCheck("db", f"mysql://root@127.0.0.1:{proxy.port}/", timeout=2).run()
    assert result.status is CheckStatus.CRITICAL
    assert f"127.0.0.1:{proxy.port}" in result.summary


def test_a_hung_mysql_is_critical_within_the_timeout() -> None:
    silent = SilentServer()
    try:
        started = time.monotonic()
        result = MySQLCheck("db", f"mysql://root@127.0.0.1:{silent.port}/", timeout=1).run()
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert result.status is CheckStatus.CRITICAL
    assert elapsed < 5


def test_the_password_never_shows_in_a_failing_check(mysql_url: str) -> None:
    parts = urlsplit(mysql_url)
    url = f"mysql://root:Sup3rSecret@{parts.hostname}:{parts.port}/"
    result = MySQLCheck("db", url).run()
    assert result.status is CheckStatus.CRITICAL
    assert "Sup3rSecret" not in result.nagios_line()


def test_mysql_and_host_checks_measure_in_a_thread(mysql_url: str) -> None:
    check = MySQLCheck("db", mysql_url)
    assert not check.measures_async
    with pytest.raises(NotImplementedError, match="measures in a thread"):
        asyncio.run(check.measure_async(None))  # type: ignore[arg-type]
    assert not RedisCheck("cluster", "redis+cluster://127.0.0.1:7000").measures_async
    assert RedisCheck("one", "redis://127.0.0.1:6379/0").measures_async


def test_a_url_that_is_not_mysql_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="mysql://"):
        MySQLCheck("db", "sqlite:///x.db")


# --- Redis -------------------------------------------------------------------------------------


def test_redis_ok_says_when_there_is_no_maxmemory(redis_url: str, run: Run) -> None:
    result = run(RedisCheck("cache", redis_url))
    assert result.status is CheckStatus.OK, result.summary
    assert "no maxmemory limit" in result.summary
    assert "role master" in result.summary


def test_redis_memory_near_maxmemory_is_critical(tmp_path: Path, run: Run) -> None:
    with redis_server(tmp_path) as port:
        client = redis.Redis(port=port)
        client.set("ballast", b"x" * 1_000_000)
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", str(int(used * 1.02)))
        result = run(RedisCheck("cache", f"redis://127.0.0.1:{port}/0"))
        client.close()
    assert result.status is CheckStatus.CRITICAL, result.summary
    assert "of maxmemory" in result.summary


def test_redis_hit_ratio_is_measured_since_the_previous_run(tmp_path: Path, run: Run) -> None:
    with redis_server(tmp_path) as port:
        client = redis.Redis(port=port)
        check = RedisCheck(
            "cache", f"redis://127.0.0.1:{port}/0", thresholds={"hit_ratio": ("90:", "50:")}
        )
        state: dict[str, object] = {}
        client.set("present", 1)
        for _ in range(9):
            client.get("present")
        client.get("absent")
        run(check, state)
        for _ in range(3):
            client.get("absent")
        client.get("present")
        second = run(check, state)
        client.close()
    ratio = next(metric for metric in second.metrics if metric.label == "hit_ratio")
    assert ratio.value == pytest.approx(25.0)
    assert second.status is CheckStatus.CRITICAL


def test_a_replica_with_its_link_up_is_ok(tmp_path: Path, run: Run) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    with (
        redis_server(tmp_path / "p") as primary,
        redis_server(tmp_path / "r", "--replicaof", "127.0.0.1", str(primary)) as replica,
    ):
        client = redis.Redis(port=replica)
        deadline = time.monotonic() + 10
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica never linked"
            time.sleep(0.05)
        client.close()
        result = run(RedisCheck("replica", f"redis://127.0.0.1:{replica}/0"))
    assert result.status is CheckStatus.OK, result.summary
    assert f"replica of 127.0.0.1:{primary}, link up" in result.summary


def test_a_replica_whose_source_is_gone_is_critical(tmp_path: Path, run: Run) -> None:
    nobody = free_port()
    with redis_server(tmp_path, "--replicaof", "127.0.0.1", str(nobody)) as replica:
        result = run(RedisCheck("replica", f"redis://127.0.0.1:{replica}/0"))
    assert result.status is CheckStatus.CRITICAL
    assert "replica link to" in result.summary
    assert "is down" in result.summary


def test_a_failed_background_save_is_critical(tmp_path: Path, run: Run) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with redis_server(data) as port:
        client = redis.Redis(port=port)
        client.set("k", "v")
        # The server's working directory vanishes: the save cannot create its file.
        data.rmdir()
        client.bgsave()
        deadline = time.monotonic() + 10
        while client.info("persistence")["rdb_last_bgsave_status"] == "ok":
            assert time.monotonic() < deadline, "bgsave never failed"
            time.sleep(0.05)
        result = run(RedisCheck("cache", f"redis://127.0.0.1:{port}/0"))
        client.close()
    assert result.status is CheckStatus.CRITICAL
    assert "last background save failed (err)" in result.summary


def test_redis_behind_a_password_and_tls_is_ok_and_a_wrong_password_critical(
    tmp_path: Path, run: Run
) -> None:
    tls = make_server_tls(tmp_path / "tls")
    with redis_server(tmp_path, tls=tls, password="s3cret-Pw") as port:
        base = f"127.0.0.1:{port}/0?ssl_ca_certs={tls.ca_file}"
        good = run(RedisCheck("cache", f"rediss://:s3cret-Pw@{base}", timeout=5))
        bad = run(RedisCheck("cache", f"rediss://:wrong-Pw@{base}", timeout=5))
    assert good.status is CheckStatus.OK, good.summary
    assert bad.status is CheckStatus.CRITICAL, bad.summary
    assert "refused the credentials" in bad.summary
    assert "wrong-Pw" not in bad.summary


def test_redis_over_a_unix_socket_is_ok(tmp_path: Path, run: Run) -> None:
    socket_path = tmp_path / "redis.sock"
    with redis_server(tmp_path, "--unixsocket", str(socket_path), "--unixsocketperm", "700"):
        result = run(RedisCheck("cache", f"unix://{socket_path}?db=0"))
    assert result.status is CheckStatus.OK, result.summary
    assert "PING" in result.summary


def test_redis_down_is_critical(run: Run) -> None:
    result = run(RedisCheck("cache", f"redis://127.0.0.1:{free_port()}/0", timeout=2))
    assert result.status is CheckStatus.CRITICAL
    assert "cannot reach Redis" in result.summary


# --- Host over SSH -------------------------------------------------------------------------------


def fake_systemctl(directory: Path) -> Path:
    """This container has no systemd: a stand-in that knows nginx as active, others inactive."""
    path = directory / "systemctl"
    path.write_text(
        '#!/bin/sh\n[ "$1" = is-active ] || exit 2\n[ "$2" = -- ] && shift\n'
        'case "$2" in nginx) echo active;; *) echo inactive; exit 3;; esac\n'
    )
    path.chmod(0o755)
    return path


def host_check(sshd: SshServer, tmp_path: Path, **options: object) -> HostCheck:
    ssh = SshOptions(key_filename=str(sshd.client_key), known_hosts=str(sshd.known_hosts))
    return HostCheck(
        "host",
        sshd.address,
        ssh=ssh,
        systemctl=str(fake_systemctl(tmp_path)),
        timeout=10,
        **options,  # type: ignore[arg-type]
    )


def test_host_ok_reports_disks_load_memory_and_active_services(
    sshd: SshServer, tmp_path: Path
) -> None:
    check = host_check(
        sshd,
        tmp_path,
        services=["nginx"],
        # The shared test machine's own disk and load must not decide this test.
        thresholds={"disk": ("", ""), "inodes": ("", ""), "load_per_core": ("", "")},
    )
    result = check.run()
    assert result.status is CheckStatus.OK, result.summary
    labels = {metric.label for metric in result.metrics}
    assert "disk /" in labels
    assert {"load_per_core", "memory_available"} <= labels
    assert "nginx active" in result.summary


def test_an_inactive_service_is_critical(sshd: SshServer, tmp_path: Path) -> None:
    result = host_check(sshd, tmp_path, services=["nginx", "postgresql"]).run()
    assert result.status is CheckStatus.CRITICAL
    assert "service postgresql is inactive" in result.summary


def test_a_disk_over_a_tight_threshold_warns(sshd: SshServer, tmp_path: Path) -> None:
    # The load is unjudged here: a busy test machine must not turn the disk's WARNING CRITICAL.
    thresholds = {"disk": ("0", ""), "load_per_core": ("", "")}
    result = host_check(sshd, tmp_path, mounts=["/"], thresholds=thresholds).run()
    assert result.status is CheckStatus.WARNING
    assert "/ " in result.summary


def test_a_missing_mount_is_critical(sshd: SshServer, tmp_path: Path) -> None:
    result = host_check(sshd, tmp_path, mounts=["/no/such/mount"]).run()
    assert result.status is CheckStatus.CRITICAL
    assert "mount /no/such/mount not found" in result.summary


def test_an_unreachable_host_is_critical(sshd: SshServer, tmp_path: Path) -> None:
    check = host_check(sshd, tmp_path)
    sshd.stop()
    result = check.run()
    assert result.status is CheckStatus.CRITICAL
    assert "SSH" in result.summary


# --- HTTP and TCP --------------------------------------------------------------------------------


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[WebServer, Path]]:
    cert, key = make_certificate(tmp_path, days=90)
    server = WebServer((cert, key))
    server.routes["/health"] = (200, b"status: healthy")
    server.routes["/broken"] = (500, b"oops")
    yield server, cert
    server.close()


def test_https_ok_checks_status_body_and_certificate(
    https_server: tuple[WebServer, Path], run: Run
) -> None:
    server, cert = https_server
    result = run(HttpCheck("web", server.url("/health"), contains="healthy", ca_file=str(cert)))
    assert result.status is CheckStatus.OK, result.summary
    days = next(metric for metric in result.metrics if metric.label == "certificate_days")
    assert 89 < days.value <= 90


def test_a_certificate_close_to_expiry_is_critical(tmp_path: Path, run: Run) -> None:
    cert, key = make_certificate(tmp_path, days=5)
    server = WebServer((cert, key))
    server.routes["/"] = (200, b"ok")
    try:
        result = run(HttpCheck("web", server.url("/"), ca_file=str(cert)))
    finally:
        server.close()
    assert result.status is CheckStatus.CRITICAL
    assert "certificate expires in 5 days" in result.summary


def test_an_unverifiable_certificate_is_critical(
    https_server: tuple[WebServer, Path], run: Run
) -> None:
    server, _ = https_server
    result = run(HttpCheck("web", server.url("/health")))
    assert result.status is CheckStatus.CRITICAL
    assert "CERTIFICATE_VERIFY_FAILED" in result.summary


def test_without_verification_the_expiry_is_still_read(
    https_server: tuple[WebServer, Path], run: Run
) -> None:
    server, _ = https_server
    result = run(HttpCheck("web", server.url("/health"), verify=False))
    assert result.status is CheckStatus.OK
    assert any(metric.label == "certificate_days" for metric in result.metrics)


def test_a_server_error_is_critical(https_server: tuple[WebServer, Path], run: Run) -> None:
    server, cert = https_server
    result = run(HttpCheck("web", server.url("/broken"), ca_file=str(cert)))
    assert result.status is CheckStatus.CRITICAL
    assert "HTTP 500 Internal Server Error (expected 2xx or 3xx)" in result.summary


def test_a_missing_body_text_is_critical(https_server: tuple[WebServer, Path], run: Run) -> None:
    server, cert = https_server
    result = run(HttpCheck("web", server.url("/health"), contains="ready", ca_file=str(cert)))
    assert result.status is CheckStatus.CRITICAL
    assert "body lacks 'ready'" in result.summary


def test_a_hung_web_server_is_critical_within_the_timeout(run: Run) -> None:
    silent = SilentServer()
    try:
        started = time.monotonic()
        result = run(HttpCheck("web", f"http://127.0.0.1:{silent.port}/", timeout=0.5))
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert result.status is CheckStatus.CRITICAL
    assert "timed out" in result.summary
    assert elapsed < 3


def test_an_open_tcp_port_is_ok(run: Run) -> None:
    silent = SilentServer()
    try:
        result = run(TcpCheck("port", "127.0.0.1", silent.port))
    finally:
        silent.close()
    assert result.status is CheckStatus.OK


def test_a_closed_tcp_port_is_critical(run: Run) -> None:
    result = run(TcpCheck("port", "127.0.0.1", free_port()))
    assert result.status is CheckStatus.CRITICAL
    assert "refused" in result.summary


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: HttpCheck("web", "ftp://x/"), "url must look like"),
        (lambda: HttpCheck("web", "http://x/", expect_status=[999]), "not an HTTP status"),
        (lambda: TcpCheck("port", "x", 0), "port must be"),
        (lambda: TcpCheck("bad name", "x", 1), "bad check name"),
        (lambda: TcpCheck("port", "x", 1, thresholds={"nope": ("1", "2")}), "unknown threshold"),
        (lambda: TcpCheck("port", "x", 1, thresholds={"latency": ("2:1", None)}), "start above"),
        (lambda: TcpCheck("port", "x", 1, timeout=0), "timeout"),
    ],
)
def test_bad_check_settings_are_config_errors(factory: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        factory()
