"""The state of one deploy or rollback run, held in one place (as pyinfra's ``State`` holds a
run's per-host results) instead of being threaded through every step."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._remote import HostSession, HostState
from ._results import DeployResult, HostDeployResult

__all__ = ["DeployRun"]


@dataclass(slots=True)
class DeployRun:
    """One run over its hosts: each host's session and result, the state each host was in
    when its lock was taken, the overall outcome, and the token that owns the locks."""

    outcome: DeployResult
    sessions: dict[str, HostSession]
    results: dict[str, HostDeployResult]
    token: str
    started: float
    states: dict[str, HostState] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        action: str,
        release: str,
        targets: Sequence[str],
        session: Callable[[str], HostSession],
    ) -> DeployRun:
        """A run of ``action`` (``deploy`` or ``rollback``) on ``targets``, sessions not yet
        connected."""
        started = time.monotonic()
        token = secrets.token_hex(8)
        results = {address: HostDeployResult(address) for address in targets}
        sessions = {address: session(address) for address in targets}
        outcome = DeployResult(action, release, list(results.values()))
        return cls(outcome, sessions, results, token, started)

    def close(self) -> None:
        """Close every session and stamp the run's duration."""
        for session in self.sessions.values():
            session.close()
        self.outcome.duration_seconds = time.monotonic() - self.started
