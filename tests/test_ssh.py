"""The shared SSH layer against a real sshd: host keys checked, commands quoted, failures clear."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from _support.sshd import SshServer
from autoops import AuthenticationError, ConfigError, ConnectError
from autoops._ssh import HostKeyError, RemoteCommandError, SshHost, SshOptions, connect, run


def options_for(server: SshServer, **overrides: object) -> SshOptions:
    values: dict[str, object] = {
        "key_filename": str(server.client_key),
        "known_hosts": str(server.known_hosts),
        "connect_timeout": 5.0,
    }
    values.update(overrides)
    return SshOptions(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("deploy@web1:2222", SshHost(host="web1", user="deploy", port=2222)),
        ("web1", SshHost(host="web1")),
        ("root@[::1]:22", SshHost(host="::1", user="root", port=22)),
    ],
)
def test_host_strings_parse(text: str, expected: SshHost) -> None:
    assert SshHost.parse(text) == expected


@pytest.mark.parametrize("text", ["", "user@", "a@b:0", "a@b:99999", "a b", "@host"])
def test_malformed_host_strings_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        SshHost.parse(text)


def test_a_command_runs_with_its_arguments_quoted(sshd: SshServer) -> None:
    connection = connect(sshd.address, options_for(sshd))
    try:
        result = run(connection, ["printf", "%s|", "a b", "$(id)", "it's"])
    finally:
        connection.close()
    assert result.stdout == "a b|$(id)|it's|"


def test_an_unknown_host_key_is_refused_by_default(sshd: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError, match="not in"):
        connect(sshd.address, options_for(sshd, known_hosts=str(empty)))


def test_trusting_an_unknown_host_is_an_explicit_choice(
    sshd: SshServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    connection = connect(
        sshd.address, options_for(sshd, known_hosts=str(empty), trust_unknown_hosts=True)
    )
    try:
        result = run(connection, ["echo", "trusted"])
    finally:
        connection.close()
    assert result.stdout == "trusted\n"
    assert any(
        record.levelno == logging.WARNING and "trusting the host key" in record.getMessage()
        for record in caplog.records
    )
    assert empty.read_text() == "", "a trusted key was written to known_hosts"


def test_a_changed_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    other = tmp_path / "known_hosts"
    other.write_text(
        f"[127.0.0.1]:{sshd.port} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIGJ0YWQga2V5IGJhZCBrZXkgYmFkIGtleSBiYWQga2V5\n"
    )
    with pytest.raises(HostKeyError, match="CHANGED"):
        connect(sshd.address, options_for(sshd, known_hosts=str(other)))


def test_a_wrong_key_is_an_authentication_error(sshd: SshServer, tmp_path: Path) -> None:
    from _support.sshd import keygen

    stranger = tmp_path / "stranger"
    keygen(stranger)
    with pytest.raises(AuthenticationError, match="refused"):
        connect(sshd.address, options_for(sshd, key_filename=str(stranger)))


def test_a_failing_command_raises_with_its_stderr(sshd: SshServer) -> None:
    connection = connect(sshd.address, options_for(sshd))
    try:
        with pytest.raises(RemoteCommandError) as caught:
            run(connection, "echo boom >&2; exit 3")
    finally:
        connection.close()
    assert caught.value.exit_code == 3
    assert "boom" in caught.value.stderr_tail


def test_a_closed_port_is_a_connect_error_after_retries(sshd: SshServer) -> None:
    from autoops import RetryPolicy

    sshd.stop()
    with pytest.raises(ConnectError, match="gave up after 2 attempts"):
        connect(
            sshd.address,
            options_for(sshd),
            retry=RetryPolicy(attempts=2, wait_initial=0.01, wait_max=0.01, jitter=0),
        )


def test_files_round_trip_over_sftp(sshd: SshServer, tmp_path: Path) -> None:
    from autoops._ssh import read_bytes, upload, upload_bytes

    local = tmp_path / "payload.bin"
    local.write_bytes(b"\x00payload" * 1000)
    connection = connect(sshd.address, options_for(sshd))
    try:
        size = upload(connection, local, str(tmp_path / "copy.bin"))
        upload_bytes(connection, b"small", str(tmp_path / "small.txt"))
        assert read_bytes(connection, str(tmp_path / "copy.bin")) == local.read_bytes()
        assert read_bytes(connection, str(tmp_path / "missing")) is None
    finally:
        connection.close()
    assert size == local.stat().st_size
    assert (tmp_path / "small.txt").read_bytes() == b"small"


def test_writing_into_a_missing_directory_is_a_file_error_not_a_connect_error(
    sshd: SshServer, tmp_path: Path
) -> None:
    from autoops._ssh import RemoteFileError, upload_bytes

    connection = connect(sshd.address, options_for(sshd))
    try:
        with pytest.raises(RemoteFileError, match="directory exists"):
            upload_bytes(connection, b"x", str(tmp_path / "missing" / "file"))
    finally:
        connection.close()


def test_aes_gcm_is_negotiated_where_the_server_offers_it(sshd: SshServer) -> None:
    connection = connect(sshd.address, options_for(sshd))
    try:
        transport = connection.transport
        assert transport is not None
        assert transport.local_cipher == "aes128-gcm@openssh.com"
        assert transport.remote_cipher == "aes128-gcm@openssh.com"
        assert run(connection, ["echo", "ok"]).stdout == "ok\n"
    finally:
        connection.close()


def test_a_server_without_aes_gcm_gets_aes_ctr(sshd: SshServer, tmp_path: Path) -> None:
    from _support.sshd import make_server

    server = make_server(tmp_path / "ctr-only", sshd.client_key)
    server.extra_options["Ciphers"] = "aes256-ctr,aes128-ctr"
    server.start()
    try:
        connection = connect(server.address, options_for(server))
        try:
            transport = connection.transport
            assert transport is not None
            assert transport.local_cipher == "aes128-ctr"
            assert run(connection, ["echo", "ok"]).stdout == "ok\n"
        finally:
            connection.close()
    finally:
        server.stop()


@pytest.mark.parametrize("with_openssl", [True, False], ids=["openssl", "sha256sum"])
def test_the_remote_sha256_command_gives_the_digest_with_or_without_openssl(
    sshd: SshServer, tmp_path: Path, with_openssl: bool
) -> None:
    """The host's openssl when it has one, coreutils otherwise; both give the same first word,
    also for a name with spaces and quotes."""
    import hashlib
    import shlex
    import shutil

    from autoops._ssh import sha256_command

    payload = bytes(range(256)) * 4099
    target = tmp_path / "it's a file.bin"
    target.write_bytes(payload)
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ["sh", "sha256sum"] + (["openssl"] if with_openssl else []):
        found = shutil.which(tool)
        assert found is not None, f"{tool} is needed on this machine"
        (tools / tool).symlink_to(found)
    script = f"PATH={shlex.quote(str(tools))}; line=$({sha256_command(shlex.quote(str(target)))}); "
    script += 'printf "%s" "${line%% *}"'
    connection = connect(sshd.address, options_for(sshd))
    try:
        result = run(connection, ["sh", "-c", script])
    finally:
        connection.close()
    assert result.stdout == hashlib.sha256(payload).hexdigest()
