"""Run commands, copy files and gather facts on many hosts at once, each host on its own."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shlex
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, Final, TextIO

import fabric
import paramiko

from .._errors import AuthenticationError, AutoOpsError, ConfigError, ConnectError
from .._progress import Progress
from .._retry import RetryPolicy
from .._ssh import SshHost, SshOptions, connect, describe_error, sha256_command
from ._channel import ChannelOutcome, LinePrinter, OutputSink, run_script
from ._facts import FactsParseError, HostFacts, facts_script, parse_facts
from ._results import FleetResult, HostResult, HostStatus

__all__ = ["Fleet"]

log: Final = logging.getLogger("autoops.fleet")
_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Settings in a ``[deploy]`` table that describe how to reach the hosts; the rest (deploy_to,
#: hooks, ...) are the Deployer's business.
_CONNECTION_SETTINGS: Final = frozenset(
    {
        "hosts",
        "key_filename",
        "known_hosts",
        "trust_unknown_hosts",
        "connect_timeout",
        "keepalive",
        "concurrency",
        "host_vars",
    }
)


def _check_names(values: Mapping[str, str], what: str) -> dict[str, str]:
    checked: dict[str, str] = {}
    for name, value in values.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(
                f"{what} name {name!r} is not a valid environment variable name "
                "(letters, digits and _, not starting with a digit)"
            )
        checked[name] = str(value)
    return checked


def _local_name(host: str) -> str:
    """A directory name for ``host`` that is safe on any filesystem."""
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", host).strip("_")


class Fleet:
    """Many hosts (``user@host:port`` strings) worked on in parallel, at most ``concurrency``
    at a time, each with its own result: a host that is down, slow or refused never holds up or
    fails the others.

    Host keys are checked against ``known_hosts`` (unknown keys are refused unless
    ``trust_unknown_hosts``); ``host_vars`` maps a host to environment variables its commands
    see. Connections are opened on first use and kept for later calls until :meth:`close` (or
    the end of a ``with`` block). A connect that fails is retried by ``connect_retry``; a
    command that was sent is never re-run. At most ``max_output_bytes`` of each output stream
    are kept per host (the last ones; the cut is counted). ``progress`` forces the terminal
    progress line on or off (default: on for a terminal).
    """

    def __init__(
        self,
        hosts: Sequence[str],
        *,
        key_filename: str | None = None,
        known_hosts: str | None = None,
        trust_unknown_hosts: bool = False,
        host_vars: Mapping[str, Mapping[str, str]] | None = None,
        concurrency: int = 50,
        connect_timeout: float = 10.0,
        keepalive: int = 15,
        max_output_bytes: int = 1024 * 1024,
        connect_retry: RetryPolicy | None = None,
        progress: bool | None = None,
    ) -> None:
        self.hosts = self._check_hosts(hosts)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ConfigError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
        if not isinstance(max_output_bytes, int) or max_output_bytes < 1:
            raise ConfigError(
                f"max_output_bytes must be a whole number >= 1, got {max_output_bytes!r}"
            )
        self.ssh = SshOptions(
            key_filename=os.path.expanduser(key_filename) if key_filename else None,
            known_hosts=os.path.expanduser(known_hosts) if known_hosts else None,
            trust_unknown_hosts=trust_unknown_hosts,
            connect_timeout=connect_timeout,
            keepalive=keepalive,
        )
        unknown = sorted(set(host_vars or {}) - set(self.hosts))
        if unknown:
            raise ConfigError(f"host_vars names host(s) not in hosts: {', '.join(unknown)}")
        self.host_vars = {
            host: _check_names((host_vars or {}).get(host, {}), f"host variable for {host}")
            for host in self.hosts
        }
        self.concurrency = concurrency
        self.max_output_bytes = max_output_bytes
        self.connect_retry = connect_retry or RetryPolicy(
            attempts=3, timeout=20.0, wait_initial=0.2, wait_max=2.0
        )
        self.progress = progress
        self._connections: dict[str, fabric.Connection] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _check_hosts(hosts: Sequence[str]) -> list[str]:
        if isinstance(hosts, str | bytes) or not hosts:
            raise ConfigError("Fleet needs a list of hosts such as ['deploy@web-1.example.com:22']")
        problems: list[str] = []
        seen: dict[SshHost, str] = {}
        for index, host in enumerate(hosts):
            try:
                parsed = SshHost.parse(host)
            except ConfigError as exc:
                problems.append(f"entry {index + 1}: {exc}")
                continue
            if parsed in seen:
                problems.append(f"entry {index + 1}: {host!r} is the same host as {seen[parsed]!r}")
            else:
                seen[parsed] = host
        if problems:
            raise ConfigError(f"bad host list ({len(problems)} problem(s)): " + "; ".join(problems))
        return [str(host) for host in hosts]

    @classmethod
    def from_settings(cls, section: Mapping[str, Any], **overrides: Any) -> Fleet:
        """Build from a ``[fleet]`` table, or a ``[deploy]`` one (its connection settings:
        hosts, key_filename, known_hosts, trust_unknown_hosts, connect_timeout, keepalive,
        concurrency, host_vars); keyword arguments that are not ``None`` override its keys."""
        values: dict[str, Any] = {
            key: value for key, value in section.items() if key in _CONNECTION_SETTINGS
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        if "hosts" not in values:
            raise ConfigError("[fleet] (or [deploy]) needs hosts = [...] (or pass --hosts)")
        try:
            return cls(values.pop("hosts"), **values)
        except TypeError as exc:
            raise ConfigError(f"bad [fleet] setting: {exc}") from None

    # -- connections ------------------------------------------------------------------------

    def _connection(self, host: str) -> fabric.Connection:
        with self._lock:
            existing = self._connections.get(host)
        if existing is not None:
            transport = existing.transport
            if transport is not None and transport.is_active():
                return existing
            existing.close()
        connection = connect(host, self.ssh, retry=self.connect_retry)
        with self._lock:
            self._connections[host] = connection
        return connection

    def _forget(self, host: str) -> None:
        with self._lock:
            connection = self._connections.pop(host, None)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        """Close every open connection."""
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for connection in connections:
            connection.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the parallel part ------------------------------------------------------------------

    def _each(self, action: str, work: Callable[[str], HostResult]) -> FleetResult:
        started = time.monotonic()

        def guarded(host: str) -> HostResult:
            began = time.monotonic()
            try:
                return work(host)
            except AuthenticationError as exc:
                return HostResult(
                    host, "refused", duration_seconds=time.monotonic() - began, error=str(exc)
                )
            except (ConnectError, OSError, EOFError, paramiko.SSHException) as exc:
                self._forget(host)
                return HostResult(
                    host,
                    "unreachable",
                    duration_seconds=time.monotonic() - began,
                    error=str(exc) or describe_error(exc),
                )
            except AutoOpsError as exc:
                return HostResult(
                    host, "failed", duration_seconds=time.monotonic() - began, error=str(exc)
                )

        results: list[HostResult] = []
        workers = min(self.concurrency, len(self.hosts))
        with (
            Progress(
                action, total=len(self.hosts), unit="hosts", enabled=self.progress
            ) as progress,
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="autoops-fleet") as pool,
        ):
            futures = [pool.submit(guarded, host) for host in self.hosts]
            try:
                for future in futures:
                    results.append(future.result())
                    progress.advance()
            except BaseException:
                # Ctrl-C: hosts not started never start, and closing the connections ends the
                # running ones at once instead of at their timeouts.
                pool.shutdown(wait=False, cancel_futures=True)
                self.close()
                raise
        return FleetResult(action, tuple(results), time.monotonic() - started)

    def _script(
        self,
        host: str,
        script: str,
        *,
        environment: Mapping[str, str],
        sudo: bool,
        timeout: float,
        sink: OutputSink | None = None,
        max_output_bytes: int | None = None,
    ) -> tuple[ChannelOutcome, float]:
        """Run ``script`` on ``host``; a channel that could not start is retried once on a
        fresh connection, since nothing was sent yet."""
        began = time.monotonic()
        for attempt in (1, 2):
            connection = self._connection(host)
            transport = connection.transport
            assert transport is not None  # an open Connection has one
            outcome = run_script(
                transport,
                script,
                environment={**self.host_vars[host], **environment},
                sudo=sudo,
                timeout=timeout,
                open_timeout=self.ssh.connect_timeout,
                max_output_bytes=max_output_bytes or self.max_output_bytes,
                sink=sink,
            )
            if outcome.sent or attempt == 2:
                break
            log.info("retrying on a new connection to %s: %s", host, outcome.error)
            self._forget(host)
        if outcome.error and not outcome.timed_out:
            self._forget(host)
        return outcome, time.monotonic() - began

    @staticmethod
    def _status(outcome: ChannelOutcome) -> HostStatus:
        if outcome.timed_out:
            return "timeout"
        if outcome.exit_code is None:
            return "lost" if outcome.sent else "unreachable"
        return "ok" if outcome.exit_code == 0 else "failed"

    # -- public operations ------------------------------------------------------------------

    def run(
        self,
        command: str | Sequence[str],
        *,
        timeout: float = 600.0,
        env: Mapping[str, str] | None = None,
        sudo: bool = False,
        stream: bool | tuple[TextIO, TextIO] = False,
    ) -> FleetResult:
        """Run ``command`` (a shell line, or an argv list that is quoted for you) on every host.

        Each host's exit code, output and duration are in the result; a command still running
        at ``timeout`` seconds is stopped and reported as ``timeout``. ``env`` adds environment
        variables (after the host's ``host_vars``); ``sudo`` runs it as root through ``sudo -n``
        (no password prompt: a host that wants one fails with sudo's message). ``stream`` prints
        each output line as it arrives as ``host | line`` (stdout to stdout, stderr to stderr,
        or to the pair of streams given).
        """
        line = command if isinstance(command, str) else shlex.join(str(p) for p in command)
        if not line.strip():
            raise ConfigError("the command to run is empty")
        if timeout <= 0:
            raise ConfigError(f"timeout must be above 0 seconds, got {timeout!r}")
        environment = _check_names(env or {}, "env")
        printer: LinePrinter | None = None
        if stream:
            out, err = stream if isinstance(stream, tuple) else (sys.stdout, sys.stderr)
            printer = LinePrinter(out, err)

        def work(host: str) -> HostResult:
            outcome, seconds = self._script(
                host,
                line,
                environment=environment,
                sudo=sudo,
                timeout=timeout,
                sink=printer.sink(host) if printer else None,
            )
            return HostResult(
                host,
                self._status(outcome),
                exit_code=outcome.exit_code,
                stdout_bytes=outcome.stdout.value(),
                stderr_bytes=outcome.stderr.value(),
                stdout_cut_bytes=outcome.stdout.cut,
                stderr_cut_bytes=outcome.stderr.cut,
                duration_seconds=seconds,
                error=outcome.error,
            )

        return self._each(f"run {line[:60]}", work)

    def put(
        self,
        local: str | os.PathLike[str],
        remote: str,
        *,
        mode: int = 0o644,
        timeout: float = 600.0,
    ) -> FleetResult:
        """Copy one local file to ``remote`` (an absolute path) on every host.

        The file is uploaded beside its destination under a temporary name, its SHA-256 checked
        on the host, given ``mode``, then renamed over ``remote``: the destination is either the
        old file or the whole new one, never a part.
        """
        source = Path(local)
        if not source.is_file():
            raise ConfigError(f"cannot put {source}: no such file")
        if not remote.startswith("/") or remote.endswith("/"):
            raise ConfigError(f"the remote path {remote!r} must be an absolute path to a file")
        if not 0 <= mode <= 0o7777:
            raise ConfigError(f"mode {mode!r} is not a file mode such as 0o644")
        digest = _sha256(source)
        size = source.stat().st_size

        def work(host: str) -> HostResult:
            began = time.monotonic()
            connection = self._connection(host)
            temporary = f"{remote}.autoops-{secrets.token_hex(6)}.tmp"
            try:
                sftp = connection.sftp()
                sftp.put(os.fspath(source), temporary, confirm=True)
            except OSError as exc:
                return HostResult(
                    host,
                    "failed",
                    duration_seconds=time.monotonic() - began,
                    error=f"uploading to {temporary} failed: {exc}; check that the directory "
                    "exists and the SSH user may write there",
                )
            quoted, final = shlex.quote(temporary), shlex.quote(remote)
            script = (
                f"sum=$({sha256_command(quoted)}) || exit 3\n"
                f'if [ "${{sum%% *}}" != {digest} ]; then rm -f {quoted}; '
                "echo 'the uploaded copy does not match the local file (checksum)' >&2; "
                "exit 4; fi\n"
                f"chmod {mode:o} {quoted} && mv -f {quoted} {final} "
                f"|| {{ rm -f {quoted}; exit 5; }}"
            )
            outcome, _ = self._script(host, script, environment={}, sudo=False, timeout=timeout)
            status = self._status(outcome)
            error = outcome.error or (
                "" if status == "ok" else outcome.stderr.value().decode("utf-8", "replace").strip()
            )
            return HostResult(
                host,
                status,
                exit_code=outcome.exit_code,
                duration_seconds=time.monotonic() - began,
                error=error,
                path=remote,
                size_bytes=size,
                sha256=digest,
            )

        return self._each(f"put {remote}", work)

    def get(
        self, remote: str, local_dir: str | os.PathLike[str], *, timeout: float = 600.0
    ) -> FleetResult:
        """Fetch ``remote`` from every host into ``local_dir/<host>/<file name>``.

        The host's SHA-256 of the file is compared with that of the copy, which is written under
        a temporary name and renamed into place only when they match.
        """
        name = PurePosixPath(remote).name
        if not remote.startswith("/") or not name:
            raise ConfigError(f"the remote path {remote!r} must be an absolute path to a file")
        target_root = Path(local_dir)

        def work(host: str) -> HostResult:
            began = time.monotonic()
            outcome, _ = self._script(
                host,
                sha256_command(shlex.quote(remote)),
                environment={},
                sudo=False,
                timeout=timeout,
            )
            if outcome.exit_code != 0:
                detail = outcome.error or outcome.stderr.value().decode("utf-8", "replace").strip()
                return HostResult(
                    host,
                    self._status(outcome) if outcome.exit_code is None else "failed",
                    exit_code=outcome.exit_code,
                    duration_seconds=time.monotonic() - began,
                    error=f"cannot read {remote}: {detail}",
                )
            expected = outcome.stdout.value().decode("ascii", "replace").split()[0]
            directory = target_root / _local_name(host)
            directory.mkdir(parents=True, exist_ok=True)
            final = directory / name
            temporary = directory / f".{name}.autoops-{secrets.token_hex(6)}.tmp"
            try:
                self._connection(host).sftp().get(remote, os.fspath(temporary))
                actual = _sha256(temporary)
                if actual != expected:
                    return HostResult(
                        host,
                        "failed",
                        duration_seconds=time.monotonic() - began,
                        error=f"{remote} changed while it was copied (checksum differs); try again",
                    )
                os.replace(temporary, final)
            except OSError as exc:
                return HostResult(
                    host,
                    "failed",
                    duration_seconds=time.monotonic() - began,
                    error=f"copying {remote} to {final} failed: {exc}",
                )
            finally:
                temporary.unlink(missing_ok=True)
            return HostResult(
                host,
                "ok",
                exit_code=0,
                duration_seconds=time.monotonic() - began,
                path=str(final),
                size_bytes=final.stat().st_size,
                sha256=actual,
            )

        return self._each(f"get {remote}", work)

    def facts(
        self, *, timeout: float = 30.0, raise_on_failure: bool = True
    ) -> dict[str, HostFacts]:
        """Each host's :class:`HostFacts`, gathered by one script per host in one round trip.

        A host that cannot be reached or answers oddly raises :class:`FleetError` (with every
        host's result) unless ``raise_on_failure`` is false; then it is left out.
        """
        script = facts_script()
        gathered: dict[str, HostFacts] = {}

        def work(host: str) -> HostResult:
            outcome, seconds = self._script(
                host, script, environment={"LC_ALL": "C"}, sudo=False, timeout=timeout
            )
            status = self._status(outcome)
            error = outcome.error
            if outcome.exit_code is not None:
                try:
                    gathered[host] = parse_facts(
                        host, outcome.stdout.value().decode("utf-8", "replace")
                    )
                    status, error = "ok", ""
                except FactsParseError as exc:
                    status, error = "failed", f"{exc}; is it a Linux host?"
            return HostResult(
                host,
                status,
                exit_code=outcome.exit_code,
                stderr_bytes=outcome.stderr.value(),
                duration_seconds=seconds,
                error=error,
            )

        result = self._each("facts", work)
        if raise_on_failure:
            result.raise_on_failure()
        return {host: gathered[host] for host in self.hosts if host in gathered}

    def __repr__(self) -> str:
        return f"<Fleet of {len(self.hosts)} host(s), concurrency {self.concurrency}>"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
