"""A TCP proxy for fault tests: forward, refuse, drop live connections, or drop the reply.

It sits between a client and a real server on loopback, so a test can cut the network at an
exact point without touching the server.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from types import TracebackType


def _reset(sock: socket.socket) -> None:
    """Cut the connection now: shutdown() takes effect at once even while the pump thread is in
    select() on this socket (close() alone is deferred until select returns), then close with
    RST rather than FIN, as a dead peer looks."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Listen on 127.0.0.1:<free port> and forward to ``target``.

    Modes: ``forward`` (normal), ``refuse`` (new connections are reset at once), ``blackhole``
    (new connections are accepted and never answered, as a hung host behind a live port looks;
    they are closed with the proxy). ``drop_all()``
    resets every live connection; ``outage(seconds)`` refuses and drops for that long;
    ``drop_next_reply()`` lets the next client request through to the server, then resets the
    connection before the reply comes back: the "write sent, outcome unknown" case.
    ``reset_after_reply(marker)`` lets the request holding ``marker`` through *and* its reply
    back, then resets: the request is done, the one after it fails (a batch cut part way).
    With ``record=True``, ``traffic`` keeps every byte that passed, both ways, for tests that
    check what crossed the wire (a password must never cross in the clear).
    """

    def __init__(self, target_host: str, target_port: int, *, record: bool = False) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.mode = "forward"
        self._drop_reply = threading.Event()
        self._drop_marker = b""
        self._reset_marker = b""
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self.accepted = 0
        self.record = record
        self.traffic = bytearray()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.mode == "refuse":
                _reset(client)
                continue
            if self.mode == "blackhole":
                with self._lock:
                    self._held.append(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            pair = (client, upstream)
            with self._lock:
                self._pairs.add(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        client, upstream = pair
        reset_after_reply = False
        try:
            while True:
                readable, _, _ = select.select([client, upstream], [], [], 0.2)
                with self._lock:
                    if pair not in self._pairs:
                        return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self.record:
                        with self._lock:
                            self.traffic += data
                    if sock is client:
                        upstream.sendall(data)
                        if self._reset_marker and self._reset_marker in data:
                            self._reset_marker = b""
                            reset_after_reply = True
                        if self._drop_reply.is_set() and self._drop_marker in data:
                            self._drop_reply.clear()
                            # Let the server read and act on the request, then cut the line.
                            time.sleep(0.3)
                            return
                    else:
                        client.sendall(data)
                        if reset_after_reply:
                            return
        except (OSError, ValueError):  # ValueError: select() on a socket drop_all() closed
            return
        finally:
            with self._lock:
                self._pairs.discard(pair)
            _reset(client)
            _reset(upstream)

    def drop_all(self) -> None:
        """Reset every live connection, both ways."""
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)

    def refuse(self) -> None:
        self.mode = "refuse"

    def forward(self) -> None:
        self.mode = "forward"

    def blackhole(self) -> None:
        self.mode = "blackhole"

    def outage(self, seconds: float) -> None:
        """Drop every connection and refuse new ones for ``seconds``, in the background."""
        self.refuse()
        self.drop_all()
        timer = threading.Timer(seconds, self.forward)
        timer.daemon = True
        timer.start()

    def drop_next_reply(self, containing: bytes = b"") -> None:
        """Drop the reply to the next request (the next one holding ``containing`` if given)."""
        self._drop_marker = containing
        self._drop_reply.set()

    def reset_after_reply(self, marker: bytes) -> None:
        """Reset the connection once the reply to the next request holding ``marker`` is back."""
        self._reset_marker = marker

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop_all()
        with self._lock:
            held, self._held = self._held, []
        for sock in held:
            _reset(sock)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
