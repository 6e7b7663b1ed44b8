"""The monitor: run checks, remember what they said, notify on change, remediate on CRITICAL."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from .._display import html_table
from .._errors import AutoOpsError, ConfigError
from .._retry import RetryPolicy
from .._ssh import SshHost, SshOptions, connect, quote_command, run
from ._check import Check
from ._notify import AlertPolicy, Notifier, deliver
from ._result import CheckResult, check_results
from ._runner import run_checks
from ._state import StateFile
from ._status import CheckStatus

__all__ = ["Monitor", "Remediation"]

log: Final = logging.getLogger("autoops.monitor")


@dataclass(frozen=True, slots=True)
class Remediation:
    """A command run on ``host`` over SSH when a check turns CRITICAL (for example
    ``sudo systemctl restart nginx``), at most once per ``min_interval`` seconds.

    ``command`` is a string run by the remote shell as written (it comes from your own
    configuration) or an argument list, quoted for you.
    """

    host: str
    command: str | Sequence[str]
    ssh: SshOptions = field(default_factory=SshOptions)
    min_interval: float = 900.0
    timeout: float = 60.0

    def __post_init__(self) -> None:
        SshHost.parse(self.host)
        if not self.command:
            raise ConfigError("a remediation needs a command")
        if self.min_interval < 0 or self.timeout <= 0:
            raise ConfigError("remediation min_interval must be >= 0 and timeout above 0")

    def apply(self, state: dict[str, Any], now: float | None = None) -> str:
        """Run the command unless it ran less than ``min_interval`` ago; say what happened."""
        moment = time.time() if now is None else now
        last = state.get("remediated_at")
        line = quote_command(self.command)
        if isinstance(last, int | float) and moment - last < self.min_interval:
            return (
                f"skipped {line!r} on {self.host}: it ran {moment - last:.0f} s ago "
                f"(at most once per {self.min_interval:g} s)"
            )
        state["remediated_at"] = moment
        try:
            connection = connect(self.host, self.ssh, retry=RetryPolicy.none())
            try:
                outcome = run(connection, self.command, timeout=self.timeout, check=False)
            finally:
                connection.close()
        except AutoOpsError as exc:
            log.error("remediation on %s failed: %s", self.host, exc)
            return f"{line!r} on {self.host} failed: {str(exc).splitlines()[0]}"
        log.warning("remediation %r on %s exited %d", line, self.host, outcome.exit_code)
        seconds = outcome.duration_seconds
        return f"ran {line!r} on {self.host}: exit {outcome.exit_code} in {seconds:.1f} s"


class Monitor:
    """Checks plus what to do with their results.

    :meth:`run` runs the checks in parallel under ``deadline``, keeps state in ``state_file``
    (rates, flapping history, what was notified; none when it is None), sends each
    :class:`~autoops.StatusChange` through ``notifiers`` and runs a check's :class:`Remediation`
    when it turns CRITICAL.
    """

    def __init__(
        self,
        checks: Iterable[Check],
        *,
        state_file: str | StateFile | None = None,
        notifiers: Sequence[Notifier] = (),
        remediations: Mapping[str, Remediation] | None = None,
        policy: AlertPolicy | None = None,
        deadline: float = 60.0,
        max_parallel: int | None = None,
    ) -> None:
        self.checks = {check.name: check for check in checks}
        self.state_file = StateFile(state_file) if isinstance(state_file, str) else state_file
        self.notifiers = list(notifiers)
        self.remediations = dict(remediations or {})
        unknown = sorted(set(self.remediations) - set(self.checks))
        if unknown:
            raise ConfigError(f"remediation for unknown check(s): {', '.join(unknown)}")
        self.policy = policy or AlertPolicy()
        self.deadline = deadline
        self.max_parallel = max_parallel

    def select(self, names: Sequence[str] = ()) -> list[Check]:
        """The checks called ``names`` (all when empty); an unknown name is a ConfigError."""
        if not names:
            return list(self.checks.values())
        missing = [name for name in names if name not in self.checks]
        if missing:
            known = ", ".join(sorted(self.checks)) or "none configured"
            raise ConfigError(f"no check called {', '.join(missing)}; known: {known}")
        return [self.checks[name] for name in names]

    def run(self, names: Sequence[str] = (), *, notify: bool = True) -> list[CheckResult]:
        """Run the named checks (all when empty) and act on their results."""
        selected = self.select(names)
        saved = self.state_file.load() if self.state_file is not None else {}
        memories = {
            check.name: dict(saved.get(check.name, {}).get("memory", {})) for check in selected
        }
        results = run_checks(
            selected, states=memories, deadline=self.deadline, max_parallel=self.max_parallel
        )
        changed: dict[str, dict[str, Any]] = {}
        final: list[CheckResult] = []
        for measured in results:
            entry = dict(saved.get(measured.name, {}))
            entry["memory"] = memories.get(measured.name, {})
            result = self._remediate(entry, measured)
            if result.status is CheckStatus.OK:
                entry["last_ok_at"] = time.time()
            last_ok = entry.get("last_ok_at")
            if isinstance(last_ok, int | float):
                result = dataclasses.replace(
                    result, last_ok_at=datetime.fromtimestamp(last_ok, UTC)
                )
            # Notified after last_ok_at is known: "down since when" is what a receiver needs.
            if notify:
                self._notify(entry, result)
            entry["status"] = result.status.name
            changed[result.name] = entry
            final.append(result)
        if self.state_file is not None:
            self.state_file.save(changed)
        return check_results(final)

    def _remediate(self, entry: dict[str, Any], result: CheckResult) -> CheckResult:
        remediation = self.remediations.get(result.name)
        if remediation is None or result.status is not CheckStatus.CRITICAL:
            return result
        if entry.get("status") == CheckStatus.CRITICAL.name:
            return result
        return dataclasses.replace(result, remediation=remediation.apply(entry))

    def _notify(self, entry: dict[str, Any], result: CheckResult) -> None:
        change = self.policy.decide(entry, result, datetime.now(UTC))
        if change is None:
            return
        if not deliver(self.notifiers, change):
            AlertPolicy.delivered(entry, change)

    def __repr__(self) -> str:
        return f"Monitor({len(self.checks)} checks, {len(self.notifiers)} notifiers)"

    def _repr_html_(self) -> str:
        return html_table(
            "Monitor",
            [
                ("state file", self.state_file.path if self.state_file else "none"),
                ("deadline", f"{self.deadline:g} s"),
            ],
            columns=["check", "kind", "timeout", "remediation"],
            body=[
                (
                    check.name,
                    check.kind,
                    f"{check.timeout:g} s",
                    "yes" if check.name in self.remediations else "",
                )
                for check in self.checks.values()
            ],
        )
