"""autoops-deploy as users run it: settings from autoops.toml, exit codes, a killed deploy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from _support.services import promtool_accepts
from _support.sshd import SshServer
from autoops.cli.deploy import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def hosts(sshd_factory: Callable[[], SshServer]) -> list[SshServer]:
    return [sshd_factory() for _ in range(2)]


@pytest.fixture
def config(hosts: list[SshServer], tmp_path: Path) -> Path:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(server.host_key_line + "\n" for server in hosts))
    (tmp_path / "srv").mkdir()
    listed = ", ".join(f'"{server.address}"' for server in hosts)
    path = tmp_path / "autoops.toml"
    path.write_text(
        "[deploy]\n"
        f"hosts = [{listed}]\n"
        f'deploy_to = "{tmp_path}/srv/{{ssh_port}}"\n'
        f'key_filename = "{hosts[0].client_key}"\n'
        f'known_hosts = "{known_hosts}"\n'
        "connect_timeout = 5.0\n"
        "batch_size = 2\n"
    )
    return path


@pytest.fixture
def app(tmp_path: Path) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / "index.html").write_text("hello\n")
    return directory


def current(tmp_path: Path, server: SshServer) -> str | None:
    link = tmp_path / "srv" / str(server.port) / "current"
    return os.readlink(link) if link.is_symlink() else None


def test_deploy_then_releases_from_the_settings_file(
    config: Path,
    app: Path,
    hosts: list[SshServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--config", str(config), "deploy", str(app), "--release-id", "r1"]) == 0
    assert main(["--config", str(config), "releases"]) == 0

    output = capsys.readouterr().out
    for server in hosts:
        assert current(tmp_path, server) == "releases/r1"
        assert f"{server.address}: current r1; releases r1" in output


def test_metrics_keep_the_last_success_time_through_a_failure(
    config: Path, app: Path, tmp_path: Path
) -> None:
    metrics = tmp_path / "deploy.prom"
    base = ["--config", str(config), "--metrics", str(metrics), "deploy", str(app)]
    assert main(base) == 0
    success_line = next(
        line
        for line in metrics.read_text().splitlines()
        if line.startswith("autoops_deploy_last_success_timestamp_seconds")
    )
    assert main([*base, "--health-command", "false", "--health-timeout", "0.2"]) == 1

    text = metrics.read_text()
    assert 'autoops_deploy_success{action="deploy"} 0.0' in text
    assert success_line in text
    promtool_accepts(text)


def test_a_failed_health_check_exits_1_with_the_table_on_stderr(
    config: Path, app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--config", str(config), "deploy", str(app),
            "--health-command", "false", "--health-timeout", "0.3",
        ]
    )  # fmt: skip

    assert code == 1
    error = capsys.readouterr().err
    assert "health check command 'false' failed" in error
    assert "rolled back" in error


def test_a_held_lock_exits_75_naming_the_holder(
    config: Path,
    app: Path,
    hosts: list[SshServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lock = tmp_path / "srv" / str(hosts[1].port) / ".autoops-deploy.lock"
    lock.mkdir(parents=True)
    (lock / "owner").write_text("user=bob\nhost=ci-7\npid=99\nrelease=x\n")

    assert main(["--config", str(config), "deploy", str(app)]) == 75
    assert "bob@ci-7" in capsys.readouterr().err


def test_bad_settings_exit_2(config: Path, app: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config), "--deploy-to", "relative", "deploy", str(app)]) == 2
    assert "absolute" in capsys.readouterr().err


def test_push_config_dry_run_prints_the_diff(
    config: Path, hosts: list[SshServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = tmp_path / "app.conf.j2"
    template.write_text("port {{ port }}\n")
    dest = f"{tmp_path}/srv/{{ssh_port}}.conf"
    base = ["--config", str(config), "push-config", str(template), dest]
    assert main([*base, "--set", "port=80"]) == 0
    assert main([*base, "--set", "port=81", "--dry-run"]) == 0

    assert "-port 80\n+port 81\n" in capsys.readouterr().out
    assert (tmp_path / "srv" / f"{hosts[0].port}.conf").read_text() == "port 80\n"


def test_a_deploy_killed_mid_way_leaves_the_old_release_live_and_a_named_lock(
    config: Path, app: Path, hosts: list[SshServer], tmp_path: Path
) -> None:
    assert main(["--config", str(config), "deploy", str(app), "--release-id", "r1"]) == 0
    hook_pid = tmp_path / "hook.pid"
    base = [sys.executable, str(ROOT / "scripts" / "autoops-deploy"), "--config", str(config)]
    slow_hook = (
        f"after_unpack:echo $$ > {hook_pid}.tmp; mv {hook_pid}.tmp {hook_pid}; exec sleep 60"
    )
    process = subprocess.Popen(
        [*base, "deploy", str(app), "--release-id", "r2", "--hook", slow_hook],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not hook_pid.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    os.kill(int(hook_pid.read_text()), signal.SIGKILL)

    for server in hosts:
        assert current(tmp_path, server) == "releases/r1"
    refused = subprocess.run(
        [*base, "deploy", str(app)], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 75
    assert f"pid {process.pid}" in refused.stderr

    retried = [*base, "deploy", str(app), "--release-id", "r3", "--break-lock"]
    assert subprocess.run(retried, capture_output=True, check=False).returncode == 0
    for server in hosts:
        assert current(tmp_path, server) == "releases/r3"
        assert sorted(os.listdir(tmp_path / "srv" / str(server.port) / "releases")) == [
            "r1",
            "r3",
        ]


def test_an_unknown_setting_is_a_config_error(
    config: Path, app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config.write_text(config.read_text() + "batch_sise = 3\n")

    assert main(["--config", str(config), "deploy", str(app)]) == 2
    assert "batch_sise" in capsys.readouterr().err


def test_dry_run_then_rollback_from_the_command_line(
    config: Path,
    app: Path,
    hosts: list[SshServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for release in ("r1", "r2"):
        assert main(["--config", str(config), "deploy", str(app), "--release-id", release]) == 0
    capsys.readouterr()

    assert (
        main(["--config", str(config), "deploy", str(app), "--dry-run", "--release-id", "r3"]) == 0
    )
    assert "r2 -> r3" in capsys.readouterr().out
    assert main(["--config", str(config), "rollback"]) == 0

    for server in hosts:
        assert current(tmp_path, server) == "releases/r1"


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_a_health_timeout_that_is_not_a_positive_number_exits_2_in_one_line(
    config: Path, app: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--config",
            str(config),
            "deploy",
            str(app),
            "--health-tcp",
            "80",
            "--health-timeout",
            value,
        ]
    )

    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--health-timeout must be a number of seconds above 0, got {value}" in err
    assert "Traceback" not in err


def test_on_a_terminal_paramiko_speaks_only_with_verbose(
    config: Path, app: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)

    assert main(["--config", str(config), "deploy", str(app), "--release-id", "r1"]) == 0
    quiet = capsys.readouterr().err
    assert main(["--config", str(config), "-v", "deploy", str(app), "--release-id", "r2"]) == 0
    verbose = capsys.readouterr().err

    assert "INFO autoops.deploy" in quiet
    assert "paramiko" not in quiet
    assert "paramiko.transport" in verbose


def kept_artifacts(tmp_path: Path, server: SshServer) -> list[str]:
    return sorted(
        path.name
        for path in (tmp_path / "srv" / str(server.port)).iterdir()
        if path.name.startswith(".autoops-artifact-")
    )


def test_no_reuse_artifact_keeps_no_copy_on_the_hosts(
    config: Path, app: Path, hosts: list[SshServer], tmp_path: Path
) -> None:
    # By default (and per the settings file) each host keeps the last artifact it unpacked.
    assert main(["--config", str(config), "deploy", str(app), "--release-id", "r1"]) == 0
    assert all(len(kept_artifacts(tmp_path, server)) == 1 for server in hosts)
    # The flag overrides it: no copy kept, the earlier one removed.
    (app / "index.html").write_text("hello again\n")
    argv = ["--config", str(config), "deploy", str(app), "--release-id", "r2"]
    assert main([*argv, "--no-reuse-artifact"]) == 0
    for server in hosts:
        assert current(tmp_path, server) == "releases/r2"
        assert kept_artifacts(tmp_path, server) == []
