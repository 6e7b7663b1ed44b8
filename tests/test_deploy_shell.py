"""The deployer's long-lived remote shell: one login per host, many scripts, each isolated."""

from __future__ import annotations

from pathlib import Path

import pytest

from _support.sshd import SshServer
from autoops import ConnectError
from autoops._ssh import RemoteCommandError, SshOptions
from autoops.deploy._remote import HostSession


def session_for(server: SshServer) -> HostSession:
    options = SshOptions(
        key_filename=str(server.client_key),
        known_hosts=str(server.known_hosts),
        connect_timeout=5.0,
        command_timeout=10.0,
    )
    return HostSession(server.address, options, "/tmp", {})


def test_scripts_keep_their_output_exactly_and_do_not_share_state(sshd: SshServer) -> None:
    session = session_for(sshd)
    try:
        first = session.sh("export LEAK=1; cd /; printf 'no newline'; printf 'err' >&2")
        second = session.sh('printf "%s|%s" "${LEAK:-unset}" "$(pwd)"')
    finally:
        session.close()
    assert (first.stdout, first.stderr) == ("no newline", "err")
    assert second.stdout.startswith("unset|")
    assert second.stdout != "unset|/"


def test_a_failing_script_raises_with_its_exit_code_and_stderr(sshd: SshServer) -> None:
    session = session_for(sshd)
    try:
        with pytest.raises(RemoteCommandError) as caught:
            session.sh("echo boom >&2; exit 7")
        assert session.sh("echo still usable").stdout == "still usable\n"
    finally:
        session.close()
    assert caught.value.exit_code == 7
    assert "boom" in caught.value.stderr_tail


def test_a_script_that_overruns_its_timeout_raises_and_the_next_one_runs(sshd: SshServer) -> None:
    session = session_for(sshd)
    try:
        with pytest.raises(RemoteCommandError, match="timed out"):
            session.sh("sleep 5", timeout=0.3)
        assert session.sh("echo next").stdout == "next\n"
    finally:
        session.close()


def test_a_lost_server_is_a_connect_error(sshd: SshServer) -> None:
    session = session_for(sshd)
    try:
        session.sh("true")
        sshd.stop()
        with pytest.raises(ConnectError):
            session.sh("true")
    finally:
        session.close()


def test_a_script_text_never_appears_in_any_process_argv(sshd: SshServer, tmp_path: Path) -> None:
    pattern = tmp_path / "pattern"
    pattern.write_text("hunter2\n")
    session = session_for(sshd)
    try:
        seen = session.sh(
            "export DB_PASSWORD=hunter2; "
            f"cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c -f {pattern} || true"
        )
    finally:
        session.close()
    assert seen.stdout.strip() == "0"


def test_a_syntax_error_fails_the_script_not_the_shell(sshd: SshServer) -> None:
    session = session_for(sshd)
    try:
        broken = session.sh("if then fi (", check=False)
        after = session.sh("echo alive")
    finally:
        session.close()
    assert broken.exit_code != 0
    assert after.stdout == "alive\n"
