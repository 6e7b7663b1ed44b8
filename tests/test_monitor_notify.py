"""Acting on results: notify on change only, no storm while flapping, real webhook and SMTP
servers, remediation over SSH rate-limited, state kept between runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller

from _support.monitor_servers import SilentServer, WebServer
from _support.proxy import TcpProxy
from _support.sshd import SshServer, free_port
from autoops import (
    AlertPolicy,
    Check,
    CheckFindings,
    CheckResult,
    CheckStatus,
    EmailNotifier,
    Monitor,
    MySQLCheck,
    NotificationError,
    Remediation,
    StateFile,
    StatusChange,
    WebhookNotifier,
)
from autoops._ssh import SshOptions


class ScriptedCheck(Check):
    """A check whose next statuses are set by the test (a stand-in for a target that changes)."""

    kind = "scripted"

    def __init__(self, name: str, statuses: list[CheckStatus]) -> None:
        super().__init__(name)
        self.statuses = statuses

    def measure(self, findings: CheckFindings) -> None:
        status = self.statuses.pop(0)
        if status is not CheckStatus.OK:
            findings.problem(status, f"scripted {status.name}")


class Recorder:
    def __init__(self) -> None:
        self.changes: list[StatusChange] = []

    def notify(self, change: StatusChange) -> None:
        self.changes.append(change)


def result(status: CheckStatus) -> CheckResult:
    return CheckResult("db", "mysql", status, status.name)


def decide_all(statuses: list[CheckStatus], policy: AlertPolicy | None = None) -> list[str]:
    policy = policy or AlertPolicy()
    state: dict[str, Any] = {}
    events = []
    for status in statuses:
        change = policy.decide(state, result(status))
        if change is not None:
            AlertPolicy.delivered(state, change)
            events.append(change.subject())
    return events


OK, WARN, CRIT = CheckStatus.OK, CheckStatus.WARNING, CheckStatus.CRITICAL


def test_only_changes_are_notified() -> None:
    assert decide_all([OK, OK, CRIT, CRIT, CRIT, OK, OK]) == [
        "db OK -> CRITICAL",
        "db CRITICAL -> OK",
    ]


def test_a_flapping_check_sends_one_notice_then_nothing_until_it_settles() -> None:
    flapping = [OK, CRIT] * 10
    settled = [OK] * 10
    events = decide_all(flapping + settled)
    assert len(events) <= 6
    assert any("is FLAPPING" in event for event in events)
    assert events[-1] == "db stopped flapping: OK"


def test_a_bad_flap_policy_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="flap_stop"):
        AlertPolicy(flap_start=0.2, flap_stop=0.5)


def test_the_webhook_posts_the_change_as_json() -> None:
    server = WebServer()
    try:
        WebhookNotifier(server.url("/hook"), headers={"X-Token": "t"}).notify(
            StatusChange("db", "change", OK, CRIT, result(CRIT), datetime.now(UTC))
        )
    finally:
        server.close()
    [received] = server.received
    assert received["path"] == "/hook"
    assert received["headers"]["X-Token"] == "t"
    assert received["json"]["subject"] == "db OK -> CRITICAL"
    assert received["json"]["result"]["status"] == "CRITICAL"


def test_a_webhook_answering_an_error_is_a_notification_error() -> None:
    server = WebServer()
    server.post_status = 503
    try:
        with pytest.raises(NotificationError, match="HTTP 503"):
            WebhookNotifier(server.url("/hook")).notify(
                StatusChange("db", "change", OK, CRIT, result(CRIT), datetime.now(UTC))
            )
    finally:
        server.close()


class Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, inbox
    controller.stop()


def test_email_is_sent_through_a_real_smtp_server(smtp_server: tuple[int, Inbox]) -> None:
    port, inbox = smtp_server
    EmailNotifier(
        "127.0.0.1", port=port, sender="monitor@example.org", recipients=["ops@example.org"]
    ).notify(StatusChange("db", "change", OK, CRIT, result(CRIT), datetime.now(UTC)))
    [message] = inbox.messages
    assert b"Subject: [autoops] db OK -> CRITICAL" in message
    assert b"db CRITICAL: CRITICAL" in message


def test_an_unreachable_smtp_server_is_a_notification_error() -> None:
    with pytest.raises(NotificationError, match="cannot send mail"):
        EmailNotifier(
            "127.0.0.1", port=free_port(), sender="a@b", recipients=["c@d"], timeout=2
        ).notify(StatusChange("db", "change", OK, CRIT, result(CRIT), datetime.now(UTC)))


def test_state_between_runs_means_one_notice_per_change(tmp_path: Path) -> None:
    recorder = Recorder()
    statuses = [OK, CRIT, CRIT, CRIT, OK]
    for _ in range(len(statuses)):
        # Every run is a new Monitor, as every cron run is a new process.
        monitor = Monitor(
            [ScriptedCheck("db", statuses)],
            state_file=str(tmp_path / "s.json"),
            notifiers=[recorder],
        )
        monitor.run()
    assert [change.subject() for change in recorder.changes] == [
        "db OK -> CRITICAL",
        "db CRITICAL -> OK",
    ]


def test_a_failed_delivery_is_retried_on_the_next_run(tmp_path: Path) -> None:
    server = WebServer()
    server.post_status = 500
    state = str(tmp_path / "s.json")
    statuses = [CRIT, CRIT]
    try:
        Monitor(
            [ScriptedCheck("db", statuses)],
            state_file=state,
            notifiers=[WebhookNotifier(server.url("/"))],
        ).run()
        server.post_status = 200
        Monitor(
            [ScriptedCheck("db", statuses)],
            state_file=state,
            notifiers=[WebhookNotifier(server.url("/"))],
        ).run()
    finally:
        server.close()
    assert [item["json"]["subject"] for item in server.received] == ["db OK -> CRITICAL"] * 2


def test_a_corrupt_state_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("{not json")
    assert StateFile(path).load() == {}
    assert (tmp_path / "s.json.corrupt").exists()


def test_remediation_runs_over_ssh_when_a_check_turns_critical_and_is_rate_limited(
    sshd: SshServer, tmp_path: Path
) -> None:
    marker = tmp_path / "restarted"
    remediation = Remediation(
        host=sshd.address,
        command=["sh", "-c", f'echo restart >> "{marker}"'],
        ssh=SshOptions(key_filename=str(sshd.client_key), known_hosts=str(sshd.known_hosts)),
        min_interval=3600,
    )
    state = str(tmp_path / "s.json")
    statuses = [CRIT, OK, CRIT]
    notes = []
    for _ in range(len(statuses)):
        monitor = Monitor(
            [ScriptedCheck("web", statuses)], state_file=state, remediations={"web": remediation}
        )
        notes.append(monitor.run()[0].remediation)
    assert marker.read_text() == "restart\n"
    assert notes[0] is not None
    assert notes[0].startswith("ran ")
    assert "exit 0" in notes[0]
    assert notes[1] is None
    assert notes[2] is not None
    assert notes[2].startswith("skipped")
    saved = json.loads(Path(state).read_text())
    assert saved["checks"]["web"]["remediated_at"] <= time.time()


def test_a_database_outage_and_recovery_each_notify_once(
    mysql_url: str, tcp_proxy: Callable[[str, int], TcpProxy], tmp_path: Path
) -> None:
    parts = urlsplit(mysql_url)
    proxy = tcp_proxy(parts.hostname or "127.0.0.1", parts.port or 3306)
    receiver = WebServer()
    monitor = Monitor(
        [MySQLCheck("db", f"mysql://root@127.0.0.1:{proxy.port}/", timeout=2)],
        state_file=str(tmp_path / "state.json"),
        notifiers=[WebhookNotifier(receiver.url("/hook"))],
    )
    try:
        statuses = [monitor.run()[0].status]
        proxy.refuse()
        proxy.drop_all()
        statuses += [monitor.run()[0].status, monitor.run()[0].status]
        proxy.forward()
        statuses += [monitor.run()[0].status]
    finally:
        receiver.close()
    assert statuses == [OK, CRIT, CRIT, OK]
    assert [item["json"]["subject"] for item in receiver.received] == [
        "db OK -> CRITICAL",
        "db CRITICAL -> OK",
    ]


def test_a_webhook_that_never_answers_fails_within_its_timeout() -> None:
    silent = SilentServer()
    started = time.monotonic()
    try:
        with pytest.raises(NotificationError, match="unreachable"):
            WebhookNotifier(f"http://127.0.0.1:{silent.port}/", timeout=0.5).notify(
                StatusChange("db", "change", OK, CRIT, result(CRIT), datetime.now(UTC))
            )
    finally:
        silent.close()
    assert time.monotonic() - started < 3


def test_the_webhook_payload_carries_when_the_check_was_last_ok(tmp_path: Path) -> None:
    server = WebServer()
    statuses = [OK, CRIT]
    try:
        for _ in range(2):
            Monitor(
                [ScriptedCheck("db", statuses)],
                state_file=str(tmp_path / "s.json"),
                notifiers=[WebhookNotifier(server.url("/hook"))],
            ).run()
    finally:
        server.close()
    saved = json.loads((tmp_path / "s.json").read_text())["checks"]["db"]["last_ok_at"]

    [received] = server.received
    assert received["json"]["subject"] == "db OK -> CRITICAL"
    last_ok_at = received["json"]["result"]["last_ok_at"]
    assert last_ok_at is not None
    assert datetime.fromisoformat(last_ok_at) == datetime.fromtimestamp(saved, UTC)
