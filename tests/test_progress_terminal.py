"""The progress line as a person sees it: autoops-sync in a real terminal (tmux) at 60 and 120
columns, against the real MariaDB and Redis, interrupted with Ctrl-C and resumed."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import autoops
from _support.services import REDIS_URL, require_program

ROWS = 6_000
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ")
PROGRESS = "sync big_users:"


class Terminal:
    """A tmux server of this test's own (its own socket) with one shell in a fixed-size pane."""

    def __init__(self, width: int, directory: Path, env: dict[str, str]) -> None:
        self.width = width
        self.socket = f"autoops-test-{uuid.uuid4().hex[:8]}"
        settings = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
        self._tmux(
            "new-session", "-d", "-s", "t", "-x", str(width), "-y", "30", "-c", str(directory),
            *settings, "-e", "PS1=$ ", "bash", "--norc", "--noprofile",
        )  # fmt: skip

    def _tmux(self, *arguments: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *arguments],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return done.stdout

    def type(self, command: str) -> None:
        self._tmux("send-keys", "-t", "t", command, "Enter")

    def interrupt(self) -> None:
        self._tmux("send-keys", "-t", "t", "C-c")

    def rows(self) -> list[str]:
        """The screen as it shows, row by row (history included), trailing blanks dropped."""
        text = self._tmux("capture-pane", "-p", "-t", "t", "-S", "-")
        return [row.rstrip() for row in text.rstrip("\n").split("\n")]

    def lines(self) -> list[str]:
        """The screen with wrapped rows joined back into the lines that were written."""
        text = self._tmux("capture-pane", "-p", "-J", "-t", "t", "-S", "-")
        return [line.rstrip() for line in text.rstrip("\n").split("\n") if line.strip()]

    def wait_for(self, seen: Callable[[list[str]], bool], timeout: float = 240) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.lines()
            if seen(lines):
                return lines
            time.sleep(0.1)
        raise AssertionError("the terminal never showed it:\n" + "\n".join(self.rows()))

    def clear(self) -> None:
        self._tmux("send-keys", "-t", "t", "clear", "Enter")
        self._tmux("clear-history", "-t", "t")
        time.sleep(0.3)
        self._tmux("clear-history", "-t", "t")

    def close(self) -> None:
        socket = self._tmux("display-message", "-p", "#{socket_path}").strip()
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], check=False, timeout=30)
        Path(socket).unlink(missing_ok=True)  # kill-server leaves the socket file behind


@pytest.fixture
def big_users(mysql_db: autoops.DbClient) -> None:
    mysql_db.execute(
        "CREATE TABLE big_users (id BIGINT PRIMARY KEY, name VARCHAR(40), updated_at DATETIME(6))"
    )
    mysql_db.executemany(
        "INSERT INTO big_users VALUES (%s, %s, '2026-01-01 00:00:00')",
        [(i, f"usér{i}") for i in range(1, ROWS + 1)],
    )
    mysql_db.query("ANALYZE TABLE big_users")


@pytest.fixture(params=[60, 120], ids=["60-columns", "120-columns"])
def terminal(
    request: pytest.FixtureRequest, tmp_path: Path, mysql_url: str, redis_url: str
) -> Iterator[Terminal]:
    require_program("/usr/bin/tmux", "tmux")
    env = {"AUTOOPS_DB_URL": mysql_url, "AUTOOPS_CACHE_URL": redis_url, "TERM": "xterm"}
    screen = Terminal(request.param, tmp_path, env)
    yield screen
    screen.close()


def sync_command(namespace: str) -> str:
    return " ".join(
        [
            shlex.quote(sys.executable), "-m", "autoops.cli.sync", "--table", "big_users",
            "--key", shlex.quote("big:{id}"), "--namespace", namespace, "--batch-size", "5",
            "; echo exit=$?",
        ]
    )  # fmt: skip


def progress_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith(PROGRESS)]


def check_no_line_was_overwritten(terminal: Terminal, lines: list[str]) -> None:
    """Every status line fitted (so it was redrawn in place), and every log record starts its
    own line rather than trailing a status line."""
    for line in progress_lines(lines):
        assert len(line) < terminal.width, line
    for line in lines:
        if re.search(r"(DEBUG|INFO|WARNING|ERROR) autoops", line):
            assert LOG_LINE.match(line), line


@pytest.mark.usefixtures("big_users")
def test_progress_fits_the_terminal_survives_ctrl_c_and_ends_on_what_was_done(
    terminal: Terminal, redis_namespace: str
) -> None:
    command = sync_command(redis_namespace)
    terminal.type(command)
    # Small batches make the pass last long enough to be interrupted in the middle: with 30 rows
    # a batch it could end before the ^C arrived (the report's "rows/s" matched, then exit).
    running = terminal.wait_for(
        lambda lines: any("rows/s" in line for line in progress_lines(lines))
    )
    terminal.interrupt()
    stopped = terminal.wait_for(lambda lines: any(line.startswith("exit=") for line in lines))

    # While running: one status line, cut to the width; at 120 columns there is room for more.
    assert len(progress_lines(running)) == 1
    check_no_line_was_overwritten(terminal, running)
    # Stopped: the warning and the report on lines of their own, no status line left behind.
    check_no_line_was_overwritten(terminal, stopped)
    assert "exit=130" in stopped
    warning = next(line for line in stopped if " WARNING " in line)
    assert "SIGINT" in warning
    report = next(index for index, line in enumerate(stopped) if "stopped early" in line)
    assert progress_lines(stopped[report:]) == []
    assert len(progress_lines(stopped)) <= 1
    copied = int(re.search(r"([\d,]+) rows read", stopped[report]).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 0 < copied < ROWS

    terminal.clear()
    terminal.type(command)
    resumed = terminal.wait_for(lambda lines: any(line.startswith("exit=") for line in lines))

    check_no_line_was_overwritten(terminal, resumed)
    assert "exit=0" in resumed
    assert any("full pass resumed" in line for line in resumed)
    # The last status line says what was done in this run, not an estimate of the table.
    final = progress_lines(resumed)[-1]
    assert re.fullmatch(rf"{PROGRESS} {ROWS - copied:,} rows in [\d.]+ m?s, [\d,]+ rows/s", final)
    report = next(index for index, line in enumerate(resumed) if "full pass," in line)
    assert resumed.index(final) < report
    assert progress_lines(resumed[report:]) == []


def test_under_cron_no_terminal_gets_no_progress_line(
    big_users: None, mysql_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "autoops.cli.sync", "--table", "big_users", "--key", "big:{id}",
         "--namespace", redis_namespace],
        env={"AUTOOPS_DB_URL": mysql_url, "AUTOOPS_CACHE_URL": REDIS_URL, "PATH": "/usr/bin:/bin"},
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip

    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
