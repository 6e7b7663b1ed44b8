"""Telling people about status changes: a webhook and email behind one small protocol, with
notifications only on a change and a flapping check reported once rather than on every flip."""

from __future__ import annotations

import itertools
import json
import logging
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Final, Protocol

from .._config import Secret, redact_url
from .._errors import AutoOpsError, ConfigError
from ._result import CheckResult
from ._status import CheckStatus

__all__ = [
    "AlertPolicy",
    "EmailNotifier",
    "NotificationError",
    "Notifier",
    "StatusChange",
    "WebhookNotifier",
]

log: Final = logging.getLogger("autoops.monitor")


class NotificationError(AutoOpsError):
    """A notification could not be delivered; the change is retried on the next run."""


@dataclass(frozen=True, slots=True)
class StatusChange:
    """What a notifier is told: ``event`` is ``"change"``, ``"flapping_started"`` or
    ``"flapping_stopped"``, with the status before and now and the result that caused it."""

    check: str
    event: str
    previous: CheckStatus
    current: CheckStatus
    result: CheckResult
    at: datetime

    def subject(self) -> str:
        """A one-line title such as ``db OK -> CRITICAL``."""
        if self.event == "flapping_started":
            return f"{self.check} is FLAPPING ({self.current.name} now); alerts paused"
        if self.event == "flapping_stopped":
            return f"{self.check} stopped flapping: {self.current.name}"
        return f"{self.check} {self.previous.name} -> {self.current.name}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON body a webhook receives."""
        return {
            "check": self.check,
            "event": self.event,
            "previous": self.previous.name,
            "current": self.current.name,
            "subject": self.subject(),
            "at": self.at.isoformat(),
            "result": self.result.to_dict(),
        }


class Notifier(Protocol):
    """Anything that can deliver a :class:`StatusChange`; raise on failure."""

    def notify(self, change: StatusChange) -> None: ...


class WebhookNotifier:
    """POST each change as JSON (``StatusChange.to_dict``) to ``url``; any non-2xx reply or
    network error is a :class:`NotificationError`."""

    def __init__(
        self, url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 10.0
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook url must be http(s)://..., got {redact_url(str(url))!r}")
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = timeout

    def notify(self, change: StatusChange) -> None:
        body = json.dumps(change.to_dict()).encode("utf-8")
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", **self.headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            raise NotificationError(
                f"webhook {redact_url(self.url)} answered HTTP {exc.code} to {change.subject()!r}"
            ) from exc
        except OSError as exc:
            raise NotificationError(
                f"webhook {redact_url(self.url)} unreachable for {change.subject()!r}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        return f"WebhookNotifier({redact_url(self.url)!r})"


class EmailNotifier:
    """Send each change as a plain-text email through an SMTP server (STARTTLS and login
    optional; the password is a :class:`~autoops.Secret`)."""

    def __init__(
        self,
        host: str,
        *,
        sender: str,
        recipients: Sequence[str],
        port: int = 25,
        starttls: bool = False,
        username: str | None = None,
        password: str | Secret | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not recipients or isinstance(recipients, str):
            raise ConfigError("an email notifier needs a list of recipients (to = [...])")
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = list(recipients)
        self.starttls = starttls
        self.username = username
        self.password = password if isinstance(password, Secret | None) else Secret(password)
        self.timeout = timeout

    def notify(self, change: StatusChange) -> None:
        message = EmailMessage()
        message["Subject"] = f"[autoops] {change.subject()}"
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(
            f"{change.subject()}\n\n{change.result.nagios_line()}\n\nat {change.at.isoformat()}\n"
        )
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username and self.password is not None:
                    smtp.login(self.username, self.password.reveal())
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise NotificationError(
                f"cannot send mail through {self.host}:{self.port} for "
                f"{change.subject()!r}: {type(exc).__name__}"
            ) from exc

    def __repr__(self) -> str:
        return f"EmailNotifier({self.host}:{self.port}, to={self.recipients!r})"


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """When to notify: on a change from the last status notified, except while flapping.

    Flapping follows Nagios: the state changes among the last ``window`` statuses, as a share
    of the ``window - 1`` possible; at or above ``flap_start`` the check is flapping (one
    ``flapping_started`` is sent and then nothing), and it stops once the share falls to
    ``flap_stop`` or below (one ``flapping_stopped`` with the status then).
    """

    window: int = 10
    flap_start: float = 0.5
    flap_stop: float = 0.25

    def __post_init__(self) -> None:
        if self.window < 3 or not 0 < self.flap_stop < self.flap_start <= 1:
            raise ConfigError("AlertPolicy needs window >= 3 and 0 < flap_stop < flap_start <= 1")

    def decide(
        self, state: dict[str, Any], result: CheckResult, now: datetime | None = None
    ) -> StatusChange | None:
        """Record ``result`` in the check's ``state`` and return the change to send, if any."""
        moment = now or datetime.now(UTC)
        history = [
            CheckStatus[name]
            for name in state.get("history", [])
            if name in CheckStatus.__members__
        ][-(self.window - 1) :]
        history.append(result.status)
        state["history"] = [status.name for status in history]
        notified = CheckStatus[state.get("notified", "OK")]
        flapping = bool(state.get("flapping", False))
        changes = sum(1 for before, after in itertools.pairwise(history) if before != after)
        # The share is of the whole window, so a young history cannot look like flapping.
        share = changes / (self.window - 1)
        if not flapping and share >= self.flap_start:
            state["flapping"] = True
            return StatusChange(
                result.name, "flapping_started", notified, result.status, result, moment
            )
        if flapping:
            if share > self.flap_stop:
                return None
            state["flapping"] = False
            return StatusChange(
                result.name, "flapping_stopped", notified, result.status, result, moment
            )
        if result.status == notified:
            return None
        return StatusChange(result.name, "change", notified, result.status, result, moment)

    @staticmethod
    def delivered(state: dict[str, Any], change: StatusChange) -> None:
        """Mark ``change`` as told, so it is not sent again."""
        state["notified"] = change.current.name


def deliver(notifiers: Sequence[Notifier], change: StatusChange) -> list[str]:
    """Send ``change`` through every notifier; return the failures (each already logged)."""
    failures = []
    for notifier in notifiers:
        try:
            notifier.notify(change)
        except NotificationError as exc:
            log.error("%s", exc)
            failures.append(str(exc))
    return failures
