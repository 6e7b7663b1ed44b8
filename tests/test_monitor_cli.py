"""autoops-check end to end: config, one line per check, worst status as the exit code, JSON,
the node_exporter textfile and the scrape endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import autoops
from _support.monitor_servers import SilentServer, UnacceptingServer, WebServer
from _support.services import promtool_accepts
from _support.sshd import SshServer, free_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "autoops-check"


def run_check(
    config: Path, *arguments: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTOOPS_CONFIG": str(config), "AUTOOPS_PROGRESS": "0"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def web() -> Iterator[WebServer]:
    server = WebServer()
    server.routes["/"] = (200, b"hello")
    yield server
    server.close()


@pytest.fixture
def config(tmp_path: Path, mysql_url: str, redis_url: str, web: WebServer) -> Path:
    path = tmp_path / "autoops.toml"
    path.write_text(f"""
[monitor]
deadline = 20
state_file = "{tmp_path / "state.json"}"

[monitor.checks.db]
type = "mysql"
url = "{mysql_url}"

[monitor.checks.cache]
type = "redis"
url = "{redis_url}"

[monitor.checks.web]
type = "http"
url = "{web.url("/")}"
contains = "hello"

[monitor.checks.web-latency]
type = "http"
url = "{web.url("/")}"
warning = {{ latency = "0" }}
""")
    return path


def test_every_check_prints_one_line_and_the_worst_status_is_the_exit_code(config: Path) -> None:
    done = run_check(config)
    lines = done.stdout.splitlines()
    assert [line.split(" ")[0] for line in lines] == ["db", "cache", "web", "web-latency"]
    assert lines[0].startswith("db OK: ")
    assert lines[3].startswith("web-latency WARNING: ")
    assert done.returncode == 1, done.stderr


def test_quiet_prints_only_the_checks_that_are_not_ok(config: Path) -> None:
    done = run_check(config, "-q")
    assert [line.split(" ")[0] for line in done.stdout.splitlines()] == ["web-latency"]
    assert done.returncode == 1
    assert run_check(config, "-q", "db", "web").stdout == ""


def test_one_named_check_is_a_plain_nagios_plugin(config: Path) -> None:
    done = run_check(config, "web")
    assert done.returncode == 0
    assert done.stdout.startswith("web OK: HTTP 200")
    assert " | 'latency'=" in done.stdout


def test_json_output(config: Path) -> None:
    done = run_check(config, "--format", "json", "db", "cache")
    document = json.loads(done.stdout)
    assert document["status"] == "OK"
    assert [check["name"] for check in document["checks"]] == ["db", "cache"]


def test_the_textfile_for_node_exporter_passes_promtool(config: Path, tmp_path: Path) -> None:
    textfile = tmp_path / "autoops.prom"
    run_check(config, "--textfile", str(textfile))
    promtool_accepts(textfile.read_bytes())
    assert b'autoops_check_status{check="web-latency",kind="http"} 1.0' in textfile.read_bytes()
    assert b'autoops_check_last_ok_timestamp_seconds{check="db",kind="mysql"}' in (
        textfile.read_bytes()
    )


def test_a_hung_target_is_critical_at_its_timeout_and_the_rest_still_report(
    config: Path,
) -> None:
    silent = SilentServer()
    try:
        with config.open("a") as handle:
            handle.write(f"""
[monitor.checks.hung]
type = "http"
url = "http://127.0.0.1:{silent.port}/"
timeout = 1
""")
        started = time.monotonic()
        done = run_check(config, "db", "hung", "web")
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    lines = done.stdout.splitlines()
    assert lines[0].startswith("db OK")
    assert lines[1].startswith("hung CRITICAL")
    assert lines[2].startswith("web OK")
    assert done.returncode == 2
    assert elapsed < 10


def test_hung_targets_of_every_kind_end_the_command_with_critical_lines(config: Path) -> None:
    silent, unaccepting = SilentServer(), UnacceptingServer()
    try:
        with config.open("a") as handle:
            for name, table in {
                "hung-tcp": f'type = "tcp"\nhost = "127.0.0.1"\nport = {unaccepting.port}',
                "hung-http": f'type = "http"\nurl = "http://127.0.0.1:{silent.port}/"',
                "hung-redis": f'type = "redis"\nurl = "redis://127.0.0.1:{silent.port}/0"',
                "hung-mysql": f'type = "mysql"\nurl = "mysql://root@127.0.0.1:{silent.port}/"',
            }.items():
                handle.write(f"\n[monitor.checks.{name}]\n{table}\ntimeout = 1\n")
        done = run_check(config, "cache", "hung-tcp", "hung-http", "hung-redis", "hung-mysql")
    finally:
        silent.close()
        unaccepting.close()
    lines = done.stdout.splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    assert lines[0].startswith("cache OK")
    assert [line.split()[:2] for line in lines[1:]] == [
        [f"hung-{kind}", "CRITICAL:"] for kind in ("tcp", "http", "redis", "mysql")
    ]
    for line in lines[1:]:
        # Its own timeout error, or the runner's word when a loaded machine delays that.
        assert any(
            words in line for words in ("timed out", "Lost connection", "no answer within")
        ), line


def test_an_unknown_check_name_is_unknown_with_the_known_names(config: Path) -> None:
    done = run_check(config, "nope")
    assert done.returncode == 3
    assert "no check called nope, known: cache, db, web, web-latency" in done.stdout


def test_a_bad_threshold_in_the_config_is_unknown_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "autoops.toml"
    path.write_text(
        '[monitor.checks.web]\ntype = "tcp"\nhost = "x"\nport = 1\ncritical = { latency = "5:1" }\n'
    )
    done = run_check(path)
    assert done.returncode == 3
    assert "web" in done.stdout
    assert "start above its end" in done.stdout


def test_a_usage_error_exits_unknown(config: Path) -> None:
    assert run_check(config, "--format", "xml").returncode == 3


def test_the_metrics_endpoint_runs_the_checks_at_each_scrape(config: Path) -> None:
    port = free_port()
    env = {**os.environ, "AUTOOPS_CONFIG": str(config)}
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--serve", f"127.0.0.1:{port}", "web", "cache"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                    body = reply.read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the endpoint never answered"
                time.sleep(0.1)
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert b'autoops_check_status{check="web",kind="http"} 0.0' in body
    assert b"autoops_redis_latency_seconds" in body
    promtool_accepts(body)


def test_backup_and_sync_checks_come_from_the_config(
    tmp_path: Path, mysql_db: autoops.DbClient, redis_url: str, redis_namespace: str
) -> None:
    cache = autoops.CacheClient.from_url(redis_url, namespace=redis_namespace)
    mysql_db.execute("CREATE TABLE items (id INT PRIMARY KEY, updated_at TIMESTAMP(6) NOT NULL)")
    mysql_db.execute("INSERT INTO items VALUES (1, NOW(6))")
    autoops.CacheSync(
        mysql_db,
        cache,
        table="items",
        key="items:{id}",
        updated_column="updated_at",
        progress=False,
    ).run_once()
    cache.close()
    storage = tmp_path / "backups"
    backup = autoops.Backuper(autoops.LocalStorage(storage), progress=False).backup_mysql(
        mysql_db  # type: ignore[arg-type]
    )
    path = tmp_path / "autoops.toml"
    path.write_text(f"""
[monitor.checks.nightly]
type = "backup"
storage = "{storage}"
sources = ["{backup.source}", "mysql://elsewhere:3306/crm"]

[monitor.checks.items-sync]
type = "sync"
url = "{redis_url}"
namespace = "{redis_namespace}"
sync = "items"
critical = {{ lag = "3600" }}
""")
    done = run_check(path)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("nightly CRITICAL: mysql://elsewhere:3306/crm: no verified")
    assert f"{backup.source}: newest verified successful backup {backup.id}" in lines[0]
    assert lines[1].startswith("items-sync OK: cache holds changes up to")
    assert done.returncode == 2


@pytest.fixture
def every_check_config(
    tmp_path: Path,
    mysql_db: autoops.DbClient,
    mysql_url: str,
    redis_url: str,
    redis_namespace: str,
    web: WebServer,
    sshd: SshServer,
) -> Path:
    """One check of every type, with legal but ugly names, a backup catalogue under a path
    with a space and an accent, and a tiny threshold."""
    cache = autoops.CacheClient.from_url(redis_url, namespace=redis_namespace)
    mysql_db.execute("CREATE TABLE order_items_2fa (id INT PRIMARY KEY, at TIMESTAMP(6) NOT NULL)")
    mysql_db.execute("INSERT INTO order_items_2fa VALUES (1, NOW(6))")
    autoops.CacheSync(
        mysql_db,
        cache,
        table="order_items_2fa",
        key="order-items:{id}",
        updated_column="at",
        progress=False,
    ).run_once()
    cache.close()
    storage = tmp_path / "back ups" / "nächtlich"
    autoops.Backuper(autoops.LocalStorage(storage), progress=False).backup_mysql(
        mysql_db  # type: ignore[arg-type]
    )
    ugly_url = web.url("/?q=a%20b&x=%22y%22;z")
    path = tmp_path / "autoops.toml"
    path.write_text(f"""
[monitor]
deadline = 30

[monitor.checks."db.primary:eu-1"]
type = "mysql"
url = "{mysql_url}"

[monitor.checks.cache_2fa]
type = "redis"
url = "{redis_url}"

[monitor.checks."web-front.example.com"]
type = "http"
url = "{ugly_url}"
warning = {{ latency = "0.00005" }}

[monitor.checks."tcp:5432"]
type = "tcp"
host = "127.0.0.1"
port = {web.server_address[1]}

[monitor.checks."host.local"]
type = "host"
host = "{sshd.address}"
key_filename = "{sshd.client_key}"
known_hosts = "{sshd.known_hosts}"
mounts = ["/"]

[monitor.checks."nightly-backup"]
type = "backup"
storage = "{storage}"
require_verified = false

[monitor.checks."order-items-sync"]
type = "sync"
url = "{redis_url}"
namespace = "{redis_namespace}"
sync = "order_items_2fa"
""")
    return path


def test_a_textfile_of_every_check_type_passes_promtool(
    every_check_config: Path, tmp_path: Path
) -> None:
    textfile = tmp_path / "autoops.prom"

    done = run_check(every_check_config, "--textfile", str(textfile))

    assert len(done.stdout.splitlines()) == 7, done.stdout + done.stderr
    exposition = textfile.read_bytes()
    promtool_accepts(exposition)
    assert b'autoops_backup_age_seconds{check="nightly-backup",source="mysql://' in exposition
    assert b'autoops_check_status{check="db.primary:eu-1",kind="mysql"}' in exposition
    assert b"autoops_sync_lag_seconds" in exposition


def test_a_scrape_of_every_check_type_passes_promtool(every_check_config: Path) -> None:
    port = free_port()
    env = {**os.environ, "AUTOOPS_CONFIG": str(every_check_config)}
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--serve", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                with urllib.request.urlopen(url, timeout=30) as reply:
                    body = reply.read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the endpoint never answered"
                time.sleep(0.1)
    finally:
        process.terminate()
        process.communicate(timeout=10)
    promtool_accepts(body)
    assert b"autoops_backup_age_seconds{" in body


def test_a_tiny_threshold_is_echoed_as_a_plain_number(every_check_config: Path) -> None:
    done = run_check(every_check_config, "web-front.example.com")

    assert "'latency'=" in done.stdout
    assert ";0.00005" in done.stdout
    assert "e-05" not in done.stdout


def test_a_mistyped_backup_storage_is_unknown_and_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "bakcups"
    path = tmp_path / "autoops.toml"
    path.write_text(f'[monitor.checks.nightly]\ntype = "backup"\nstorage = "{missing}"\n')

    done = run_check(path)

    assert done.returncode == 3
    assert done.stdout.startswith(
        f"nightly UNKNOWN: cannot run: the backup catalogue {missing} does not exist"
    )
    assert not missing.exists()


def test_a_refused_http_port_names_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/health?probe=1"
    path = tmp_path / "autoops.toml"
    path.write_text(f'[monitor.checks.web]\ntype = "http"\nurl = "{url}"\n')

    done = run_check(path)

    assert done.returncode == 2
    assert done.stdout.startswith(f"web CRITICAL: {url}: ConnectionRefusedError")


def test_a_summary_never_holds_a_semicolon_which_nagios_would_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "autoops.toml"
    path.write_text(f"""
[monitor.checks.db]
type = "mysql"
url = "mysql://nobody:wrong@127.0.0.1:{free_port()}/shop"
timeout = 2

[monitor.checks.cache]
type = "redis"
url = "redis://127.0.0.1:{free_port()}/0"
timeout = 2
""")
    done = run_check(path)

    assert done.returncode == 2
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        summary = line.split(" | ")[0]
        assert ";" not in summary, line
    assert "127.0.0.1" in lines[0]
    json_done = run_check(path, "--format", "json")
    for check in json.loads(json_done.stdout)["checks"]:
        assert ";" not in check["summary"]


def test_a_configuration_error_in_json_format_is_json_with_status_unknown(tmp_path: Path) -> None:
    path = tmp_path / "autoops.toml"
    path.write_text('[monitor.checks.web]\ntype = "http"\nurl = "ftp://nowhere"\n')

    done = run_check(path, "--format", "json")

    assert done.returncode == 3
    document = json.loads(done.stdout)
    assert document["status"] == "UNKNOWN"
    assert document["exit_code"] == 3
    assert "configuration error" in document["error"]
    assert "url must look like" in document["error"]


@pytest.mark.parametrize(
    "arguments",
    [
        ("--serve", "99999"),
        ("--serve", "127.0.0.1:0"),
        ("--serve", "127.0.0.1:http"),
        ("--deadline", "nan"),
        ("--deadline", "inf"),
        ("--deadline", "-5"),
        ("--deadline", "0"),
    ],
)
def test_a_bad_serve_port_or_deadline_is_unknown_in_one_line(
    tmp_path: Path, web: WebServer, arguments: tuple[str, str]
) -> None:
    config = tmp_path / "autoops.toml"
    config.write_text(f'[monitor.checks.web]\ntype = "http"\nurl = "{web.url("/")}"\n')

    done = run_check(config, *arguments, timeout=30)

    assert done.returncode == 3
    assert done.stdout.count("\n") == 1
    assert done.stdout.startswith("autoops-check UNKNOWN: configuration error: ")
    assert arguments[0] in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
