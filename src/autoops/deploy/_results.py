"""What a deploy, a rollback, a plan or a config push did, host by host."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from .._deprecation import renamed
from .._display import format_seconds, html_table
from .._errors import AutoOpsError

__all__ = [
    "ConfigPushError",
    "ConfigPushResult",
    "DeployError",
    "DeployOutcome",
    "DeployPhase",
    "DeployPlan",
    "DeployResult",
    "HookPhase",
    "HostConfigResult",
    "HostDeployPlan",
    "HostDeployResult",
]


HookPhase = Literal["after_unpack", "before_switch", "after_switch"]
# The phases a host goes through, in order, as HostDeployResult.phase and on_phase report them.
DeployPhase = Literal[
    "pending",
    "lock",
    "inspect",
    "upload",
    "unpack",
    "after_unpack",
    "prepared",
    "before_switch",
    "switch",
    "after_switch",
    "health",
    "rollback",
    "done",
]


class DeployOutcome:
    """The outcome names a :class:`HostDeployResult` can carry."""

    DEPLOYED = "deployed"
    ROLLED_BACK = "rolled back"
    FAILED = "failed"
    NOT_SWITCHED = "not switched"


@dataclass(slots=True)
class HostDeployResult:
    """One host's part in a deploy or rollback: the last phase it reached, its outcome, the
    error (with the remote stderr tail) if any, the release it was on before, per-phase timings
    in seconds, and whether the artifact was sent (``uploaded`` is False where the host already
    held the same bytes, see ``Deployer(reuse_artifact=...)``, or stopped before the upload)."""

    host: str
    phase: DeployPhase = "pending"
    outcome: str = DeployOutcome.NOT_SWITCHED
    error: str | None = None
    stderr_tail: str = ""
    previous_release: str | None = None
    current_release: str | None = None
    lock_released: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    uploaded: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome == DeployOutcome.DEPLOYED

    def fail(self, error: str, stderr_tail: str = "") -> None:
        """Record a failure at the current phase."""
        self.outcome = DeployOutcome.FAILED
        self.error = error
        self.stderr_tail = stderr_tail

    @property
    def duration_seconds(self) -> float:
        """Seconds spent in this host's phases."""
        return sum(self.timings.values())

    @property
    def total_seconds(self) -> float:
        """Deprecated: :attr:`duration_seconds`."""
        renamed("HostDeployResult.total_seconds", "HostDeployResult.duration_seconds")
        return self.duration_seconds

    def _row(self) -> tuple[str, str, str, str, str, str]:
        return (
            self.host,
            self.phase,
            self.outcome,
            self.current_release or "-",
            format_seconds(self.duration_seconds),
            "\n".join(part for part in (self.error, self.stderr_tail) if part),
        )


_COLUMNS = ("host", "phase", "outcome", "current", "time", "error")


def _text_table(rows: Sequence[Sequence[str]], columns: Sequence[str]) -> str:
    widths = [len(column) for column in columns]
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            widths[index] = max(widths[index], len(cell))
    lines = []
    for row in [tuple(columns), *rows]:
        head = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1]))
        first, *more = row[-1].splitlines() or [""]
        lines.append(f"  {head}  {first}".rstrip())
        # The rest of the last cell (a remote stderr tail) goes below its row, indented.
        lines.extend(f"      | {line}".rstrip() for line in more)
    return "\n".join(lines)


@dataclass(slots=True)
class DeployResult:
    """A deploy or rollback across hosts: the release, whether it succeeded everywhere it had
    to, whether it was rolled back, and one :class:`HostDeployResult` per host."""

    action: str
    release: str
    hosts: list[HostDeployResult]
    rolled_back: bool = False
    message: str = ""
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no host failed and nothing was rolled back."""
        return not self.rolled_back and not self.failed

    @property
    def seconds(self) -> float:
        """Deprecated: :attr:`duration_seconds`."""
        renamed("DeployResult.seconds", "DeployResult.duration_seconds")
        return self.duration_seconds

    @property
    def failed(self) -> list[HostDeployResult]:
        return [host for host in self.hosts if host.outcome == DeployOutcome.FAILED]

    @property
    def failed_hosts(self) -> list[str]:
        """The failed hosts' names, to retry with ``deploy(..., hosts=result.failed_hosts)``."""
        return [host.host for host in self.failed]

    def host(self, name: str) -> HostDeployResult:
        """The result for ``name`` (as given to the Deployer)."""
        for host in self.hosts:
            if host.host == name:
                return host
        raise KeyError(name)

    def __repr__(self) -> str:
        status = "ok" if self.ok else ("ROLLED BACK" if self.rolled_back else "FAILED")
        head = (
            f"<DeployResult {self.action} {self.release}: {status} on {len(self.hosts)} host(s) "
            f"in {format_seconds(self.duration_seconds)}"
        )
        if self.message:
            head += f"; {self.message}"
        rows = [host._row() for host in self.hosts]
        return f"{head}\n{_text_table(rows, _COLUMNS)}>"

    def _repr_html_(self) -> str:
        return html_table(
            f"{self.action} {self.release}",
            [
                ("status", "ok" if self.ok else "failed"),
                ("rolled back", self.rolled_back),
                ("time", format_seconds(self.duration_seconds)),
                ("message", self.message),
            ],
            columns=_COLUMNS,
            body=[host._row() for host in self.hosts],
        )


class DeployError(AutoOpsError):
    """A deploy or rollback failed; ``result`` holds each host's phase, outcome and error."""

    def __init__(self, message: str, *, result: DeployResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, slots=True)
class HostDeployPlan:
    """What a deploy would do on one host, found without changing anything."""

    host: str
    current_release: str | None
    releases: tuple[str, ...]
    would_remove: tuple[str, ...]
    lock_holder: str | None
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class DeployPlan:
    """A dry run of a deploy: the release it would create, and a :class:`HostDeployPlan` each."""

    release: str
    artifact_bytes: int
    hosts: tuple[HostDeployPlan, ...]

    def _rows(self) -> list[tuple[str, str, str, str, str]]:
        return [
            (
                plan.host,
                plan.current_release or "(none)",
                f"{plan.current_release or '(none)'} -> {self.release}"
                if plan.reachable
                else "unknown",
                ", ".join(plan.would_remove) or "-",
                plan.error or (f"locked by {plan.lock_holder}" if plan.lock_holder else ""),
            )
            for plan in self.hosts
        ]

    def __repr__(self) -> str:
        columns = ("host", "current", "switch", "would remove", "note")
        return (
            f"<DeployPlan {self.release}: {self.artifact_bytes} bytes "
            f"to {len(self.hosts)} host(s)\n"
            f"{_text_table(self._rows(), columns)}>"
        )

    def _repr_html_(self) -> str:
        return html_table(
            f"plan {self.release}",
            [("artifact bytes", self.artifact_bytes)],
            columns=("host", "current", "switch", "would remove", "note"),
            body=self._rows(),
        )


@dataclass(frozen=True, slots=True)
class HostConfigResult:
    """One host's config push: ``changed`` or not, the unified ``diff`` (dry run), the error."""

    host: str
    dest: str
    changed: bool
    applied: bool
    diff: str = ""
    error: str | None = None
    stderr_tail: str = ""

    @property
    def status(self) -> str:
        if self.error:
            return "failed"
        if not self.changed:
            return "unchanged"
        return "changed" if self.applied else "would change"


@dataclass(frozen=True, slots=True)
class ConfigPushResult:
    """A config push across hosts, one :class:`HostConfigResult` each."""

    dest: str
    dry_run: bool
    hosts: tuple[HostConfigResult, ...]

    @property
    def ok(self) -> bool:
        return all(host.error is None for host in self.hosts)

    @property
    def changed(self) -> list[str]:
        """The hosts whose file changed (or would, in a dry run)."""
        return [host.host for host in self.hosts if host.changed and host.error is None]

    def _rows(self) -> list[tuple[str, str, str]]:
        return [(host.host, host.status, host.error or "") for host in self.hosts]

    def __repr__(self) -> str:
        mode = " (dry run)" if self.dry_run else ""
        return (
            f"<ConfigPushResult {self.dest}{mode}\n"
            f"{_text_table(self._rows(), ('host', 'status', 'error'))}>"
        )

    def _repr_html_(self) -> str:
        return html_table(
            f"config {self.dest}",
            [("dry run", self.dry_run)],
            columns=("host", "status", "error"),
            body=self._rows(),
        )


class ConfigPushError(AutoOpsError):
    """A config push failed on at least one host; ``result`` says which and why."""

    def __init__(self, message: str, *, result: ConfigPushResult) -> None:
        super().__init__(message)
        self.result = result
