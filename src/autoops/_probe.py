"""One TCP connect probe and one HTTP GET probe, shared by deploy health checks and the monitor.

Failures are raised as :class:`OSError` (the socket's, the TLS layer's, or :class:`ProbeError`
for an answer that is not HTTP), so each caller keeps its own wording; :func:`failure_reason`
gives one clear line for any of them."""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import re
import socket
import ssl
import string
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit, urlunsplit
from urllib.request import getproxies, proxy_bypass

from ._config import redact_url

__all__ = [
    "HttpAnswer",
    "ProbeError",
    "failure_reason",
    "http_get",
    "http_get_async",
    "tcp_connect",
    "tcp_connect_async",
]

DEFAULT_BODY_LIMIT: Final = 1 << 20
# urllib's HTTPRedirectHandler gives up after 10 as well; deploy health checks used urllib.
_MAX_REDIRECTS: Final = 10
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


class ProbeError(OSError):
    """The server answered, but not with HTTP (a bad status line, a truncated header...)."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """What an HTTP GET got: status and reason phrase, up to the body limit of the body, the
    seconds from connect to the last byte read, the URL that answered (after redirects) and,
    when asked for over HTTPS, the server's certificate in DER form."""

    status: int
    reason: str
    body: bytes
    elapsed: float
    url: str
    certificate: bytes | None = None


def tcp_connect(host: str, port: int, timeout: float) -> float:
    """Open and close a TCP connection to ``host:port``; the seconds the connect took."""
    started = time.perf_counter()
    socket.create_connection((host, port), timeout=timeout).close()
    return time.perf_counter() - started


async def tcp_connect_async(host: str, port: int, timeout: float) -> float:
    """:func:`tcp_connect` without blocking: the connect is bounded by ``timeout``."""
    started = time.perf_counter()
    async with asyncio.timeout(timeout):
        _, writer = await asyncio.open_connection(host, port)
    writer.close()
    return time.perf_counter() - started


def http_get(
    url: str,
    *,
    timeout: float,
    follow_redirects: bool = False,
    context: ssl.SSLContext | None = None,
    user_agent: str = "autoops",
    max_body: int = DEFAULT_BODY_LIMIT,
    peer_certificate: bool = False,
    env_proxy: bool = False,
) -> HttpAnswer:
    """GET ``url`` (http or https) with ``timeout`` seconds per connect and per read. An error
    status is an answer, not an exception. ``context`` verifies HTTPS (default: the system's
    CAs, host name checked); ``follow_redirects`` follows up to 10 redirects to http(s) URLs
    and otherwise the redirect itself is the answer. ``env_proxy`` goes through the
    ``http_proxy``/``https_proxy`` of the environment (``no_proxy`` honoured), as urllib does."""
    started = time.perf_counter()
    for _ in range(_MAX_REDIRECTS + 1 if follow_redirects else 1):
        status, reason, body, certificate, location = _get_once(
            url, timeout, context, user_agent, max_body, peer_certificate, env_proxy
        )
        if not (follow_redirects and status in _REDIRECTS and location):
            break
        # As urllib does: a server may send raw non-ASCII bytes, which http.client would refuse.
        target = urljoin(url, quote(location, encoding="iso-8859-1", safe=string.punctuation))
        if urlsplit(target).scheme not in {"http", "https"}:
            break
        url = target
    return HttpAnswer(status, reason, body, time.perf_counter() - started, url, certificate)


def failure_reason(exc: BaseException) -> str:
    """One line saying why a probe failed, for messages: the error's first line, or its type
    when it has no text."""
    lines = str(exc).splitlines()
    return lines[0] if lines and lines[0] else type(exc).__name__


def _get_once(
    url: str,
    timeout: float,
    context: ssl.SSLContext | None,
    user_agent: str,
    max_body: int,
    peer_certificate: bool,
    env_proxy: bool,
) -> tuple[int, str, bytes, bytes | None, str | None]:
    parts, hostname, path, port = _split_http_url(url)
    where = hostname if port is None else f"{hostname}:{port}"
    headers = {"User-Agent": user_agent}
    proxy = getproxies().get(parts.scheme) if env_proxy and not proxy_bypass(where) else None
    host = hostname
    connect_port = port
    proxy_headers: dict[str, str] = {}
    if proxy:
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, connect_port = proxy_parts.hostname or "", proxy_parts.port
        if proxy_parts.username is not None:
            secret = f"{unquote(proxy_parts.username)}:{unquote(proxy_parts.password or '')}"
            proxy_headers["Proxy-Authorization"] = "Basic " + base64.b64encode(
                secret.encode()
            ).decode("ascii")
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            host,
            connect_port,
            timeout=timeout,
            context=context if context is not None else ssl.create_default_context(),
        )
        if proxy:
            connection.set_tunnel(hostname, port, headers=proxy_headers)
    else:
        connection = http.client.HTTPConnection(host, connect_port, timeout=timeout)
        if proxy:
            # A plain-HTTP proxy takes the whole URL as the request target.
            path = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], path, "", ""))
            headers.update(proxy_headers)
    try:
        connection.connect()
        # Read now: http.client drops the socket once a closing response has been read.
        sock = connection.sock
        certificate = (
            sock.getpeercert(binary_form=True)
            if peer_certificate and isinstance(sock, ssl.SSLSocket)
            else None
        )
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read(max_body)
    except http.client.HTTPException as exc:
        if isinstance(exc, OSError):
            raise
        # repr: what a broken server sent may hold control characters.
        shown = f"{type(exc).__name__}: {str(exc)[:80]!r}" if str(exc) else type(exc).__name__
        raise ProbeError(f"not an HTTP answer from {where}: {shown}") from exc
    finally:
        connection.close()
    return response.status, response.reason, body, certificate, response.getheader("Location")


#: As http.client: the most header lines accepted, and what a request path may not hold.
_MAX_HEADERS: Final = 100
_UNSAFE_IN_PATH: Final = re.compile("[\x00-\x20\x7f]")


async def http_get_async(
    url: str,
    *,
    timeout: float,
    context: ssl.SSLContext | None = None,
    user_agent: str = "autoops",
    max_body: int = DEFAULT_BODY_LIMIT,
    peer_certificate: bool = False,
) -> HttpAnswer:
    """:func:`http_get` without blocking, for many probes on one event loop: ``timeout``
    bounds the connect (TLS handshake included) and each read. It follows no redirect and
    goes through no proxy (the monitor's checks need neither). The status line and headers
    are parsed by http.client, so a broken answer fails as it does in :func:`http_get`."""
    parts, hostname, path, port = _split_http_url(url)
    if _UNSAFE_IN_PATH.search(path):
        # As http.client refuses it (whose error http_get passes on as a ProbeError).
        raise ProbeError(f"{redact_url(url)!r}: a URL can't contain control characters or spaces")
    host = hostname
    where = host if port is None else f"{host}:{port}"
    tls = parts.scheme == "https"
    started = time.perf_counter()
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            host,
            port or (443 if tls else 80),
            ssl=(context if context is not None else ssl.create_default_context()) if tls else None,
            server_hostname=host if tls else None,
        )
    try:
        certificate = None
        if peer_certificate and tls:
            tls_object = writer.get_extra_info("ssl_object")
            certificate = tls_object.getpeercert(binary_form=True) if tls_object else None
        # http.client's Host header: brackets around an IPv6 address, the port unless default.
        shown_host = f"[{host}]" if ":" in host else host
        header_host = shown_host if port in (None, 443 if tls else 80) else f"{shown_host}:{port}"
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {header_host}\r\nAccept-Encoding: identity\r\n"
            f"User-Agent: {user_agent}\r\nConnection: close\r\n\r\n".encode("ascii")
        )
        head = await _read_head(reader, timeout, where)
        response = http.client.HTTPResponse(_Replay(head), method="GET")  # type: ignore[arg-type]
        try:
            response.begin()
        except http.client.HTTPException as exc:
            if isinstance(exc, OSError):
                raise
            shown = f"{type(exc).__name__}: {str(exc)[:80]!r}" if str(exc) else type(exc).__name__
            raise ProbeError(f"not an HTTP answer from {where}: {shown}") from exc
        body = await _read_body(reader, response, timeout, max_body, where)
    finally:
        writer.close()
    return HttpAnswer(
        response.status,
        response.reason,
        body,
        time.perf_counter() - started,
        url,
        certificate,
    )


class _Replay:
    """Stands in for a socket so that http.client parses a status line and headers read
    asynchronously."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self._data)


async def _read_head(reader: asyncio.StreamReader, timeout: float, where: str) -> bytes:
    """The status line and headers, up to and with the empty line (less when the server
    closed before it: http.client then says what is wrong)."""
    lines: list[bytes] = []
    while True:
        try:
            async with asyncio.timeout(timeout):
                line = await reader.readline()
        except ValueError:  # past the reader's limit, 64 KiB as http.client's
            raise ProbeError(
                f"not an HTTP answer from {where}: a header line is over 64 KiB"
            ) from None
        lines.append(line)
        if line in (b"\r\n", b"\n", b""):
            break
        if len(lines) > _MAX_HEADERS + 1:
            raise ProbeError(f"not an HTTP answer from {where}: more than 100 headers")
    return b"".join(lines)


async def _read_body(
    reader: asyncio.StreamReader,
    response: http.client.HTTPResponse,
    timeout: float,
    max_body: int,
    where: str,
) -> bytes:
    """Up to ``max_body`` bytes of the body, framed as ``response``'s headers say. As
    http.client's ``read(amount)``, a body cut short by the server is returned as it came."""
    body = bytearray()
    try:
        if response.chunked:
            while len(body) < max_body:
                async with asyncio.timeout(timeout):
                    size_line = await reader.readline()
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    break
                take = min(size, max_body - len(body))
                async with asyncio.timeout(timeout):
                    body += await reader.readexactly(take)
                    if take == size:
                        await reader.readline()
        else:
            wanted = max_body if response.length is None else min(response.length, max_body)
            while len(body) < wanted:
                async with asyncio.timeout(timeout):
                    chunk = await reader.read(wanted - len(body))
                if not chunk:
                    break
                body += chunk
    except (ValueError, asyncio.IncompleteReadError) as exc:
        raise ProbeError(
            f"not an HTTP answer from {where}: a broken chunked body ({type(exc).__name__})"
        ) from exc
    return bytes(body)


def _split_http_url(url: str) -> tuple[SplitResult, str, str, int | None]:
    """``url``'s parts, host name, request path (with its query) and port, or a
    :class:`ProbeError` saying what is wrong with it (the URL redacted)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ProbeError(f"{redact_url(url)!r} is not an http(s) URL")
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    try:
        port = parts.port
    except ValueError as exc:
        raise ProbeError(f"{redact_url(url)!r}: {exc}") from None
    return parts, parts.hostname, path, port
