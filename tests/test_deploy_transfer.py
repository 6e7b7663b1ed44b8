"""The artifact upload of a deploy: bytes streamed into ``cat`` on an exec channel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _support.sshd import SshServer
from autoops import ConfigError
from autoops._ssh import RemoteFileError, connect
from autoops.deploy._transfer import send_file
from test_ssh import options_for


def test_a_file_arrives_byte_for_byte_under_a_name_that_needs_quoting(
    sshd: SshServer, tmp_path: Path
) -> None:
    local = tmp_path / "artifact.tar"
    local.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    remote = tmp_path / "it's a release; $(touch pwned).tar"
    connection = connect(sshd.address, options_for(sshd))
    try:
        size = send_file(connection, local, str(remote), where="web1", timeout=30)
    finally:
        connection.close()

    assert size == local.stat().st_size
    assert remote.read_bytes() == local.read_bytes()
    assert not (tmp_path / "pwned").exists()


def test_a_missing_remote_directory_is_a_file_error_naming_host_and_path(
    sshd: SshServer, tmp_path: Path
) -> None:
    local = tmp_path / "artifact.tar"
    local.write_bytes(b"x" * 1000)
    remote = str(tmp_path / "missing" / "artifact.tar")
    connection = connect(sshd.address, options_for(sshd))
    try:
        with pytest.raises(RemoteFileError, match="directory exists") as caught:
            send_file(connection, local, remote, where="web1", timeout=30)
    finally:
        connection.close()

    assert "web1" in str(caught.value)
    assert remote in str(caught.value)


def test_a_missing_local_file_is_a_config_error(sshd: SshServer, tmp_path: Path) -> None:
    connection = connect(sshd.address, options_for(sshd))
    try:
        with pytest.raises(ConfigError, match="no such file"):
            send_file(connection, tmp_path / "absent.tar", "x", where="web1", timeout=30)
    finally:
        connection.close()
