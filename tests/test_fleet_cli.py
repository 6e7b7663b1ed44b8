"""autoops-run as users run it: hosts from autoops.toml, exit codes, JSON, one-line errors."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from _support.sshd import SshServer
from autoops.cli.run import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def hosts(sshd_factory: Callable[[], SshServer]) -> list[SshServer]:
    return [sshd_factory() for _ in range(2)]


@pytest.fixture
def config(hosts: list[SshServer], tmp_path: Path) -> Path:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(server.host_key_line + "\n" for server in hosts))
    listed = ", ".join(f'"{server.address}"' for server in hosts)
    path = tmp_path / "autoops.toml"
    path.write_text(
        "[fleet]\n"
        f"hosts = [{listed}]\n"
        f'key_filename = "{hosts[0].client_key}"\n'
        f'known_hosts = "{known_hosts}"\n'
        "connect_timeout = 5.0\n"
    )
    return path


def test_every_host_ok_exits_0_and_prints_the_table(
    config: Path, hosts: list[SshServer], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config), "echo hello"]) == 0
    out = capsys.readouterr().out
    for server in hosts:
        assert server.address in out
    assert "2 ok" in out
    assert out.count(" hello\n") == 2  # once per row, nothing printed while running


def test_any_host_failing_exits_1_and_says_which(
    config: Path, hosts: list[SshServer], capsys: pytest.CaptureFixture[str]
) -> None:
    hosts[1].stop()
    assert main(["--config", str(config), "true"]) == 1
    captured = capsys.readouterr()
    assert f"{hosts[1].address}: unreachable" in captured.err


def test_json_output_carries_every_host(
    config: Path, hosts: list[SshServer], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config), "--json", "exit 3"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert [host["exit_code"] for host in document["hosts"]] == [3, 3]
    assert [host["host"] for host in document["hosts"]] == [s.address for s in hosts]


def test_hosts_on_the_command_line_override_the_settings(
    config: Path, hosts: list[SshServer], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config), "--hosts", hosts[0].address, "--json", "true"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [host["host"] for host in document["hosts"]] == [hosts[0].address]


def test_stream_prefixes_lines_with_the_host(
    config: Path, hosts: list[SshServer], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config), "--stream", "echo streamed"]) == 0
    out = capsys.readouterr().out
    for server in hosts:
        assert f"{server.address} | streamed" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--hosts", "a@web-1.example.com,a@web-1.example.com:22", "true"],
        ["--hosts", "a@web 1.example.com", "true"],
        ["--hosts", "a@web-1.example.com,,b@web-2.example.com", "true"],
        ["--hosts", "a@web-1.example.com", "--concurrency", "0", "true"],
    ],
)
def test_bad_hosts_or_options_exit_2_with_one_line(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "autoops.toml"
    empty.write_text("")
    assert main(["--config", str(empty), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autoops-run: configuration error:")
    assert len(err.strip().splitlines()) == 1


def test_no_hosts_anywhere_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "autoops.toml"
    empty.write_text("")
    assert main(["--config", str(empty), "true"]) == 2
    assert "needs hosts" in capsys.readouterr().err


def test_the_installed_command_runs_quietly_under_cron(config: Path) -> None:
    completed = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "autoops-run"), "--config", str(config), "echo cron"],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert "2 ok" in completed.stdout
