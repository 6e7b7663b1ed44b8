"""HTTP(S) and TCP checks: status, latency, body text, certificate days left, port open."""

from __future__ import annotations

import ssl
from collections.abc import Collection
from datetime import UTC, datetime
from typing import ClassVar
from urllib.parse import urlsplit

from cryptography import x509

from .._config import redact_url
from .._connection import TlsSettings, tls_context
from .._errors import ConfigError
from .._probe import HttpAnswer, http_get, http_get_async, tcp_connect, tcp_connect_async
from ._check import Check, CheckFindings, DefaultThresholds, ThresholdSpec
from ._status import CheckStatus

__all__ = ["HttpCheck", "TcpCheck"]


class HttpCheck(Check):
    """GET ``url`` (redirects are not followed): the status must be in ``expect_status``
    (default any 2xx or 3xx), ``contains`` (if given) must appear in the first MiB of the body,
    and for https the certificate's days left are measured (default warning below 30, critical
    below 14). ``verify=False`` skips certificate verification but still reads its expiry;
    ``ca_file`` trusts a private CA.
    """

    kind = "http"
    THRESHOLDS: ClassVar[DefaultThresholds] = {
        "latency": ("1", "5"),
        "certificate_days": ("30:", "14:"),
    }

    def __init__(
        self,
        name: str,
        url: str,
        *,
        expect_status: Collection[int] = (),
        contains: str | None = None,
        verify: bool = True,
        ca_file: str | None = None,
        timeout: float = 10.0,
        thresholds: ThresholdSpec | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout, thresholds=thresholds)
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(
                f"check {name}: url must look like https://host/path, got {redact_url(str(url))!r}"
            )
        for code in expect_status:
            if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
                raise ConfigError(f"check {name}: expect_status holds {code!r}, not an HTTP status")
        self.url = url
        self.expect_status = frozenset(expect_status)
        self.contains = contains
        self.verify = verify
        self.ca_file = ca_file

    @property
    def target(self) -> str:
        return redact_url(self.url)

    def _context(self) -> ssl.SSLContext:
        return tls_context(
            TlsSettings(
                ca_file=self.ca_file,
                verify="required" if self.verify else "none",
                check_hostname=self.verify,
            )
        )

    @property
    def measures_async(self) -> bool:
        return True

    def measure(self, findings: CheckFindings) -> None:
        answer = http_get(
            self.url,
            timeout=self.timeout,
            context=self._context(),
            user_agent="autoops-check",
            peer_certificate=True,
        )
        self._judge(findings, answer)

    async def measure_async(self, findings: CheckFindings) -> None:
        answer = await http_get_async(
            self.url,
            timeout=self.timeout,
            context=self._context(),
            user_agent="autoops-check",
            peer_certificate=True,
        )
        self._judge(findings, answer)

    def _judge(self, findings: CheckFindings, answer: HttpAnswer) -> None:
        status, latency = answer.status, answer.elapsed
        expected = status in self.expect_status if self.expect_status else 200 <= status < 400
        if expected:
            findings.note(f"HTTP {status}")
        else:
            wanted = (
                ", ".join(str(code) for code in sorted(self.expect_status))
                if self.expect_status
                else "2xx or 3xx"
            )
            findings.problem(
                CheckStatus.CRITICAL, f"HTTP {status} {answer.reason} (expected {wanted})"
            )
        findings.metric("latency", latency, "s", text=f"{latency * 1000:.1f} ms", minimum=0)
        findings.metric("size", len(answer.body), "B", text=None, minimum=0)
        if self.contains is not None:
            if self.contains.encode("utf-8") in answer.body:
                findings.note(f"body has {self.contains!r}")
            else:
                findings.problem(CheckStatus.CRITICAL, f"body lacks {self.contains!r}")
        if answer.certificate:
            expires = x509.load_der_x509_certificate(answer.certificate).not_valid_after_utc
            days = (expires - datetime.now(UTC)).total_seconds() / 86400
            findings.metric(
                "certificate_days",
                days,
                text=f"certificate expires in {days:.0f} days ({expires:%Y-%m-%d})",
                series="certificate_expiry_seconds",
                scale=86400,
            )


class TcpCheck(Check):
    """Connect to ``host:port``: refused or timed out is CRITICAL; the connect time is measured."""

    kind = "tcp"
    THRESHOLDS: ClassVar[DefaultThresholds] = {"latency": ("1", "5")}

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        *,
        timeout: float = 10.0,
        thresholds: ThresholdSpec | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout, thresholds=thresholds)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigError(f"check {name}: port must be 1 to 65535, got {port!r}")
        if not isinstance(host, str) or not host:
            raise ConfigError(f"check {name}: host must be a host name or address")
        self.host = host
        self.port = port

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def measures_async(self) -> bool:
        return True

    def measure(self, findings: CheckFindings) -> None:
        try:
            latency = tcp_connect(self.host, self.port, self.timeout)
        except ConnectionRefusedError:
            self._refused(findings)
            return
        self._judge(findings, latency)

    async def measure_async(self, findings: CheckFindings) -> None:
        try:
            latency = await tcp_connect_async(self.host, self.port, self.timeout)
        except ConnectionRefusedError:
            self._refused(findings)
            return
        self._judge(findings, latency)

    def _refused(self, findings: CheckFindings) -> None:
        findings.problem(CheckStatus.CRITICAL, f"{self.host}:{self.port} refused the connection")

    def _judge(self, findings: CheckFindings, latency: float) -> None:
        findings.metric(
            "latency",
            latency,
            "s",
            text=f"{self.host}:{self.port} open in {latency * 1000:.1f} ms",
            minimum=0,
        )
