"""One long-lived ``sh`` per host that runs many scripts, one after another.

Every SSH exec starts the user's login shell, and a login shell often sources slow startup files
(a ``pyenv init`` in ``.bashrc`` costs 0.3 s here), paid on every command. A deploy runs a handful
of scripts per host, so this shell pays that once: each script runs in a subshell (its own
environment and directory, stdin from /dev/null), and a marker carrying a random token and the
exit status ends its stdout and stderr. The script is ``eval``-ed there rather than passed to
``sh -c``, so its text (host variables such as a password included) never appears in a
process's argv, and a syntax error ends only the subshell.
"""

from __future__ import annotations

import secrets
import select
import shlex
import time
from typing import Final

import fabric
import paramiko

from .._errors import ConnectError
from .._ssh import CommandResult, RemoteCommandError, describe_error, tail_lines

__all__ = ["PersistentShell"]

_CHUNK: Final = 65536


class PersistentShell:
    """A ``sh`` reading scripts on stdin over one SSH channel; :meth:`run` runs one script."""

    def __init__(self, connection: fabric.Connection, where: str) -> None:
        self.where = where
        self._token = secrets.token_hex(12)
        self._marker = f"__autoops_done_{self._token}:".encode()
        transport = connection.transport
        if transport is None or not transport.is_active():
            raise ConnectError(f"the SSH connection to {where} is closed")
        try:
            self._channel: paramiko.Channel = transport.open_session()
            self._channel.exec_command("exec sh")
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectError(f"cannot start a shell on {where}: {describe_error(exc)}") from exc
        self._channel.fileno()
        self.broken = False

    def run(
        self, script: str, *, timeout: float, check: bool = True, what: str = "a script"
    ) -> CommandResult:
        """Run ``script`` in a subshell; raise like :func:`autoops._ssh.run` does, naming the
        failure by ``what`` (the script's text is ours, not what the reader needs) and by the
        last line the script wrote to stderr."""
        if self.broken:
            raise ConnectError(f"the shell on {self.where} was lost earlier in this operation")
        token = self._token
        line = (
            f"( eval {shlex.quote(script)} ) </dev/null; __autoops_status=$?; "
            f"printf '__autoops_done_{token}:%s\\n' \"$__autoops_status\"; "
            f"printf '__autoops_done_{token}:\\n' >&2\n"
        )
        started = time.monotonic()
        try:
            self._channel.sendall(line.encode())
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.broken = True
            raise ConnectError(
                f"the SSH connection to {self.where} failed: {describe_error(exc)}"
            ) from exc
        stdout, stderr, status = self._collect(started + timeout, what, timeout)
        result = CommandResult(
            command=script,
            exit_code=status,
            stdout=stdout,
            stderr=stderr,
            duration_seconds=time.monotonic() - started,
        )
        if check and not result.ok:
            tail = tail_lines(stderr)
            last = tail.splitlines()[-1] if tail else "(nothing on stderr)"
            raise RemoteCommandError(
                f"{what} on {self.where} exited {status}: {last}\n{tail}".rstrip(),
                exit_code=status,
                stderr_tail=tail,
            )
        return result

    def _collect(self, deadline: float, what: str, timeout: float) -> tuple[str, str, int]:
        channel = self._channel
        out = bytearray()
        err = bytearray()
        status: int | None = None
        err_done = False
        while status is None or not err_done:
            if channel.recv_ready():
                out += channel.recv(_CHUNK)
                status = self._status(out)
                continue
            if channel.recv_stderr_ready():
                err += channel.recv_stderr(_CHUNK)
                err_done = self._marker in err
                continue
            if channel.closed or channel.eof_received or channel.exit_status_ready():
                self.broken = True
                raise ConnectError(
                    f"the SSH connection to {self.where} was lost while running {what}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.broken = True
                raise RemoteCommandError(
                    f"{what} on {self.where} timed out after {timeout} s",
                    exit_code=None,
                    stderr_tail=tail_lines(err.decode("utf-8", "replace")),
                )
            select.select([channel], [], [], min(remaining, 1.0))
            transport = channel.get_transport()
            if transport is None or not transport.is_active():
                self.broken = True
                raise ConnectError(f"the SSH connection to {self.where} was lost")
        stdout = out[: out.index(self._marker)].decode("utf-8", "replace")
        stderr = err[: err.index(self._marker)].decode("utf-8", "replace")
        return stdout, stderr, status

    def _status(self, buffer: bytearray) -> int | None:
        position = buffer.find(self._marker)
        if position < 0:
            return None
        end = buffer.find(b"\n", position)
        if end < 0:
            return None
        return int(buffer[position + len(self._marker) : end] or b"-1")

    def close(self) -> None:
        self._channel.close()
