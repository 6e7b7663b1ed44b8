"""Host health over SSH: disk and inode use per mount, load per core, available memory and
named services, gathered in one remote command."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import ClassVar, Final

from .._errors import ConfigError
from .._retry import RetryPolicy
from .._ssh import RemoteCommandError, SshHost, SshOptions, connect, run
from ._check import Check, CheckFindings, DefaultThresholds, ThresholdSpec
from ._status import CheckStatus

__all__ = ["HostCheck"]

_MARK: Final = "@@autoops-section@@"
_SKIPPED_FILESYSTEMS: Final = ("tmpfs", "devtmpfs", "squashfs")


class HostCheck(Check):
    """Disk use (``df -P``) and inode use (``df -Pi``) per mount, load per core
    (``/proc/loadavg`` over ``nproc``), ``MemAvailable`` as a percentage of ``MemTotal``, and
    ``systemctl is-active`` for each of ``services`` (any state but ``active`` is CRITICAL).

    ``mounts`` limits the mounts looked at (a listed mount that is missing is CRITICAL); by
    default every mount but tmpfs, devtmpfs and squashfs. ``systemctl`` is the command asked
    about services, run by the remote shell as written (a path, ``sudo systemctl``, a wrapper).
    """

    kind = "host"
    THRESHOLDS: ClassVar[DefaultThresholds] = {
        "disk": ("80", "90"),
        "inodes": ("80", "90"),
        "load_per_core": ("1.5", "3"),
        "memory_available": ("10:", "5:"),
    }

    def __init__(
        self,
        name: str,
        host: str | SshHost,
        *,
        ssh: SshOptions | None = None,
        mounts: Sequence[str] = (),
        services: Sequence[str] = (),
        systemctl: str = "systemctl",
        timeout: float = 10.0,
        thresholds: ThresholdSpec | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout, thresholds=thresholds)
        self.host = SshHost.parse(host) if isinstance(host, str) else host
        base = ssh or SshOptions()
        self.ssh = SshOptions(
            key_filename=base.key_filename,
            known_hosts=base.known_hosts,
            trust_unknown_hosts=base.trust_unknown_hosts,
            connect_timeout=min(base.connect_timeout, self.timeout),
            command_timeout=min(base.command_timeout, self.timeout),
            keepalive=base.keepalive,
        )
        for item in (*mounts, *services):
            if not isinstance(item, str) or not item:
                raise ConfigError(f"check {name}: mounts and services must be non-empty strings")
        self.mounts = tuple(mounts)
        self.services = tuple(services)
        if not systemctl:
            raise ConfigError(f"check {name}: systemctl must name a command")
        self.systemctl = systemctl

    @property
    def target(self) -> str:
        return str(self.host)

    def remote_script(self) -> str:
        """The one shell command run on the host; its sections are split on a marker line."""
        # Listed mounts are looked for among all of them, so a missing one is noticed rather than
        # reported as the filesystem that happens to hold that path.
        excluded = "" if self.mounts else " ".join(f"-x {kind}" for kind in _SKIPPED_FILESYSTEMS)
        parts = [
            f"LC_ALL=C df -P {excluded}",
            f"LC_ALL=C df -Pi {excluded}",
            "cat /proc/loadavg; nproc",
            "grep -E '^(MemTotal|MemAvailable):' /proc/meminfo",
        ]
        for service in self.services:
            quoted = shlex.quote(service)
            parts.append(f"printf '%s ' {quoted}; {self.systemctl} is-active -- {quoted}")
        return f"; echo {_MARK}; ".join(parts)

    def measure(self, findings: CheckFindings) -> None:
        connection = connect(self.host, self.ssh, retry=RetryPolicy.none())
        try:
            result = run(
                connection,
                self.remote_script(),
                timeout=self.timeout,
                check=False,
                where=str(self.host),
            )
        except RemoteCommandError as exc:
            raise RemoteCommandError(
                f"host checks on {self.host} did not finish within {self.timeout} s",
                exit_code=exc.exit_code,
                stderr_tail=exc.stderr_tail,
            ) from exc
        finally:
            connection.close()
        sections = result.stdout.split(f"{_MARK}\n")
        if len(sections) != 4 + len(self.services):
            raise RemoteCommandError(
                f"unexpected output from the host checks on {self.host} "
                f"(exit {result.exit_code}): {result.stderr.strip()[:200]}",
                exit_code=result.exit_code,
                stderr_tail=result.stderr[-500:],
            )
        self._disks(findings, sections[0], "disk", "disk_used", "used")
        self._disks(findings, sections[1], "inodes", "inodes_used", "inodes")
        self._load(findings, sections[2])
        self._memory(findings, sections[3])
        for service, text in zip(self.services, sections[4:], strict=True):
            self._service(findings, service, text)

    def _disks(
        self, findings: CheckFindings, text: str, threshold: str, series: str, word: str
    ) -> None:
        seen: set[str] = set()
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 6 or not fields[4].endswith("%"):
                continue  # filesystems without inodes print "-"
            mount = " ".join(fields[5:])
            if self.mounts and mount not in self.mounts:
                continue
            seen.add(mount)
            percent = float(fields[4].rstrip("%"))
            label = f"{threshold} {mount}"
            findings.metric(
                label,
                percent,
                "%",
                text=f"{mount} {percent:.0f}% {word}",
                threshold=threshold,
                minimum=0,
                maximum=100,
                series=series,
                labels={"mount": mount},
            )
        if threshold == "disk":
            for mount in self.mounts:
                if mount not in seen:
                    findings.problem(
                        CheckStatus.CRITICAL, f"mount {mount} not found on {self.host}"
                    )

    def _load(self, findings: CheckFindings, text: str) -> None:
        lines = text.split()
        load1, load5, load15 = (float(value) for value in lines[:3])
        cores = int(lines[-1])
        findings.metric(
            "load_per_core",
            load5 / cores,
            text=f"load {load5:.2f} on {cores} cores (5 min)",
            minimum=0,
        )
        findings.metric("load1", load1, text=None, minimum=0)
        findings.metric("load15", load15, text=None, minimum=0)

    def _memory(self, findings: CheckFindings, text: str) -> None:
        values = {
            line.split(":")[0]: float(line.split()[1]) * 1024 for line in text.splitlines() if line
        }
        total, available = values.get("MemTotal", 0.0), values.get("MemAvailable", 0.0)
        if total <= 0:
            findings.problem(CheckStatus.UNKNOWN, "no MemTotal in /proc/meminfo")
            return
        percent = 100.0 * available / total
        findings.metric(
            "memory_available",
            percent,
            "%",
            text=f"{available / 1073741824:.1f} GiB memory available ({percent:.0f}%)",
            minimum=0,
            maximum=100,
            series="memory_available",
        )

    def _service(self, findings: CheckFindings, service: str, text: str) -> None:
        state = text.strip().removeprefix(service).strip() or "unknown (systemctl said nothing)"
        if state == "active":
            findings.note(f"{service} active")
        else:
            findings.problem(CheckStatus.CRITICAL, f"service {service} is {state}")
