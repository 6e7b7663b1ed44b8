"""The shared TCP and HTTP probe against real servers on loopback: plain HTTP with redirects,
HTTPS signed by a private CA, a closed port and a server that accepts and never answers. What
both the blocking probe and the asyncio one do is tested on both."""

from __future__ import annotations

import asyncio
import base64
import http.server
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from _support.certs import ServerTls, make_server_tls
from _support.monitor_servers import SilentServer
from _support.sshd import free_port
from autoops import CheckStatus, HealthCheck, HttpCheck
from autoops._probe import (
    HttpAnswer,
    ProbeError,
    failure_reason,
    http_get,
    http_get_async,
    tcp_connect,
    tcp_connect_async,
)

#: Raw answers, written as they are: framings BaseHTTPRequestHandler would not write itself.
_RAW = {
    "/garbage": b"\x00\xffnot http at all\r\n\r\n",
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;note=x\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "/until-close": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it",
    "/cut-short": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
    "/bare-newlines": b"HTTP/1.1 204 No Content\nX-Note: lf only\n\n",
}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path.startswith("/moved"):
            self.send_response(302)
            self.send_header("Location", "/héalth?from=moved".encode().decode("latin-1"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/loop":
            self.send_response(301)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path in _RAW:
            self.wfile.write(_RAW[self.path])
            self.close_connection = True
            return
        self.server.agents.append(self.headers.get("User-Agent", ""))
        self.server.proxy_logins.append(self.headers.get("Proxy-Authorization"))
        body = b"x" * 4096 if self.path == "/big" else f"path={self.path}".encode()
        self.send_response(503 if self.path == "/down" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ServerTls | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.agents: list[str] = []
        self.proxy_logins: list[str | None] = []
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
            self.socket = context.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def web() -> Iterator[_Server]:
    server = _Server()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def tls_web(tmp_path: Path) -> Iterator[tuple[_Server, ServerTls]]:
    tls = make_server_tls(tmp_path / "tls")
    server = _Server(tls)
    yield server, tls
    server.shutdown()
    server.server_close()


Get = Callable[..., HttpAnswer]


@pytest.fixture(params=["blocking", "asyncio"])
def get(request: pytest.FixtureRequest) -> Get:
    """http_get, or http_get_async on an event loop of its own."""
    if request.param == "blocking":
        return http_get

    def on_a_loop(url: str, **options: Any) -> HttpAnswer:
        return asyncio.run(http_get_async(url, **options))

    return on_a_loop


def test_a_get_returns_status_body_and_elapsed_with_the_user_agent(web: _Server, get: Get) -> None:
    answer = get(web.url("/health?x=1"), timeout=5, user_agent="probe-test")
    assert (answer.status, answer.reason, answer.body) == (200, "OK", b"path=/health?x=1")
    assert answer.elapsed > 0
    assert web.agents == ["probe-test"]


def test_an_error_status_is_an_answer_with_its_body(web: _Server, get: Get) -> None:
    answer = get(web.url("/down"), timeout=5)
    assert (answer.status, answer.body) == (503, b"path=/down")


def test_the_body_is_cut_at_the_limit(web: _Server, get: Get) -> None:
    assert get(web.url("/big"), timeout=5, max_body=100).body == b"x" * 100


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/chunked", 200, b"hello world"),
        ("/until-close", 200, b"all of it"),
        ("/cut-short", 200, b"only this"),
        ("/bare-newlines", 204, b""),
    ],
)
def test_each_framing_of_a_body_is_read(
    web: _Server, get: Get, path: str, status: int, body: bytes
) -> None:
    answer = get(web.url(path), timeout=5)
    assert (answer.status, answer.body) == (status, body)


def test_a_path_with_a_control_character_or_space_is_refused(web: _Server, get: Get) -> None:
    with pytest.raises(ProbeError, match="can't contain control characters"):
        get(web.url("/a b"), timeout=5)


def test_a_chunked_body_is_cut_at_the_limit_too(web: _Server, get: Get) -> None:
    assert get(web.url("/chunked"), timeout=5, max_body=7).body == b"hello w"


def test_a_redirect_is_the_answer_unless_asked_to_follow(web: _Server, get: Get) -> None:
    assert get(web.url("/moved"), timeout=5).status == 302
    followed = http_get(web.url("/moved"), timeout=5, follow_redirects=True)
    assert followed.status == 200
    assert followed.url.endswith("?from=moved")


def test_a_redirect_loop_ends_with_the_last_redirect(web: _Server) -> None:
    assert http_get(web.url("/loop"), timeout=5, follow_redirects=True).status == 301


def test_an_answer_that_is_not_http_is_a_probe_error(web: _Server, get: Get) -> None:
    with pytest.raises(ProbeError, match=r"not an HTTP answer from 127\.0\.0\.1:"):
        get(web.url("/garbage"), timeout=5)


def test_https_verified_by_a_private_ca_returns_the_peer_certificate(
    tls_web: tuple[_Server, ServerTls], get: Get
) -> None:
    server, tls = tls_web
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    answer = get(server.url("/"), timeout=5, context=context, peer_certificate=True)
    assert answer.status == 200
    assert answer.certificate is not None
    served = x509.load_der_x509_certificate(answer.certificate)
    assert served == x509.load_pem_x509_certificate(tls.cert_file.read_bytes())


def test_the_certificate_is_only_read_when_asked(
    tls_web: tuple[_Server, ServerTls], get: Get
) -> None:
    server, tls = tls_web
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    assert get(server.url("/"), timeout=5, context=context).certificate is None


def test_https_from_an_unknown_ca_fails_verification(
    tls_web: tuple[_Server, ServerTls], get: Get
) -> None:
    server, _ = tls_web
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        get(server.url("/"), timeout=5)
    assert "CERTIFICATE_VERIFY_FAILED" in failure_reason(caught.value)


def test_a_closed_port_is_refused_for_tcp_and_http(get: Get) -> None:
    port = free_port()
    with pytest.raises(ConnectionRefusedError):
        tcp_connect("127.0.0.1", port, 5)
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(tcp_connect_async("127.0.0.1", port, 5))
    with pytest.raises(ConnectionRefusedError) as caught:
        get(f"http://127.0.0.1:{port}/", timeout=5)
    assert "Connect" in failure_reason(caught.value)


def test_an_open_port_connects_and_reports_the_connect_time() -> None:
    silent = SilentServer()
    try:
        assert tcp_connect("127.0.0.1", silent.port, 5) > 0
        assert asyncio.run(tcp_connect_async("127.0.0.1", silent.port, 5)) > 0
    finally:
        silent.close()


def test_a_server_that_never_answers_ends_at_the_timeout(get: Get) -> None:
    silent = SilentServer()
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            get(f"http://127.0.0.1:{silent.port}/", timeout=0.5)
        waited = time.monotonic() - started
    finally:
        silent.close()
    assert waited < 3


def test_env_proxy_sends_the_whole_url_and_the_login_to_the_proxy(
    web: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", f"http://us%C3%A9r:p%40ss@127.0.0.1:{web.server_address[1]}")
    answer = http_get("http://app.invalid:8080/health?x=1", timeout=5, env_proxy=True)
    assert answer.body == b"path=http://app.invalid:8080/health?x=1"
    assert web.proxy_logins == ["Basic " + base64.b64encode("usér:p@ss".encode()).decode()]


def test_no_proxy_and_the_default_bypass_the_environment_proxy(
    web: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert http_get(web.url("/direct"), timeout=5, env_proxy=True).body == b"path=/direct"
    monkeypatch.delenv("no_proxy")
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert http_get(web.url("/direct"), timeout=5).body == b"path=/direct"


def _no_remote(command: str, timeout: float) -> Any:
    raise AssertionError("an HTTP health check runs nothing on the host")


def test_a_deploy_health_check_follows_redirects(web: _Server) -> None:
    HealthCheck.http(web.url("/moved"), contains="from=moved", timeout=5).wait({}, _no_remote)


def test_a_monitor_check_takes_a_redirect_as_its_answer(web: _Server) -> None:
    result = HttpCheck("web", web.url("/moved"), expect_status=[302]).run()
    assert result.status is CheckStatus.OK, result.summary


def test_an_answer_that_is_not_http_is_critical_for_the_monitor(web: _Server) -> None:
    result = HttpCheck("web", web.url("/garbage")).run()
    assert result.status is CheckStatus.CRITICAL
    assert "not an HTTP answer" in result.summary
