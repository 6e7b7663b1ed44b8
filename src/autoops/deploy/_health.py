"""Health checks run after a host switches: an HTTP URL, a TCP port or a command on the host."""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .._config import redact_url
from .._errors import AutoOpsError, ConfigError
from .._probe import failure_reason, http_get, tcp_connect
from .._ssh import CommandResult

__all__ = ["HealthCheck"]

RemoteRunner = Callable[[str, float], CommandResult]


def expand(template: str, variables: Mapping[str, str], what: str) -> str:
    """``template`` with ``{name}`` placeholders filled from ``variables``; an unknown name is a
    ConfigError naming it."""
    try:
        return template.format_map(variables)
    except KeyError as exc:
        known = ", ".join(sorted(variables))
        raise ConfigError(
            f"{what} {template!r} uses {{{exc.args[0]}}}, which is not a host variable; "
            f"known: {known}"
        ) from None
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"{what} {template!r} is not a valid template: {exc}") from None


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Whether a host is healthy after its switch, retried every ``interval`` seconds until it
    passes or ``timeout`` seconds have passed. Build one with :meth:`http`, :meth:`tcp` or
    :meth:`command`; in URLs and hosts ``{host}``, ``{user}``, ``{ssh_port}`` and host
    variables are filled in."""

    kind: str
    target: str
    port: int = 0
    status: int = 200
    contains: str | None = None
    timeout: float = 30.0
    interval: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in {"http", "tcp", "command"}:
            raise ConfigError(f"unknown health check kind {self.kind!r}: use http, tcp or command")
        if not all(math.isfinite(value) and value > 0 for value in (self.timeout, self.interval)):
            raise ConfigError(
                "health check timeout and interval must be a number of seconds above 0, got "
                f"{self.timeout} and {self.interval}"
            )
        if self.kind == "http" and not self.target.startswith(("http://", "https://")):
            shown = redact_url(self.target)
            raise ConfigError(f"health check URL {shown!r} must start with http(s)://")

    @classmethod
    def http(
        cls,
        url: str,
        *,
        status: int = 200,
        contains: str | None = None,
        timeout: float = 30.0,
        interval: float = 0.5,
    ) -> HealthCheck:
        """GET ``url`` from the controller; healthy when it answers ``status`` (and its body
        contains ``contains``, when given)."""
        return cls(
            "http", url, status=status, contains=contains, timeout=timeout, interval=interval
        )

    @classmethod
    def tcp(
        cls, port: int, *, host: str = "{host}", timeout: float = 30.0, interval: float = 0.5
    ) -> HealthCheck:
        """Healthy when the controller can open a TCP connection to ``host:port``."""
        if not 1 <= port <= 65535:
            raise ConfigError(f"health check port {port} is not between 1 and 65535")
        return cls("tcp", host, port=port, timeout=timeout, interval=interval)

    @classmethod
    def command(cls, command: str, *, timeout: float = 30.0, interval: float = 0.5) -> HealthCheck:
        """Healthy when ``command`` (a shell command you wrote, run as written in ``current``,
        host variables in its environment) exits 0 on the host."""
        return cls("command", command, timeout=timeout, interval=interval)

    def describe(self, variables: Mapping[str, str]) -> str:
        """The check with the host's values filled in, for messages."""
        if self.kind == "http":
            return f"GET {expand(self.target, variables, 'health check URL')}"
        if self.kind == "tcp":
            return f"TCP {expand(self.target, variables, 'health check host')}:{self.port}"
        return f"command {self.target!r}"

    def wait(self, variables: Mapping[str, str], run_remote: RemoteRunner) -> None:
        """Return once the check passes; raise :class:`AutoOpsError` with the last reason when
        ``timeout`` passes first."""
        deadline = time.monotonic() + self.timeout
        attempts = 0
        while True:
            attempts += 1
            remaining = deadline - time.monotonic()
            reason = self._probe(variables, run_remote, max(0.2, min(5.0, remaining)))
            if reason is None:
                return
            if time.monotonic() + self.interval >= deadline:
                raise AutoOpsError(
                    f"health check {self.describe(variables)} failed {attempts} time(s) over "
                    f"{self.timeout:g} s: {reason}"
                )
            time.sleep(self.interval)

    def _probe(
        self, variables: Mapping[str, str], run_remote: RemoteRunner, timeout: float
    ) -> str | None:
        if self.kind == "http":
            return self._probe_http(expand(self.target, variables, "health check URL"), timeout)
        if self.kind == "tcp":
            host = expand(self.target, variables, "health check host")
            try:
                tcp_connect(host, self.port, timeout)
            except OSError as exc:
                return f"cannot connect: {exc}"
            return None
        result = run_remote(self.target, timeout)
        if result.ok:
            return None
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        return f"exit {result.exit_code} {tail[0]}".strip()

    def _probe_http(self, url: str, timeout: float) -> str | None:
        try:
            answer = http_get(
                url,
                timeout=timeout,
                follow_redirects=True,
                context=ssl.create_default_context(),
                user_agent="autoops-deploy",
                env_proxy=True,
            )
        except OSError as exc:
            return f"no answer ({failure_reason(exc)})"
        if answer.status != self.status:
            return f"status {answer.status}, expected {self.status}"
        body = answer.body.decode("utf-8", "replace")
        if self.contains is not None and self.contains not in body:
            return f"the body does not contain {self.contains!r}"
        return None
