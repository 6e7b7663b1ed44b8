"""Deployer against real OpenSSH servers on loopback: each sshd is a host, each host serves a
small static app (python3 -m http.server started by the after_switch hook) on its own port."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from _support.sshd import SshServer, free_port
from autoops import ConfigError, LockHeldError
from autoops.deploy import (
    ConfigPushError,
    Deployer,
    DeployError,
    DeployOutcome,
    HealthCheck,
    Hook,
    new_release_id,
)

RESTART_APP = Hook(
    'pidfile="$DEPLOY_TO/shared/app.pid"\n'
    '[ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null\n'
    'nohup python3 -m http.server "$APP_PORT" --bind 127.0.0.1 >/dev/null 2>&1 </dev/null &\n'
    'echo $! > "$pidfile"',
    phase="after_switch",
)


@dataclass
class Fleet:
    """Three (or more) sshd hosts, the files to reach them, and each host's app port."""

    servers: list[SshServer]
    known_hosts: Path
    base: Path
    ports: dict[str, int]
    extra_pids: list[int] = field(default_factory=list)

    @property
    def hosts(self) -> list[str]:
        return [server.address for server in self.servers]

    def root(self, server: SshServer) -> Path:
        return self.base / str(server.port)

    def deployer(self, **options: Any) -> Deployer:
        values: dict[str, Any] = {
            "key_filename": str(self.servers[0].client_key),
            "known_hosts": str(self.known_hosts),
            "connect_timeout": 5.0,
            "command_timeout": 30.0,
            "host_vars": {host: {"APP_PORT": str(port)} for host, port in self.ports.items()},
            "concurrency": 4,
        }
        values.update(options)
        return Deployer(self.hosts, f"{self.base}/{{ssh_port}}", **values)

    def app(self, tmp_path: Path, version: int, size: int = 0) -> Path:
        directory = tmp_path / f"app-v{version}"
        directory.mkdir(exist_ok=True)
        (directory / "index.html").write_text(f"<h1>version {version}</h1>\n")
        (directory / "static").mkdir(exist_ok=True)
        (directory / "static" / "blob.bin").write_bytes(os.urandom(size))
        return directory

    def fetch(self, server: SshServer) -> str:
        """The app's page on ``server``, waiting up to 5 s for a just-restarted app to listen."""
        url = f"http://127.0.0.1:{self.ports[server.address]}/"
        deadline = time.monotonic() + 5
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return str(response.read().decode())
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def current(self, server: SshServer) -> str | None:
        link = self.root(server) / "current"
        return os.readlink(link) if link.is_symlink() else None

    def stop_apps(self) -> None:
        pids = list(self.extra_pids)
        for pidfile in self.base.glob("*/shared/app.pid"):
            pids.append(int(pidfile.read_text().strip()))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def fleet(sshd_factory: Callable[[], SshServer], tmp_path: Path) -> Iterator[Fleet]:
    servers = [sshd_factory() for _ in range(3)]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(server.host_key_line + "\n" for server in servers))
    base = tmp_path / "srv"
    base.mkdir()
    fleet = Fleet(servers, known_hosts, base, {s.address: free_port() for s in servers})
    for server in servers:
        fleet.root(server).mkdir()
    yield fleet
    fleet.stop_apps()


def healthy_v(version: int) -> HealthCheck:
    return HealthCheck.http(
        "http://{host}:{APP_PORT}/", contains=f"version {version}", timeout=8, interval=0.1
    )


def test_a_deploy_switches_every_host_and_the_app_answers(fleet: Fleet, tmp_path: Path) -> None:
    deployer = fleet.deployer(hooks=[RESTART_APP], health_check=healthy_v(1), batch_size=2)
    result = deployer.deploy(fleet.app(tmp_path, 1), release_id="20260101T000000Z-aaaaaa")

    assert result.ok
    assert [host.outcome for host in result.hosts] == [DeployOutcome.DEPLOYED] * 3
    for server in fleet.servers:
        assert fleet.current(server) == "releases/20260101T000000Z-aaaaaa"
        assert "version 1" in fleet.fetch(server)
        assert not (fleet.root(server) / ".autoops-deploy.lock").exists()
    assert deployer.current() == dict.fromkeys(fleet.hosts, "20260101T000000Z-aaaaaa")


def test_a_failing_health_check_in_the_second_batch_rolls_back_the_switched_hosts(
    fleet: Fleet, tmp_path: Path
) -> None:
    first, second, third = fleet.servers
    fleet.deployer(hooks=[RESTART_APP], health_check=healthy_v(1)).deploy(
        fleet.app(tmp_path, 1), release_id="r1"
    )
    # A stray process keeps the app's port on the second host: its new server cannot bind, so
    # the old one keeps answering "version 1" and the check for "version 2" fails there.
    pidfile = fleet.root(second) / "shared" / "app.pid"
    fleet.extra_pids.append(int(pidfile.read_text()))
    pidfile.unlink()

    deployer = fleet.deployer(hooks=[RESTART_APP], health_check=healthy_v(2), batch_size=1)
    deployer.health_check = HealthCheck.http(
        "http://{host}:{APP_PORT}/", contains="version 2", timeout=2, interval=0.1
    )
    with pytest.raises(DeployError) as caught:
        deployer.deploy(fleet.app(tmp_path, 2), release_id="r2")

    result = caught.value.result
    assert result.rolled_back
    assert result.host(first.address).outcome == DeployOutcome.ROLLED_BACK
    failed = result.host(second.address)
    assert failed.outcome == DeployOutcome.FAILED
    assert failed.phase == "rollback"
    assert "version 2" in (failed.error or "")
    assert result.host(third.address).outcome == DeployOutcome.NOT_SWITCHED
    assert second.address in str(caught.value)
    for server in fleet.servers:
        assert fleet.current(server) == "releases/r1"
        assert "version 1" in fleet.fetch(server)
        assert not (fleet.root(server) / ".autoops-deploy.lock").exists()
    assert not (fleet.root(third) / "releases" / "r2").exists()


def test_an_sshd_stopped_mid_deploy_is_a_clear_error_and_no_half_release_goes_live(
    fleet: Fleet, tmp_path: Path
) -> None:
    victim = fleet.servers[1]
    fleet.deployer().deploy(fleet.app(tmp_path, 1), release_id="r1")

    def stop_during_unpack(host: str, phase: str) -> None:
        if host == victim.address and phase == "unpack":
            victim.stop()

    deployer = fleet.deployer(on_phase=stop_during_unpack)
    with pytest.raises(DeployError) as caught:
        deployer.deploy(fleet.app(tmp_path, 2, size=1 << 20), release_id="r2")

    result = caught.value.result
    lost = result.host(victim.address)
    assert lost.outcome == DeployOutcome.FAILED
    assert lost.phase == "unpack"
    assert "ssh" in (lost.error or "").lower() or "connection" in (lost.error or "").lower()
    assert not lost.lock_released
    for server in fleet.servers:
        assert fleet.current(server) == "releases/r1"
        assert not (fleet.root(server) / "releases" / "r2").exists()
    for server in (fleet.servers[0], fleet.servers[2]):
        assert result.host(server.address).lock_released
        assert not (fleet.root(server) / ".autoops-deploy.lock").exists()


def test_a_second_deploy_is_refused_while_the_first_holds_the_lock(
    fleet: Fleet, tmp_path: Path
) -> None:
    refusals: list[LockHeldError] = []
    second = fleet.deployer()

    def deploy_again(host: str, phase: str) -> None:
        if host == fleet.hosts[0] and phase == "upload":
            with pytest.raises(LockHeldError) as caught:
                second.deploy(fleet.app(tmp_path, 3))
            refusals.append(caught.value)

    fleet.deployer(on_phase=deploy_again).deploy(fleet.app(tmp_path, 1), release_id="r1")

    assert len(refusals) == 1
    message = str(refusals[0])
    assert "release r1" in message
    assert "pid" in message
    assert "break_lock" in message
    for server in fleet.servers:
        assert fleet.current(server) == "releases/r1"
        assert not (fleet.root(server) / ".autoops-deploy.lock").exists()


def test_a_stale_lock_is_broken_only_on_request(
    fleet: Fleet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lock = fleet.root(fleet.servers[2]) / ".autoops-deploy.lock"
    lock.mkdir(parents=True)
    (lock / "owner").write_text("user=alice\nhost=laptop\npid=4242\nrelease=old\ntoken=t\n")

    with pytest.raises(LockHeldError, match="alice@laptop"):
        fleet.deployer().deploy(fleet.app(tmp_path, 1))
    for server in fleet.servers[:2]:
        assert not (fleet.root(server) / ".autoops-deploy.lock").exists()

    with caplog.at_level(logging.WARNING, logger="autoops.deploy"):
        fleet.deployer().deploy(fleet.app(tmp_path, 1), break_lock=True)
    assert "alice@laptop" in caplog.text
    assert not lock.exists()


def test_an_unknown_host_key_is_refused_by_default(fleet: Fleet, tmp_path: Path) -> None:
    partial = tmp_path / "partial_known_hosts"
    partial.write_text(fleet.servers[0].host_key_line + "\n")

    with pytest.raises(DeployError) as caught:
        fleet.deployer(known_hosts=str(partial)).deploy(fleet.app(tmp_path, 1))

    assert "not in" in (caught.value.result.host(fleet.hosts[1]).error or "")
    assert "nothing was changed" in str(caught.value)
    for server in fleet.servers:
        assert fleet.current(server) is None
        assert not (fleet.root(server) / ".autoops-deploy.lock").exists()


def test_keep_releases_never_removes_current_or_the_rollback_target(
    fleet: Fleet, tmp_path: Path
) -> None:
    deployer = fleet.deployer(keep_releases=1)
    app = fleet.app(tmp_path, 1)
    for name in ("r1", "r2", "r3"):
        deployer.deploy(app, release_id=name)

    assert deployer.releases() == {key: ["r2", "r3"] for key in fleet.hosts}
    assert deployer.current() == dict.fromkeys(fleet.hosts, "r3")


def test_rollback_returns_to_the_previous_release_and_then_the_one_before(
    fleet: Fleet, tmp_path: Path
) -> None:
    deployer = fleet.deployer(hooks=[RESTART_APP])
    for version in (1, 2, 3):
        deployer.deploy(fleet.app(tmp_path, version), release_id=f"r{version}")

    first = deployer.rollback()
    assert first.ok
    assert deployer.current() == dict.fromkeys(fleet.hosts, "r2")
    assert "version 2" in fleet.fetch(fleet.servers[0])

    deployer.rollback()
    assert deployer.current() == dict.fromkeys(fleet.hosts, "r1")

    deployer.rollback(to="r3")
    assert deployer.current() == dict.fromkeys(fleet.hosts, "r3")


def test_rollback_with_nothing_to_go_back_to_is_a_clear_error(fleet: Fleet, tmp_path: Path) -> None:
    deployer = fleet.deployer()
    deployer.deploy(fleet.app(tmp_path, 1), release_id="r1")

    with pytest.raises(DeployError, match="no release to roll back to"):
        deployer.rollback()
    assert deployer.current() == dict.fromkeys(fleet.hosts, "r1")


def test_plan_reports_what_would_change_and_changes_nothing(fleet: Fleet, tmp_path: Path) -> None:
    deployer = fleet.deployer(keep_releases=1)
    deployer.deploy(fleet.app(tmp_path, 1), release_id="r1")
    deployer.deploy(fleet.app(tmp_path, 1), release_id="r2")
    before = sorted(str(path) for path in fleet.base.rglob("*"))

    plan = deployer.plan(fleet.app(tmp_path, 2), release_id="r3")

    assert sorted(str(path) for path in fleet.base.rglob("*")) == before
    assert [host.current_release for host in plan.hosts] == ["r2"] * 3
    assert [host.would_remove for host in plan.hosts] == [("r1",)] * 3
    assert "r2 -> r3" in repr(plan)


def test_a_first_deploy_that_fails_its_check_leaves_no_current(
    fleet: Fleet, tmp_path: Path
) -> None:
    deployer = fleet.deployer(health_check=HealthCheck.command("test -f missing", timeout=0.5))
    with pytest.raises(DeployError) as caught:
        deployer.deploy(fleet.app(tmp_path, 1), release_id="r1")

    assert caught.value.result.rolled_back
    for server in fleet.servers:
        assert fleet.current(server) is None


def test_a_once_hook_runs_on_one_host_only(fleet: Fleet, tmp_path: Path) -> None:
    marker = tmp_path / "migrations"
    migrate = Hook(f'echo "$RELEASE_ID" >> {marker}', phase="before_switch", once=True)
    fleet.deployer(hooks=[migrate]).deploy(fleet.app(tmp_path, 1), release_id="r1")

    assert marker.read_text() == "r1\n"


def test_shared_dirs_survive_releases(fleet: Fleet, tmp_path: Path) -> None:
    deployer = fleet.deployer(
        shared_dirs=["uploads"], hooks=[Hook("echo kept > uploads/file", phase="after_unpack")]
    )
    deployer.deploy(fleet.app(tmp_path, 1), release_id="r1")
    deployer.deploy(fleet.app(tmp_path, 2), release_id="r2")

    for server in fleet.servers:
        link = fleet.root(server) / "releases" / "r2" / "uploads"
        assert link.is_symlink()
        assert (link / "file").read_text() == "kept\n"


def test_a_missing_shared_file_fails_before_any_switch(fleet: Fleet, tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="no host was switched") as caught:
        fleet.deployer(shared_files=[".env"]).deploy(fleet.app(tmp_path, 1), release_id="r1")

    assert "missing" in (caught.value.result.hosts[0].stderr_tail or "")
    for server in fleet.servers:
        assert fleet.current(server) is None
        assert not (fleet.root(server) / "releases" / "r1").exists()


def test_the_result_reads_well_in_a_terminal_and_in_jupyter(fleet: Fleet, tmp_path: Path) -> None:
    result = fleet.deployer().deploy(fleet.app(tmp_path, 1), release_id="r1")

    text = repr(result)
    assert "deploy r1: ok on 3 host(s)" in text
    assert all(host in text for host in fleet.hosts)
    assert "<table>" in result._repr_html_()


# -- push_config ------------------------------------------------------------------------------


@pytest.fixture
def template(tmp_path: Path) -> Path:
    path = tmp_path / "app.conf.j2"
    path.write_text("listen {{ APP_PORT }}\nworkers {{ workers }}\n")
    return path


def test_push_config_renders_per_host_and_keeps_the_previous_version(
    fleet: Fleet, template: Path
) -> None:
    deployer = fleet.deployer()
    dest = f"{fleet.base}/{{ssh_port}}/app.conf"
    first = deployer.push_config(template, dest, {"workers": 2}, mode=0o640)
    second = deployer.push_config(template, dest, {"workers": 4}, mode=0o640)

    assert first.changed == fleet.hosts
    assert second.changed == fleet.hosts
    for server in fleet.servers:
        path = fleet.root(server) / "app.conf"
        assert path.read_text() == f"listen {fleet.ports[server.address]}\nworkers 4\n"
        assert path.stat().st_mode & 0o777 == 0o640
        assert "workers 2" in (fleet.root(server) / "app.conf.autoops-previous").read_text()


def test_push_config_does_not_upload_unchanged_content(fleet: Fleet, template: Path) -> None:
    deployer = fleet.deployer()
    dest = f"{fleet.base}/{{ssh_port}}/app.conf"
    deployer.push_config(template, dest, {"workers": 2})
    paths = [fleet.root(server) / "app.conf" for server in fleet.servers]
    mtimes = [path.stat().st_mtime_ns for path in paths]
    time.sleep(0.02)

    again = deployer.push_config(template, dest, {"workers": 2})

    assert again.changed == []
    assert [host.status for host in again.hosts] == ["unchanged"] * 3
    assert [path.stat().st_mtime_ns for path in paths] == mtimes


def test_push_config_failing_validation_leaves_the_old_file(fleet: Fleet, template: Path) -> None:
    deployer = fleet.deployer()
    dest = f"{fleet.base}/{{ssh_port}}/app.conf"
    deployer.push_config(template, dest, {"workers": 2})

    with pytest.raises(ConfigPushError) as caught:
        deployer.push_config(
            template, dest, {"workers": 0}, validate="! grep -q 'workers 0' {path}"
        )

    assert all("validation" in (host.error or "") for host in caught.value.result.hosts)
    for server in fleet.servers:
        assert "workers 2" in (fleet.root(server) / "app.conf").read_text()
        assert [p.name for p in fleet.root(server).iterdir() if "autoops-" in p.name] == []


def test_push_config_dry_run_shows_a_diff_and_changes_nothing(fleet: Fleet, template: Path) -> None:
    deployer = fleet.deployer()
    dest = f"{fleet.base}/{{ssh_port}}/app.conf"
    deployer.push_config(template, dest, {"workers": 2})

    preview = deployer.push_config(template, dest, {"workers": 8}, dry_run=True)

    assert preview.changed == fleet.hosts
    assert "-workers 2\n+workers 8\n" in preview.hosts[0].diff
    for server in fleet.servers:
        assert "workers 2" in (fleet.root(server) / "app.conf").read_text()


def test_push_config_names_a_missing_template_variable(fleet: Fleet, template: Path) -> None:
    with pytest.raises(ConfigError, match="workers"):
        fleet.deployer().push_config(template, f"{fleet.base}/{{ssh_port}}/app.conf")


# -- configuration errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"deploy_to": "relative/path"}, "absolute"),
        ({"batch_size": 0}, "batch_size"),
        ({"host_vars": {"root@elsewhere:22": {"A": "1"}}}, "not in hosts"),
        ({"deploy_to": "/srv/{missing}"}, "missing"),
        ({"shared_dirs": ["../escape"]}, "relative path"),
        ({"reuse_artifact": "yes"}, "reuse_artifact must be true or false"),
    ],
)
def test_bad_options_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    options: dict[str, Any] = {"hosts": ["root@127.0.0.1:22"], "deploy_to": "/srv/app"}
    options.update(kwargs)
    with pytest.raises(ConfigError, match=message):
        Deployer(options.pop("hosts"), options.pop("deploy_to"), **options)


def test_release_ids_sort_by_time() -> None:
    first = new_release_id()
    time.sleep(1.01)
    assert new_release_id() > first


def test_a_bad_release_id_is_a_config_error() -> None:
    deployer = Deployer(["root@127.0.0.1:22"], "/srv/app")
    with pytest.raises(ConfigError, match="release id"):
        deployer.plan(".", release_id="../../etc")


def test_a_health_check_reports_its_last_reason() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    check = HealthCheck.tcp(port, timeout=0.3, interval=0.1)
    with pytest.raises(Exception, match="cannot connect"):
        check.wait({"host": "127.0.0.1"}, lambda command, timeout: None)  # type: ignore[arg-type,return-value]


def test_a_corrupted_upload_is_caught_by_the_checksum_before_unpacking(
    fleet: Fleet, tmp_path: Path
) -> None:
    victim = fleet.servers[0]

    def corrupt_after_upload(host: str, phase: str) -> None:
        if host == victim.address and phase == "unpack":
            upload = fleet.root(victim) / ".autoops-upload-r1"
            with upload.open("r+b") as handle:
                handle.write(b"corrupted")

    with pytest.raises(DeployError) as caught:
        fleet.deployer(on_phase=corrupt_after_upload).deploy(
            fleet.app(tmp_path, 1), release_id="r1"
        )

    failed = caught.value.result.host(victim.address)
    assert (failed.phase, failed.outcome) == ("unpack", DeployOutcome.FAILED)
    assert "sha256" in failed.stderr_tail
    for server in fleet.servers:
        assert fleet.current(server) is None
        assert not (fleet.root(server) / "releases" / "r1").exists()
        assert not (fleet.root(server) / "releases" / "r1.partial").exists()


def kept_artifacts(fleet: Fleet, server: SshServer) -> list[str]:
    return sorted(path.name for path in fleet.root(server).glob(".autoops-artifact-*"))


def test_the_same_artifact_again_is_not_sent_but_still_checked_and_unpacked(
    fleet: Fleet, tmp_path: Path
) -> None:
    deployer = fleet.deployer()
    app = fleet.app(tmp_path, 1, size=200_000)

    first = deployer.deploy(app, release_id="r1")
    again = deployer.deploy(app, release_id="r2")  # the directory packs to the same bytes
    other = deployer.deploy(fleet.app(tmp_path, 2, size=200_000), release_id="r3")

    assert [host.uploaded for host in first.hosts] == [True] * 3
    assert [host.uploaded for host in again.hosts] == [False] * 3
    assert all("upload" not in host.timings for host in again.hosts)
    assert [host.uploaded for host in other.hosts] == [True] * 3
    for server in fleet.servers:
        releases = fleet.root(server) / "releases"
        assert (releases / "r2" / "index.html").read_text() == "<h1>version 1</h1>\n"
        assert (releases / "r2" / "static" / "blob.bin").read_bytes() == (
            app / "static" / "blob.bin"
        ).read_bytes()
        assert fleet.current(server) == "releases/r3"
        # One copy is kept, the last one unpacked; no upload is left over.
        assert len(kept_artifacts(fleet, server)) == 1
        assert not list(fleet.root(server).glob(".autoops-upload-*"))


def test_a_kept_artifact_altered_or_removed_on_the_host_is_sent_again(
    fleet: Fleet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    altered, removed, intact = fleet.servers
    app = fleet.app(tmp_path, 1, size=100_000)
    fleet.deployer().deploy(app, release_id="r1")

    def tamper(host: str, phase: str) -> None:
        # Between reading the host's state (which lists the kept copy) and unpacking it.
        if phase != "unpack":
            return
        for server, action in ((altered, "alter"), (removed, "remove")):
            if host == server.address:
                for kept in fleet.root(server).glob(".autoops-artifact-*"):
                    if action == "alter":
                        with kept.open("r+b") as handle:
                            handle.write(b"bit rot")
                    else:
                        kept.unlink()

    with caplog.at_level(logging.WARNING, logger="autoops"):
        result = fleet.deployer(on_phase=tamper).deploy(app, release_id="r2")

    assert result.ok
    assert {host.host: host.uploaded for host in result.hosts} == {
        altered.address: True,
        removed.address: True,
        intact.address: False,
    }
    assert "kept artifact's sha256 differs" in caplog.text
    assert "kept by an earlier deploy is gone" in caplog.text
    for server in fleet.servers:
        assert fleet.current(server) == "releases/r2"
        assert (fleet.root(server) / "releases" / "r2" / "static" / "blob.bin").read_bytes() == (
            app / "static" / "blob.bin"
        ).read_bytes()
        assert len(kept_artifacts(fleet, server)) == 1


def test_reuse_artifact_off_keeps_no_copy_and_removes_an_old_one(
    fleet: Fleet, tmp_path: Path
) -> None:
    app = fleet.app(tmp_path, 1)
    fleet.deployer().deploy(app, release_id="r1")
    assert all(kept_artifacts(fleet, server) for server in fleet.servers)

    result = fleet.deployer(reuse_artifact=False).deploy(app, release_id="r2")

    assert [host.uploaded for host in result.hosts] == [True] * 3
    for server in fleet.servers:
        assert kept_artifacts(fleet, server) == []
        assert fleet.current(server) == "releases/r2"


def test_failures_within_max_failures_leave_the_healthy_hosts_deployed(
    fleet: Fleet, tmp_path: Path
) -> None:
    sick = fleet.servers[1]
    check = HealthCheck.command(f'[ "$APP_PORT" != {fleet.ports[sick.address]} ]', timeout=0.3)
    deployer = fleet.deployer(health_check=check, batch_size=3, max_failures=1)
    deployer.deploy(fleet.app(tmp_path, 1), release_id="r1", check=False)

    with pytest.raises(DeployError, match="within max_failures=1") as caught:
        deployer.deploy(fleet.app(tmp_path, 2), release_id="r2")

    result = caught.value.result
    assert not result.rolled_back
    assert [host.outcome for host in result.hosts] == [
        DeployOutcome.DEPLOYED,
        DeployOutcome.FAILED,
        DeployOutcome.DEPLOYED,
    ]
    assert [fleet.current(server) for server in fleet.servers] == [
        "releases/r2",
        None,
        "releases/r2",
    ]


def test_an_sshd_stopped_as_its_batch_switches_rolls_back_the_hosts_before_it(
    fleet: Fleet, tmp_path: Path
) -> None:
    first, second, victim = fleet.servers
    fleet.deployer().deploy(fleet.app(tmp_path, 1), release_id="r1")

    def stop_before_switch(host: str, phase: str) -> None:
        if host == victim.address and phase == "switch":
            victim.stop()

    with pytest.raises(DeployError) as caught:
        fleet.deployer(on_phase=stop_before_switch).deploy(fleet.app(tmp_path, 2), release_id="r2")

    result = caught.value.result
    assert result.rolled_back
    assert result.host(victim.address).phase == "switch"
    assert [result.host(s.address).outcome for s in (first, second)] == [
        DeployOutcome.ROLLED_BACK
    ] * 2
    assert [fleet.current(server) for server in fleet.servers] == ["releases/r1"] * 3
    assert [result.host(s.address).lock_released for s in fleet.servers] == [True, True, False]


def test_a_hook_that_backgrounds_a_process_without_redirects_does_not_hang(
    fleet: Fleet, tmp_path: Path
) -> None:
    pidfile = tmp_path / "sleeper-{ssh_port}.pid"
    hook = Hook(f"sleep 30 & echo $! > {tmp_path}/sleeper-$DEPLOY_PORT.pid", phase="after_switch")
    deployer = fleet.deployer(
        hooks=[hook],
        host_vars={host: {"DEPLOY_PORT": host.rsplit(":", 1)[1]} for host in fleet.hosts},
        command_timeout=10.0,
    )
    try:
        result = deployer.deploy(fleet.app(tmp_path, 1), release_id="r1")
    finally:
        for server in fleet.servers:
            path = Path(str(pidfile).format(ssh_port=server.port))
            if path.exists():
                fleet.extra_pids.append(int(path.read_text()))
    assert result.ok  # a hang would have hit command_timeout and failed the deploy


def test_an_interrupted_deploy_rolls_back_what_it_switched_and_unlocks(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet.deployer().deploy(fleet.app(tmp_path, 1), release_id="r1")

    def interrupt_at_the_second_switch(host: str, phase: str) -> None:
        if host == fleet.hosts[1] and phase == "switch":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fleet.deployer(on_phase=interrupt_at_the_second_switch).deploy(
            fleet.app(tmp_path, 2), release_id="r2"
        )

    for server in fleet.servers:
        assert fleet.current(server) == "releases/r1"
        assert not (fleet.root(server) / ".autoops-deploy.lock").exists()


def test_only_the_failed_hosts_can_be_retried_with_the_same_release(
    fleet: Fleet, tmp_path: Path
) -> None:
    flag = tmp_path / "broken-{ssh_port}"
    sick = fleet.servers[2]
    Path(str(flag).format(ssh_port=sick.port)).touch()
    deployer = fleet.deployer(
        health_check=HealthCheck.command(f"[ ! -e {tmp_path}/broken-$SSH_PORT ]", timeout=0.3),
        host_vars={s.address: {"SSH_PORT": str(s.port)} for s in fleet.servers},
        batch_size=3,
        max_failures=1,
    )
    first = deployer.deploy(fleet.app(tmp_path, 1), release_id="r1", check=False)
    assert first.failed_hosts == [sick.address]

    Path(str(flag).format(ssh_port=sick.port)).unlink()
    retry = deployer.deploy(fleet.app(tmp_path, 1), release_id="r1", hosts=first.failed_hosts)

    assert [host.host for host in retry.hosts] == [sick.address]
    assert [fleet.current(server) for server in fleet.servers] == ["releases/r1"] * 3


def test_push_config_applies_a_mode_change_even_when_the_content_is_equal(
    fleet: Fleet, template: Path
) -> None:
    deployer = fleet.deployer()
    dest = f"{fleet.base}/{{ssh_port}}/app.conf"
    deployer.push_config(template, dest, {"workers": 1}, mode=0o600, owner="root", group="root")

    again = deployer.push_config(
        template, dest, {"workers": 1}, mode=0o644, owner="root", group="root"
    )

    assert again.changed == fleet.hosts
    for server in fleet.servers:
        stat = (fleet.root(server) / "app.conf").stat()
        assert (stat.st_mode & 0o777, stat.st_uid, stat.st_gid) == (0o644, 0, 0)


def test_push_config_into_a_missing_directory_names_it(fleet: Fleet, template: Path) -> None:
    with pytest.raises(ConfigPushError, match="directory exists"):
        fleet.deployer().push_config(
            template, f"{fleet.base}/{{ssh_port}}/nowhere/app.conf", {"workers": 1}
        )


def test_an_artifact_linking_out_of_the_release_is_refused_and_nothing_outside_changes(
    fleet: Fleet, tmp_path: Path
) -> None:
    outside = tmp_path / "outside" / "dir"
    (outside / "uploads").mkdir(parents=True)
    (outside / "uploads" / "important.txt").write_text("keep me\n")
    app = fleet.app(tmp_path, 1)
    os.symlink(outside, app / "storage")

    with pytest.raises(ConfigError, match=r"'storage' -> .*outside the release"):
        fleet.deployer(shared_dirs=["storage/uploads"]).deploy(app, release_id="r1")

    assert (outside / "uploads" / "important.txt").read_text() == "keep me\n"
    assert not (outside / "uploads").is_symlink()
    for server in fleet.servers:
        assert list((fleet.root(server)).iterdir()) == []


def test_a_shared_dir_through_a_link_inside_the_release_is_refused(
    fleet: Fleet, tmp_path: Path
) -> None:
    app = fleet.app(tmp_path, 1)
    (app / "var" / "storage").mkdir(parents=True)
    os.symlink("var/storage", app / "storage")

    with pytest.raises(ConfigError, match="'storage/uploads' passes through 'storage'"):
        fleet.deployer(shared_dirs=["storage/uploads"]).deploy(app, release_id="r1")

    fleet.deployer(shared_dirs=["var/storage/uploads"]).deploy(app, release_id="r1")
    for server in fleet.servers:
        link = fleet.root(server) / "releases" / "r1" / "var" / "storage" / "uploads"
        assert os.readlink(link) == f"{fleet.root(server)}/shared/var/storage/uploads"


def test_a_failed_unpack_says_tars_reason_and_leaves_no_partial(
    fleet: Fleet, tmp_path: Path
) -> None:
    artifact = tmp_path / "clash.tar"
    with tarfile.open(artifact, "w") as archive:
        for name in ("config", "config/app.ini"):
            info = tarfile.TarInfo(name)
            info.size = 1
            archive.addfile(info, io.BytesIO(b"x"))

    with pytest.raises(DeployError) as caught:
        fleet.deployer().deploy(artifact, release_id="r1")

    first = caught.value.result.hosts[0]
    assert first.error is not None
    assert first.error.startswith("unpack: unpacking release r1 on ")
    assert "config/app.ini: Cannot open: Not a directory" in first.error
    assert "set -e" not in str(caught.value)
    assert "Cannot open: Not a directory" in str(caught.value)
    for server in fleet.servers:
        assert list((fleet.root(server) / "releases").iterdir()) == []
        assert not list(fleet.root(server).glob(".autoops-upload-*"))


def test_a_missing_shared_file_leaves_no_partial_release(fleet: Fleet, tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=r"shared file .*/shared/\.env is missing"):
        fleet.deployer(shared_files=[".env"]).deploy(fleet.app(tmp_path, 1), release_id="r1")

    for server in fleet.servers:
        assert list((fleet.root(server) / "releases").iterdir()) == []
        assert not list(fleet.root(server).glob(".autoops-upload-*"))


def test_a_failing_hook_shows_its_own_stderr_in_the_table_and_the_error(
    fleet: Fleet, tmp_path: Path
) -> None:
    hook = Hook(
        'echo "npm ERR! code ENOTFOUND" >&2\necho "npm ERR! network unreachable" >&2\nexit 4',
        phase="after_unpack",
    )
    with pytest.raises(DeployError) as caught:
        fleet.deployer(hooks=[hook]).deploy(fleet.app(tmp_path, 1), release_id="r1")

    message = str(caught.value)
    assert "export " not in message
    host = caught.value.result.hosts[0]
    assert host.error is not None
    assert "exited 4: npm ERR! network unreachable" in host.error
    assert "npm ERR! code ENOTFOUND" in message
    table = repr(caught.value.result)
    assert "export " not in table
    assert "| npm ERR! code ENOTFOUND" in table


def test_an_unknown_host_key_names_the_host_the_file_and_ssh_keyscan(
    fleet: Fleet, tmp_path: Path
) -> None:
    partial = tmp_path / "partial_known_hosts"
    partial.write_text(fleet.servers[0].host_key_line + "\n")
    second = fleet.servers[1]

    with pytest.raises(DeployError) as caught:
        fleet.deployer(known_hosts=str(partial)).deploy(fleet.app(tmp_path, 1))

    message = str(caught.value)
    assert f"the host key of {second.address} was refused" in message
    assert str(partial) in message
    assert f"ssh-keyscan -p {second.port} 127.0.0.1" in message
    assert "nothing was changed" in message


def test_a_changed_host_key_says_so_and_how_to_replace_it(fleet: Fleet, tmp_path: Path) -> None:
    forged = tmp_path / "forged_known_hosts"
    other_key = fleet.servers[1].host_key_line.split(" ", 1)[1]
    first = fleet.servers[0]
    forged.write_text(f"[127.0.0.1]:{first.port} {other_key}\n")

    with pytest.raises(DeployError) as caught:
        Deployer(
            [first.address],
            f"{fleet.base}/{{ssh_port}}",
            key_filename=str(first.client_key),
            known_hosts=str(forged),
        ).deploy(fleet.app(tmp_path, 1))

    message = str(caught.value)
    assert f"the host key of {first.address} was refused: it has CHANGED" in message
    assert f"ssh-keygen -f {forged} -R '[127.0.0.1]:{first.port}'" in message
    assert fleet.current(first) is None


@pytest.mark.parametrize(
    ("deploy_to", "message"),
    [
        ("/", "root directory"),
        ("//", "root directory"),
        ("/srv/../etc", "not a normalized path .* '/etc'"),
        ("/srv/./app", "not a normalized path"),
        ("/srv//app", "not a normalized path"),
        ("srv/app", "absolute"),
        ("/srv/{APP}", r"\(for root@127.0.0.1:22\) is not a normalized path"),
    ],
)
def test_a_deploy_to_that_is_root_or_not_normalized_is_refused(
    deploy_to: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Deployer(
            ["root@127.0.0.1:22"], deploy_to, host_vars={"root@127.0.0.1:22": {"APP": "../etc"}}
        )
