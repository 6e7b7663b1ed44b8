"""Sending a release artifact to a host: its bytes streamed into ``cat`` on an exec channel.

paramiko's SFTP ``put`` answers every 32 KiB write with a status that the client parses in
Python; an exec channel into ``cat`` carries the same bytes with nothing coming back until the
end. Measured on loopback with two 10 MB uploads: 0.21 s of client CPU over SFTP against 0.14 s
this way, and client CPU is what bounds a 50-host deploy on a small machine. The artifact's
SHA-256 is still checked on the host before anything is unpacked.
"""

from __future__ import annotations

import os
import shlex
from typing import Final

import fabric
import paramiko

from .._errors import ConfigError, ConnectError
from .._ssh import RemoteFileError, describe_error

__all__ = ["send_file"]

# Small enough that 50 hosts in flight hold a few MiB, large enough that reading is cheap.
_CHUNK: Final = 256 * 1024


def send_file(
    connection: fabric.Connection,
    local_path: str | os.PathLike[str],
    remote_path: str,
    *,
    where: str,
    timeout: float | None,
) -> int:
    """Write the local file to ``remote_path`` on the host (created or truncated) and return
    its size. The host refusing the path raises :class:`RemoteFileError`; a connection lost
    or silent for ``timeout`` seconds raises :class:`ConnectError`."""
    try:
        source = open(local_path, "rb")  # noqa: SIM115 - closed below, after the channel
    except FileNotFoundError:
        raise ConfigError(f"cannot upload {os.fspath(local_path)}: no such file") from None
    channel: paramiko.Channel | None = None
    try:
        transport = connection.client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectError(f"uploading to {remote_path} on {where} failed: not connected")
        channel = transport.open_session(timeout=timeout)
        channel.settimeout(timeout)
        channel.exec_command(f"cat > {shlex.quote(remote_path)}")
        size = 0
        while chunk := source.read(_CHUNK):
            _send_all(channel, chunk)
            size += len(chunk)
        channel.shutdown_write()
        if not channel.status_event.wait(timeout):
            raise ConnectError(
                f"uploading to {remote_path} on {where} failed: no answer in {timeout:g} s"
            )
        status = channel.recv_exit_status()
        error = channel.recv_stderr(4096).decode("utf-8", "replace").strip()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise ConnectError(
            f"uploading to {remote_path} on {where} failed: {describe_error(exc)}"
        ) from exc
    finally:
        source.close()
        if channel is not None:
            channel.close()
    if status != 0:
        raise RemoteFileError(
            f"uploading to {remote_path} on {where} failed: {error or f'exit status {status}'}; "
            "check that its directory exists and the SSH user may write there"
        )
    return size


def _send_all(channel: paramiko.Channel, data: bytes) -> None:
    """``channel.sendall`` without its copies: paramiko's loop does ``s = s[sent:]`` after every
    32 KiB packet, copying the rest of the buffer each time (quadratic in the chunk size); a
    memoryview's slices copy nothing."""
    view = memoryview(data)
    while view:
        sent = channel.send(view)
        if sent == 0:
            # paramiko's own sendall would spin here: the channel was closed under us.
            raise EOFError("the channel closed while sending")
        view = view[sent:]
