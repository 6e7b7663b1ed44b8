"""Fleet against real sshd "hosts": parallel commands, transfers and facts, and every fault
ending in a clear per-host result, never a hang of the whole run."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from _support.sshd import SshServer
from autoops import ConfigError, Fleet, FleetError, HostFacts
from autoops.fleet._fleet import _local_name

Hosts = tuple[list[SshServer], Path]


@pytest.fixture
def hosts(sshd_factory: Callable[[], SshServer], tmp_path: Path) -> Hosts:
    """Three sshd "hosts" and one known_hosts file holding all their keys."""
    servers = [sshd_factory() for _ in range(3)]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(server.host_key_line + "\n" for server in servers))
    return servers, known_hosts


def make_fleet(hosts: Hosts, **options: object) -> Fleet:
    servers, known_hosts = hosts
    values: dict[str, object] = {
        "key_filename": str(servers[0].client_key),
        "known_hosts": str(known_hosts),
        "connect_timeout": 5.0,
        "progress": False,
    }
    values.update(options)
    return Fleet([server.address for server in servers], **values)  # type: ignore[arg-type]


def test_each_host_reports_its_own_exit_code_and_output(hosts: Hosts) -> None:
    servers, _ = hosts
    names = {
        server.address: {"NODE": f"web-{i}.prod.example.com"} for i, server in enumerate(servers)
    }
    with make_fleet(hosts, host_vars=names) as fleet:
        result = fleet.run(
            'echo "on $NODE"; echo "warn $NODE" >&2; [ "$NODE" != web-1.prod.example.com ]'
        )
    assert [host.host for host in result] == [server.address for server in servers]
    for index, server in enumerate(servers):
        host = result[server.address]
        assert host.stdout == f"on web-{index}.prod.example.com\n"
        assert host.stderr == f"warn web-{index}.prod.example.com\n"
    assert result[servers[1].address].status == "failed"
    assert result[servers[1].address].exit_code == 1
    assert result[servers[0].address].ok
    assert result[servers[2].address].ok
    assert not result.ok
    assert result.failed_hosts == [servers[1].address]


def test_raise_on_failure_names_the_failed_hosts(hosts: Hosts) -> None:
    servers, _ = hosts
    with make_fleet(hosts) as fleet:
        result = fleet.run("exit 7")
    with pytest.raises(FleetError, match="failed on 3 of 3") as caught:
        result.raise_on_failure()
    assert caught.value.result is result
    assert servers[0].address in str(caught.value)


def test_a_successful_run_prints_a_table_and_an_html_table(hosts: Hosts) -> None:
    servers, _ = hosts
    with make_fleet(hosts) as fleet:
        result = fleet.run("uptime").raise_on_failure()
    table = str(result)
    html = result._repr_html_()
    for server in servers:
        assert server.address in table
        assert server.address in html
    assert "3 ok" in table
    assert "load average" in result[servers[0].address].stdout


def test_a_second_run_reuses_the_connections(hosts: Hosts) -> None:
    with make_fleet(hosts) as fleet:
        first = fleet.run("echo $PPID")
        second = fleet.run("echo $PPID")
    # The same sshd session process (the shell's parent) serves both runs on each host.
    for before, after in zip(first, second, strict=True):
        assert before.ok
        assert before.stdout == after.stdout


def test_an_argv_list_and_env_values_are_quoted(hosts: Hosts) -> None:
    with make_fleet(hosts) as fleet:
        result = fleet.run(
            ["printf", "%s|", "a b", "$(id)", "it's"], env={"GREETING": "x'; echo hacked"}
        )
        greeting = fleet.run('printf %s "$GREETING"', env={"GREETING": "x'; echo hacked"})
    assert {host.stdout for host in result} == {"a b|$(id)|it's|"}
    assert {host.stdout for host in greeting} == {"x'; echo hacked"}


def test_scripts_and_their_environment_never_appear_in_argv(hosts: Hosts) -> None:
    secret = "s3cr3t-" + os.urandom(6).hex()
    with make_fleet(hosts) as fleet:
        result = fleet.run(f": {secret}; ps -eo args", env={"TOKEN": secret})
    result.raise_on_failure()
    for host in result:
        assert secret not in host.stdout


def test_a_down_host_is_unreachable_and_holds_no_one_up(hosts: Hosts) -> None:
    servers, _ = hosts
    servers[2].stop()
    with make_fleet(hosts) as fleet:
        result = fleet.run("echo alive")
    down = result[servers[2].address]
    assert down.status == "unreachable"
    assert "cannot reach" in down.error
    assert [result[s.address].stdout for s in servers[:2]] == ["alive\n", "alive\n"]


def test_an_unknown_host_key_is_refused_for_that_host_only(hosts: Hosts) -> None:
    servers, known_hosts = hosts
    known_hosts.write_text("".join(s.host_key_line + "\n" for s in servers[:2]))
    with make_fleet(hosts) as fleet:
        result = fleet.run("true")
    stranger = result[servers[2].address]
    assert stranger.status == "refused"
    assert "not in" in stranger.error
    assert "ssh-keyscan" in stranger.error
    assert result[servers[0].address].ok
    assert result[servers[1].address].ok


def test_a_command_that_never_ends_times_out_is_stopped_and_holds_no_one_up(
    hosts: Hosts,
) -> None:
    servers, _ = hosts
    marker = f"1{os.getpid() % 1000}{time.monotonic_ns() % 100000}"
    slow = {servers[0].address: {"SLOW": "1"}}
    started = time.monotonic()
    with make_fleet(hosts, host_vars=slow) as fleet:
        result = fleet.run(f'if [ "$SLOW" = 1 ]; then sleep {marker}; fi; echo done', timeout=4)
    elapsed = time.monotonic() - started
    hung = result[servers[0].address]
    assert hung.status == "timeout"
    assert "timeout of 4 s" in hung.error
    assert [result[s.address].stdout for s in servers[1:]] == ["done\n", "done\n"]
    assert elapsed < 30  # bounded, not a hang (the figure itself is not what is tested)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, check=False)
        if left.returncode != 0:
            break
        time.sleep(0.2)
    assert left.returncode != 0, "the timed-out command still runs on the host"


def test_a_command_that_prints_without_end_still_times_out(hosts: Hosts) -> None:
    servers, _ = hosts
    with make_fleet(hosts, max_output_bytes=4096) as fleet:
        result = fleet.run("yes flood", timeout=4)
    outcomes = [(host.status, host.stdout_cut_bytes, host.error) for host in result]
    # CI once saw one of three connections break mid-flood; sshd's own log says why.
    logs = [(server.workdir / "sshd.log").read_text(errors="replace")[-2000:] for server in servers]
    assert {host.status for host in result} == {"timeout"}, (outcomes, logs)
    # The deadline held while output was flowing (not only in a quiet moment).
    assert any(host.stdout_cut_bytes > 0 for host in result), outcomes


def test_a_host_whose_sshd_dies_mid_command_is_lost_and_never_rerun(
    hosts: Hosts, tmp_path: Path
) -> None:
    servers, _ = hosts
    tally = tmp_path / "tally"
    tally.touch()
    os.chmod(tmp_path, 0o777)  # noqa: S103 - the ssh user appends to it
    victim = {servers[0].address: {"VICTIM": "1"}}

    def kill_once_it_runs() -> None:
        deadline = time.monotonic() + 25
        while not tally.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        servers[0].stop()

    killer = threading.Thread(target=kill_once_it_runs)
    killer.start()
    try:
        with make_fleet(hosts, host_vars=victim) as fleet:
            result = fleet.run(
                f'[ "$VICTIM" = 1 ] && echo ran >> {tally} && sleep 20; echo fine', timeout=30
            )
    finally:
        killer.join()
    lost = result[servers[0].address]
    assert lost.status == "lost"
    assert "outcome is unknown" in lost.error
    assert tally.read_text() == "ran\n"
    assert [result[s.address].stdout for s in servers[1:]] == ["fine\n", "fine\n"]


def test_a_host_lost_while_its_output_floods_in_is_lost_with_a_reason(hosts: Hosts) -> None:
    """Reading a flood of output sends window adjustments, so a connection that breaks then can
    fail inside paramiko's recv() with a bare EOFError. That was reported as "unreachable" (so
    never sent, safe to re-run) with an empty error; the command had run."""
    servers, _ = hosts
    marker = f"flood-{os.getpid()}-{time.monotonic_ns()}"
    victim = {servers[0].address: {"MARK": marker}}

    def kill_the_session_once_it_floods() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = subprocess.run(
                ["pgrep", "-f", f"yes {marker}"], stdout=subprocess.DEVNULL, check=False
            )
            if found.returncode == 0:
                break
            time.sleep(0.05)
        time.sleep(0.5)  # well into the flood
        servers[0].drop_sessions()

    killer = threading.Thread(target=kill_the_session_once_it_floods)
    killer.start()
    try:
        with make_fleet(hosts, max_output_bytes=4096, host_vars=victim) as fleet:
            result = fleet.run('yes "${MARK:-flood}"', timeout=6)
    finally:
        killer.join()
    lost = result[servers[0].address]
    assert lost.status == "lost", (lost.status, lost.error)
    assert "outcome is unknown" in lost.error
    assert [result[s.address].status for s in servers[1:]] == ["timeout", "timeout"]


def test_output_beyond_the_cap_is_streamed_cut_and_counted(hosts: Hosts) -> None:
    total = 40 * 1024 * 1024
    with make_fleet(hosts, max_output_bytes=64 * 1024) as fleet:
        result = fleet.run(f"head -c {total} /dev/zero | tr '\\0' x; echo; echo last line")
    for host in result:
        assert host.ok
        assert len(host.stdout_bytes) == 64 * 1024
        assert host.stdout_cut_bytes == total + len("\nlast line\n") - 64 * 1024
        assert host.stdout.endswith("last line\n")
        assert host.truncated
        assert "of output cut" in host.summary()


def test_output_that_is_not_utf8_is_kept_as_bytes(hosts: Hosts) -> None:
    with make_fleet(hosts) as fleet:
        result = fleet.run(r"printf 'caf\351 \377\n'")
    for host in result:
        assert host.stdout_bytes == b"caf\xe9 \xff\n"
        assert host.stdout == "caf\ufffd \ufffd\n"
    assert "caf" in result.as_json()


def test_streaming_prefixes_each_line_with_its_host(hosts: Hosts) -> None:
    servers, _ = hosts
    out, err = io.StringIO(), io.StringIO()
    with make_fleet(hosts) as fleet:
        fleet.run("echo one; echo two; printf partial; echo oops >&2", stream=(out, err))
    for server in servers:
        for line in ("one", "two", "partial"):
            assert f"{server.address} | {line}\n" in out.getvalue()
        assert f"{server.address} | oops\n" in err.getvalue()


def test_sudo_without_sudo_on_the_host_fails_with_its_message(hosts: Hosts) -> None:
    if subprocess.run(["sh", "-c", "command -v sudo"], check=False).returncode == 0:
        pytest.skip("sudo is installed here; this test is about a host without it")
    with make_fleet(hosts) as fleet:
        result = fleet.run("id -u", sudo=True)
    for host in result:
        assert host.status == "failed"
        assert "sudo" in host.stderr


@pytest.mark.parametrize(
    ("hosts_given", "message"),
    [
        (["a@web-1.example.com:22", "a@web-1.example.com"], "same host as"),
        (["a@web-1.example.com:22", "a@web 2", "b@web-3.example.com:99999"], "2 problem"),
        ("web-1.example.com", "list of hosts"),
        ([], "list of hosts"),
    ],
)
def test_a_bad_host_list_is_a_config_error_naming_each_entry(
    hosts_given: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Fleet(hosts_given)


def test_host_vars_for_unknown_hosts_or_bad_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not in hosts"):
        Fleet(["a@h1.example.com"], host_vars={"a@h2.example.com": {"X": "1"}})
    with pytest.raises(ConfigError, match="not a valid environment variable"):
        Fleet(["a@h1.example.com"], host_vars={"a@h1.example.com": {"1X": "1"}})


def test_from_settings_takes_the_connection_part_of_a_deploy_table(hosts: Hosts) -> None:
    servers, known_hosts = hosts
    section = {
        "hosts": [server.address for server in servers],
        "deploy_to": "/srv/app",
        "keep_releases": 3,
        "key_filename": str(servers[0].client_key),
        "known_hosts": str(known_hosts),
        "concurrency": 2,
    }
    with Fleet.from_settings(section, progress=False) as fleet:
        assert fleet.concurrency == 2
        assert fleet.run("true").ok
    with pytest.raises(ConfigError, match="needs hosts"):
        Fleet.from_settings({"deploy_to": "/srv/app"})


def test_put_replaces_the_file_atomically_with_its_mode(hosts: Hosts, tmp_path: Path) -> None:
    source = tmp_path / "app.conf"
    source.write_bytes(os.urandom(300_000))
    target_dir = tmp_path / "remote"
    target_dir.mkdir()
    os.chmod(tmp_path, 0o755)  # noqa: S103
    os.chmod(target_dir, 0o777)  # noqa: S103
    (target_dir / "app.conf").write_text("old")
    with make_fleet(hosts) as fleet:
        result = fleet.put(source, str(target_dir / "app.conf"), mode=0o640)
    result.raise_on_failure()
    target = target_dir / "app.conf"
    assert target.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in target_dir.iterdir()) == ["app.conf"]
    assert {host.sha256 for host in result} == {
        __import__("hashlib").sha256(source.read_bytes()).hexdigest()
    }


def test_put_into_a_missing_directory_fails_per_host_and_leaves_nothing(
    hosts: Hosts, tmp_path: Path
) -> None:
    source = tmp_path / "app.conf"
    source.write_text("x")
    with make_fleet(hosts) as fleet:
        result = fleet.put(source, str(tmp_path / "missing" / "app.conf"))
    assert {host.status for host in result} == {"failed"}
    assert "directory exists" in result.hosts[0].error
    assert not (tmp_path / "missing").exists()


def test_get_names_each_copy_by_its_host(hosts: Hosts, tmp_path: Path) -> None:
    servers, _ = hosts
    remote = tmp_path / "report.log"
    remote.write_bytes(b"line\n" * 10000)
    with make_fleet(hosts) as fleet:
        result = fleet.get(str(remote), tmp_path / "collected")
        missing = fleet.get(str(tmp_path / "nope.log"), tmp_path / "collected")
    result.raise_on_failure()
    for server in servers:
        copy = tmp_path / "collected" / _local_name(server.address) / "report.log"
        assert copy.read_bytes() == remote.read_bytes()
        assert result[server.address].path == str(copy)
    assert {host.status for host in missing} == {"failed"}
    assert "cannot read" in missing.hosts[0].error


def test_local_names_of_hosts_with_dots_stay_readable() -> None:
    assert _local_name("deploy@web-1.prod.example.com:22") == "deploy@web-1.prod.example.com_22"
    assert _local_name("root@[::1]:2222") == "root@_1_2222"


def test_facts_describe_each_host_in_one_round_trip(hosts: Hosts) -> None:
    servers, _ = hosts
    with make_fleet(hosts) as fleet:
        facts = fleet.facts()
    assert list(facts) == [server.address for server in servers]
    for server in servers:
        host = facts[server.address]
        assert isinstance(host, HostFacts)
        assert host.kernel == os.uname().release
        assert host.cpu_count == os.cpu_count()
        assert host.memory_total_bytes > host.memory_available_bytes > 0
        assert 0 < host.memory_available_percent <= 100
        assert host.disk("/").total_bytes > 0
        assert 0 <= host.disk("/").use_percent <= 100
        assert host.uptime_seconds > 0
        assert len(host.load_average) == 3
        assert host.load_per_core >= 0
        assert server.port in host.listening_ports
        assert host.os_name


def test_facts_from_an_unreachable_host_raise_unless_told_to_leave_it_out(hosts: Hosts) -> None:
    servers, _ = hosts
    servers[1].stop()
    with make_fleet(hosts) as fleet:
        with pytest.raises(FleetError, match="facts failed on 1 of 3"):
            fleet.facts()
        partial = fleet.facts(raise_on_failure=False)
    assert list(partial) == [servers[0].address, servers[2].address]


def test_an_interrupted_run_stops_at_once_and_stops_the_commands(hosts: Hosts) -> None:
    marker = f"2{os.getpid() % 1000}{time.monotonic_ns() % 100000}"
    interrupt = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    interrupt.start()
    with make_fleet(hosts) as fleet, pytest.raises(KeyboardInterrupt):
        fleet.run(f"sleep {marker}", timeout=60)
    interrupt.join()
    assert time.monotonic() - started < 30  # not the 60 s timeout
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, check=False)
        if left.returncode != 0:
            break
        time.sleep(0.2)
    assert left.returncode != 0, "the interrupted commands still run on the hosts"
