"""One command on one host over its own SSH channel: the script on stdin, output kept bounded.

The channel runs ``exec sh`` (or ``exec sudo -n sh``) and the script arrives on its stdin inside
one brace group, so sh parses all of it before running any (a script cut short in transit never
runs) and its text, environment values included, never appears in a process's argv. The group
keeps stdin open as a watchdog: when the channel closes (our timeout, or we went away) the
watchdog's ``read`` sees end-of-file and stops the command, so a timed-out command does not run
on forever on the host.
"""

from __future__ import annotations

import logging
import select
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TextIO

import paramiko

from .._ssh import describe_error

__all__ = ["ChannelOutcome", "LinePrinter", "OutputTail", "run_script", "wrap_script"]

log = logging.getLogger(__name__)

_CHUNK: Final = 65536
#: After the exit status arrives, how long to wait for the output to end: a command that left a
#: background process holding stdout open would otherwise hold the host until its timeout.
_DRAIN_SECONDS: Final = 1.0
#: A line longer than this is printed in pieces when streaming, so one endless line cannot grow
#: the buffer without bound.
_LONGEST_LINE: Final = 65536

_UNKNOWN: Final = "its outcome is unknown (not re-run)"
_LOST: Final = f"the connection was lost while the command ran; {_UNKNOWN}"

OutputSink = Callable[[str, bytes], None]


class OutputTail:
    """The last ``limit`` bytes of a stream, and how many bytes before them were dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.cut = 0
        self._buffer = bytearray()

    def add(self, data: bytes) -> None:
        self._buffer += data
        # Trim in large steps so a stream of small chunks costs no quadratic copying.
        if len(self._buffer) > 2 * self.limit + _CHUNK:
            self._trim()

    def _trim(self) -> None:
        excess = len(self._buffer) - self.limit
        if excess > 0:
            del self._buffer[:excess]
            self.cut += excess

    def value(self) -> bytes:
        self._trim()
        return bytes(self._buffer)


class LinePrinter:
    """Prints each complete output line as ``host | line`` on a shared stream (stdout lines on
    ``out``, stderr lines on ``err``); one lock keeps lines from different hosts whole."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self._streams = {"stdout": out, "stderr": err}
        self._lock = threading.Lock()

    def sink(self, host: str) -> OutputSink:
        pending: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

        def feed(stream: str, data: bytes) -> None:
            buffer = pending[stream]
            buffer += data
            if not data:  # end of output: print what is left
                lines, rest = [bytes(buffer)] if buffer else [], b""
            else:
                *lines, rest = bytes(buffer).split(b"\n")
                if len(rest) > _LONGEST_LINE:
                    lines.append(rest)
                    rest = b""
            buffer[:] = rest
            if lines:
                text = "".join(f"{host} | {line.decode('utf-8', 'replace')}\n" for line in lines)
                with self._lock:
                    self._streams[stream].write(text)
                    self._streams[stream].flush()

        return feed


def wrap_script(script: str, environment: Mapping[str, str]) -> bytes:
    """The text sent on the channel's stdin: the watchdog group around ``script``."""
    exports = "".join(
        f"export {name}={shlex.quote(value)}\n" for name, value in environment.items()
    )
    body = shlex.quote(exports + script)
    return (
        "{\n"
        "exec 3<&0 </dev/null\n"
        f"( eval {body} ) &\n"
        "__autoops_command=$!\n"
        "{ read __autoops_line; pkill -TERM -P $__autoops_command; kill -TERM $__autoops_command; }"
        " <&3 >/dev/null 2>&1 &\n"
        "__autoops_watchdog=$!\n"
        "exec 3<&-\n"
        "wait $__autoops_command\n"
        "__autoops_status=$?\n"
        "kill $__autoops_watchdog 2>/dev/null\n"
        "exit $__autoops_status\n"
        "}\n"
    ).encode()


@dataclass(slots=True)
class ChannelOutcome:
    """How the channel ended: ``sent`` says whether the script reached the host (after that a
    failure leaves the outcome unknown), ``exit_code`` is ``None`` unless it finished."""

    sent: bool
    exit_code: int | None
    stdout: OutputTail
    stderr: OutputTail
    timed_out: bool = False
    error: str = ""


def run_script(
    transport: paramiko.Transport,
    script: str,
    *,
    environment: Mapping[str, str],
    sudo: bool,
    timeout: float,
    open_timeout: float,
    max_output_bytes: int,
    sink: OutputSink | None = None,
) -> ChannelOutcome:
    """Run ``script`` on a new channel of ``transport`` and collect its output until it exits,
    the timeout passes or the connection is lost."""
    stdout, stderr = OutputTail(max_output_bytes), OutputTail(max_output_bytes)
    started = time.monotonic()
    deadline = started + timeout
    channel: paramiko.Channel | None = None
    try:
        channel = transport.open_session(timeout=open_timeout)
        channel.exec_command("exec sudo -n sh" if sudo else "exec sh")
    except (OSError, EOFError, paramiko.SSHException) as exc:
        # The shell reads its script from stdin, and none was sent: nothing ran.
        if channel is not None:
            _close_quietly(channel)
        return ChannelOutcome(
            False, None, stdout, stderr, error=f"cannot start a shell: {describe_error(exc)}"
        )
    try:
        try:
            channel.sendall(wrap_script(script, environment))
        except (OSError, EOFError, paramiko.SSHException) as exc:
            return ChannelOutcome(
                True,
                None,
                stdout,
                stderr,
                error=f"the connection failed while sending ({describe_error(exc)}); {_UNKNOWN}",
            )
        try:
            return _collect(channel, transport, stdout, stderr, deadline, timeout, sink)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            # Reading sends window adjustments, so a connection that breaks under a stream of
            # output can fail in recv() itself: the script was sent, so the outcome is unknown.
            return ChannelOutcome(
                True, None, stdout, stderr, error=f"{_LOST} ({describe_error(exc)})"
            )
    finally:
        _close_quietly(channel)


def _close_quietly(channel: paramiko.Channel) -> None:
    """Close ``channel``; on a connection that already broke, closing fails, and that must not
    replace the outcome already known (a timeout, say) with an exception."""
    try:
        channel.close()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        log.debug("closing an SSH channel failed: %s", describe_error(exc))


def _collect(
    channel: paramiko.Channel,
    transport: paramiko.Transport,
    stdout: OutputTail,
    stderr: OutputTail,
    deadline: float,
    timeout: float,
    sink: OutputSink | None,
) -> ChannelOutcome:
    try:
        return _read_until_done(channel, transport, stdout, stderr, deadline, timeout, sink)
    finally:
        if sink is not None:  # print a last line that had no newline
            sink("stdout", b"")
            sink("stderr", b"")


def _read_until_done(
    channel: paramiko.Channel,
    transport: paramiko.Transport,
    stdout: OutputTail,
    stderr: OutputTail,
    deadline: float,
    timeout: float,
    sink: OutputSink | None,
) -> ChannelOutcome:
    exited_at: float | None = None
    while True:
        busy = False
        if channel.recv_ready():
            data = channel.recv(_CHUNK)
            stdout.add(data)
            if sink is not None:
                sink("stdout", data)
            busy = True
        if channel.recv_stderr_ready():
            data = channel.recv_stderr(_CHUNK)
            stderr.add(data)
            if sink is not None:
                sink("stderr", data)
            busy = True
        now = time.monotonic()
        # Checked even while output flows, so a command that prints without end still times out.
        if now >= deadline:
            return ChannelOutcome(
                True,
                None,
                stdout,
                stderr,
                timed_out=True,
                error=f"still running after the timeout of {timeout:g} s; stopped",
            )
        if busy:
            continue
        if channel.exit_status_ready():
            exited_at = exited_at or now
            if channel.eof_received or channel.closed or now - exited_at >= _DRAIN_SECONDS:
                break
        elif channel.closed or not transport.is_active():
            return ChannelOutcome(True, None, stdout, stderr, error=_LOST)
        wait = min(deadline - now, 0.5)
        if exited_at is not None:
            wait = min(wait, max(0.0, exited_at + _DRAIN_SECONDS - now))
        select.select([channel], [], [], wait)
    status = channel.recv_exit_status()
    if status < 0:  # paramiko's -1: the channel closed without an exit status
        return ChannelOutcome(True, None, stdout, stderr, error=_LOST)
    return ChannelOutcome(True, status, stdout, stderr)
