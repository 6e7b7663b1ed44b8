"""50 checks on loopback (MySQL, Redis, HTTP) through autoops-check: parallel wall time against
the slowest single check, with the serial time for contrast. ``--scale 500`` instead runs 500
checks (TCP, HTTP, Redis, MySQL against local targets, 10% of them against targets that never
answer) with a 2 s timeout, each run in a fresh process: run_checks() at its defaults, the same
with every check in a thread, and the thread runner it replaced at its old default
(max_parallel=32) and at one thread per check. It reports wall time against the target (the
slowest timeout + 1 s), CPU seconds and peak RSS of the process doing the checks, per round and
as medians.

Run: .venv/bin/python benchmarks/bench_monitor.py [--scale 500 [--rounds 3] [--hung-every 10]]
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import queue
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from autoops import (
    CheckResult,
    CheckStatus,
    HttpCheck,
    MySQLCheck,
    RedisCheck,
    TcpCheck,
    run_checks,
)
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


class Tarpit:
    """A listener that accepts connections and never says a word (a hung HTTP, Redis or MySQL
    server), and one that never accepts past a full backlog (a TCP connect that hangs)."""

    def __init__(self) -> None:
        self.silent = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.full = socket.socket()
        self.full.bind(("127.0.0.1", 0))
        self.full.listen(0)
        self.held: list[socket.socket] = []
        self._filler: list[socket.socket] = []
        for _ in range(3):  # fill the backlog; once it is full, further connects hang
            try:
                self._filler.append(socket.create_connection(self.full.getsockname(), timeout=0.5))
            except OSError:
                break
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.silent.accept()
            except OSError:
                return
            self.held.append(connection)

    @property
    def silent_port(self) -> int:
        port: int = self.silent.getsockname()[1]
        return port

    @property
    def full_port(self) -> int:
        port: int = self.full.getsockname()[1]
        return port


def scale_checks(
    count: int, timeout: float, web_url: str, silent: int, full: int, hung_every: int = 10
) -> list[Check]:
    """``count`` checks, a quarter of each kind but fewer MySQL ones (the shared server's
    max_connections is shared with other work); every ``hung_every``-th points at the tarpit."""
    redis_port = int(REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    web_port = int(web_url.rsplit(":", 1)[1].rstrip("/"))
    checks: list[Check] = []
    for index in range(count):
        hung = index % hung_every == hung_every - 1
        kind = ("tcp", "http", "redis", "tcp", "http", "redis", "mysql")[index % 7]
        name = f"{kind}{index}"
        if kind == "tcp":
            port = full if hung else (redis_port if index % 2 else web_port)
            checks.append(TcpCheck(name, "127.0.0.1", port, timeout=timeout))
        elif kind == "http":
            url = f"http://127.0.0.1:{silent}/" if hung else web_url
            checks.append(HttpCheck(name, url, timeout=timeout))
        elif kind == "redis":
            url = f"redis://127.0.0.1:{silent}/0" if hung else REDIS_URL
            checks.append(RedisCheck(name, url, timeout=timeout))
        else:
            url = f"mysql://root@127.0.0.1:{silent}/" if hung else MYSQL_URL
            checks.append(MySQLCheck(name, url, timeout=timeout))
    return checks


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def thread_runner(
    checks: list[Check], *, deadline: float = 60.0, max_parallel: int = 32
) -> list[CheckResult]:
    """run_checks as it was until the event loop runner (states left out): a daemon thread
    per check, at most ``max_parallel`` at once, each abandoned at its timeout + 0.25 s."""
    grace = 0.25
    started_all = time.monotonic()
    stop_at = started_all + deadline
    finished: queue.Queue[tuple[int, CheckResult]] = queue.Queue()
    results: list[CheckResult | None] = [None] * len(checks)
    running: dict[int, float] = {}
    pending = list(range(len(checks)))
    pending.reverse()

    def work(index: int) -> None:
        finished.put((index, checks[index].run({})))

    def abandoned(check: Check, why: str, status: CheckStatus) -> CheckResult:
        return CheckResult(name=check.name, kind=check.kind, status=status, summary=why)

    while pending or running:
        while pending and len(running) < max_parallel and time.monotonic() < stop_at:
            index = pending.pop()
            running[index] = time.monotonic()
            threading.Thread(target=work, args=(index,), daemon=True).start()
        if not running:
            break
        wake = min(stop_at, *(at + checks[i].timeout + grace for i, at in running.items()))
        try:
            index, result = finished.get(timeout=max(0.0, wake - time.monotonic()))
        except queue.Empty:
            pass
        else:
            if index in running:
                del running[index]
                results[index] = result
        now = time.monotonic()
        for index, at in list(running.items()):
            if now >= at + checks[index].timeout + grace or now >= stop_at:
                results[index] = abandoned(checks[index], "abandoned", CheckStatus.CRITICAL)
                del running[index]
    for index in pending:
        results[index] = abandoned(checks[index], "not run", CheckStatus.UNKNOWN)
    return [result for result in results if result is not None]


#: The runners compared at scale, each in a fresh process (what a cron job or a Nagios
#: plugin call runs): name -> what it does.
RUNNERS = {
    "threads-32": "the old runner at its default max_parallel=32",
    "threads-all": "the old runner, max_parallel = the number of checks",
    "run_checks": "run_checks() at its defaults: event loop, MySQL in threads",
    "run_checks-threads": "run_checks() with every check in a thread (no measure_async)",
}


def child(runner: str, count: int, timeout: float, ports: list[int], hung_every: int) -> None:
    """Run the checks once in this fresh process and print what it cost as JSON."""
    web_port, silent, full = ports
    checks = scale_checks(count, timeout, f"http://127.0.0.1:{web_port}/", silent, full, hung_every)
    if runner == "run_checks-threads":
        for check in checks:
            # Replaces the class's property: the runner sees False.
            type(check).measures_async = False  # type: ignore[assignment]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started, cpu = time.perf_counter(), cpu_seconds()
    if runner == "threads-32":
        results = thread_runner(checks, max_parallel=32)
    elif runner == "threads-all":
        results = thread_runner(checks, max_parallel=count)
    else:
        results = run_checks(checks)
    wall, used = time.perf_counter() - started, cpu_seconds() - cpu
    reasons: dict[str, int] = {}
    for check, result in zip(checks, results, strict=True):
        if result.status is not CheckStatus.OK:
            key = f"{check.kind}: {result.summary[:70]}"
            reasons[key] = reasons.get(key, 0) + 1
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu": used,
                "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_before_mib": rss_before / 1024,
                "not_ok": sum(reasons.values()),
                "reasons": reasons,
            }
        )
    )


def scale(count: int, rounds: int, hung_every: int, timeout: float = 2.0) -> None:
    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    web_port = server.server_address[1]
    tarpit = Tarpit()
    checks = scale_checks(
        count,
        timeout,
        f"http://127.0.0.1:{web_port}/",
        tarpit.silent_port,
        tarpit.full_port,
        hung_every,
    )
    hung = count // hung_every
    kinds = {
        kind: sum(c.kind == kind for c in checks) for kind in ("tcp", "http", "redis", "mysql")
    }
    target = timeout + 1
    print(
        f"{count} checks ({', '.join(f'{n} {k}' for k, n in kinds.items())}), "
        f"{hung} against targets that never answer, timeout {timeout:g} s; "
        f"target: within {target:g} s. Each run in a fresh process, {rounds} rounds, "
        "runners in turn; the targets live in this process."
    )
    figures: dict[str, list[dict[str, Any]]] = {runner: [] for runner in RUNNERS}
    for round_ in range(rounds):
        for runner in RUNNERS:
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    runner,
                    "--scale",
                    str(count),
                    "--ports",
                    f"{web_port},{tarpit.silent_port},{tarpit.full_port}",
                    "--hung-every",
                    str(hung_every),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            figure = json.loads(done.stdout.splitlines()[-1])
            figure["load"] = load()
            figures[runner].append(figure)
            print(
                f"  round {round_ + 1} {runner:18s} {figure['wall']:6.3f} s wall "
                f"{figure['cpu']:6.3f} CPU s, peak RSS {figure['rss_mib']:5.1f} MiB, "
                f"{figure['not_ok']} not OK (load {figure['load']})",
                flush=True,
            )
            if figure["not_ok"] != hung:  # more than the hung ones: say what
                for reason, number in sorted(figure["reasons"].items(), key=lambda it: -it[1]):
                    print(f"      {number:4d} x {reason}")
            time.sleep(0.5)
    print(f"medians of {rounds} rounds (target {target:g} s):")
    for runner, what in RUNNERS.items():
        runs = figures[runner]
        wall = statistics.median(run["wall"] for run in runs)
        print(
            f"  {runner:18s} {wall:6.3f} s wall ({'met' if wall <= target else 'NOT met'}), "
            f"{statistics.median(run['cpu'] for run in runs):6.3f} CPU s, peak RSS "
            f"{statistics.median(run['rss_mib'] for run in runs):5.1f} MiB "
            f"({statistics.median(run['rss_before_mib'] for run in runs):5.1f} before the run), "
            f"not OK {'/'.join(str(run['not_ok']) for run in runs)}: {what}"
        )
    print(f"  load average at the end: {load()}")
    server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, metavar="N", help="run N checks at scale instead")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --scale (default 3)")
    parser.add_argument(
        "--hung-every", type=int, default=10, metavar="K", help="every K-th check hangs (10)"
    )
    parser.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        ports = [int(port) for port in args.ports.split(",")]
        child(args.child, args.scale, 2.0, ports, args.hung_every)
        return
    if args.scale:
        scale(args.scale, args.rounds, args.hung_every)
        return
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
    slowest = max(result.duration_seconds for result in parallel)

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
    slow_slowest = max(result.duration_seconds for result in slow_parallel)
    server.shutdown()
    print("50 HTTP targets answering after 100 ms:")
    print(f"serial:                           {slow_serial:8.3f} s")
    print(f"parallel (run_checks):            {slow_parallel_time:8.3f} s")
    print(f"slowest single check:             {slow_slowest:8.3f} s")
    print(f"serial / parallel:                {slow_serial / slow_parallel_time:8.2f}x")


if __name__ == "__main__":
    main()
