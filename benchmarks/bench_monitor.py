"""50 checks on loopback (MySQL, Redis, HTTP) through autoops-check: parallel wall time against
the slowest single check, with the serial time for contrast.

Run: .venv/bin/python benchmarks/bench_monitor.py
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from autoops import CheckStatus, HttpCheck, MySQLCheck, RedisCheck, run_checks
from autoops.monitor import Check

MYSQL_URL = os.environ.get("AUTOOPS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/")
REDIS_URL = os.environ.get("AUTOOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent
TARGETS = 50


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 would leave 50 simultaneous connects waiting on SYN retries.
    request_queue_size = 128


class Handler(http.server.BaseHTTPRequestHandler):
    delay = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def make_checks(web_url: str) -> list[Check]:
    checks: list[Check] = []
    for index in range(TARGETS):
        kind = index % 3
        if kind == 0:
            checks.append(MySQLCheck(f"mysql{index}", MYSQL_URL))
        elif kind == 1:
            checks.append(RedisCheck(f"redis{index}", REDIS_URL))
        else:
            checks.append(HttpCheck(f"http{index}", web_url))
    return checks


def config_text(checks: list[Check], web_url: str) -> str:
    lines = ["[monitor]", "deadline = 60", "max_parallel = 50", ""]
    for check in checks:
        lines.append(f"[monitor.checks.{check.name}]")
        if check.kind == "mysql":
            lines += ['type = "mysql"', f'url = "{MYSQL_URL}"']
        elif check.kind == "redis":
            lines += ['type = "redis"', f'url = "{REDIS_URL}"']
        else:
            lines += ['type = "http"', f'url = "{web_url}"']
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    web_url = f"http://127.0.0.1:{server.server_address[1]}/"
    checks = make_checks(web_url)

    # Serial: one check after another, in this process.
    started = time.perf_counter()
    serial = [check.run() for check in checks]
    serial_time = time.perf_counter() - started
    assert all(result.status is not CheckStatus.UNKNOWN for result in serial)

    # Parallel in process: what the command does after start-up.
    started = time.perf_counter()
    parallel = run_checks(checks, max_parallel=TARGETS)
    parallel_time = time.perf_counter() - started
    slowest = max(result.duration for result in parallel)

    # The command end to end (Python start-up and imports included).
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "autoops.toml"
        config.write_text(config_text(checks, web_url))
        env = {**os.environ, "AUTOOPS_CONFIG": str(config)}
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "autoops-check"),
                "--no-notify",
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        command_time = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import autoops.cli.check"], check=True, env=env)
        startup_time = time.perf_counter() - started
    server.shutdown()
    document = json.loads(done.stdout)
    command_slowest = max(check["duration_seconds"] for check in document["checks"])
    not_ok = [
        f"{check['name']} {check['status']}: {check['summary']}"
        for check in document["checks"]
        if check["status"] != "OK"
    ]
    print(
        f"targets: {TARGETS} ({sum(c.kind == 'mysql' for c in checks)} MySQL, "
        f"{sum(c.kind == 'redis' for c in checks)} Redis, "
        f"{sum(c.kind == 'http' for c in checks)} HTTP), exit code {done.returncode}, "
        f"{len(document['checks'])} results"
    )
    print(f"serial, one after another:        {serial_time:8.3f} s")
    print(f"parallel (run_checks):            {parallel_time:8.3f} s")
    print(f"slowest single check in that run: {slowest:8.3f} s")
    print(f"parallel / slowest check:         {parallel_time / slowest:8.2f}x")
    print(f"serial / parallel:                {serial_time / parallel_time:8.2f}x")
    print(f"autoops-check, whole command:     {command_time:8.3f} s")
    print(f"  interpreter + imports alone:    {startup_time:8.3f} s")
    print(f"  its slowest single check:       {command_slowest:8.3f} s")
    overhead = command_time - startup_time - command_slowest
    print(f"  the rest (parallel overhead):   {overhead:8.3f} s")
    for line in not_ok[:3]:
        print(f"  not OK: {line[:150]}")

    # 50 HTTP checks of a target that answers after 100 ms: where running in parallel shows.
    Handler.delay = 0.1
    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    slow_url = f"http://127.0.0.1:{server.server_address[1]}/"
    slow_checks: list[Check] = [HttpCheck(f"far{index}", slow_url) for index in range(TARGETS)]
    started = time.perf_counter()
    for check in slow_checks:
        check.run()
    slow_serial = time.perf_counter() - started
    started = time.perf_counter()
    slow_parallel = run_checks(slow_checks, max_parallel=TARGETS)
    slow_parallel_time = time.perf_counter() - started
    slow_slowest = max(result.duration for result in slow_parallel)
    server.shutdown()
    print("50 HTTP targets answering after 100 ms:")
    print(f"serial:                           {slow_serial:8.3f} s")
    print(f"parallel (run_checks):            {slow_parallel_time:8.3f} s")
    print(f"slowest single check:             {slow_slowest:8.3f} s")
    print(f"serial / parallel:                {slow_serial / slow_parallel_time:8.2f}x")


if __name__ == "__main__":
    main()
