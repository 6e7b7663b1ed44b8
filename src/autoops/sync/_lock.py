"""The one-runner lock: ``SET NX PX`` with a token, renewed while the pass runs."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from types import TracebackType

import orjson

from .._errors import AutoOpsError, LockHeldError
from .._time import utc_now
from ..cache import CacheBackend
from ._report import describe_holder

__all__ = ["SyncLock"]

log = logging.getLogger("autoops.sync")


class SyncLock:
    """Held for one pass. Its value (token, host, pid, since) is also the fence every batch
    write checks, so a runner that lost the lock (paused past its expiry) writes nothing."""

    def __init__(self, cache: CacheBackend, key: str, ttl: float, what: str) -> None:
        self.cache = cache
        self.key = cache.key(key)
        self.ttl_ms = max(1000, int(ttl * 1000))
        self.what = what
        self.value = orjson.dumps(
            {
                "token": uuid.uuid4().hex,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "since": utc_now().isoformat(timespec="seconds"),
            }
        )
        self.lost = False
        #: The fencing token the cache gave when the lock was taken (0: it needs none).
        self.token = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def fence(self) -> tuple[str, bytes]:
        """The (key, value) pair batch writes are conditional on."""
        return self.key, self.value

    def acquire(self) -> None:
        """Take the lock or raise :class:`LockHeldError` naming the holder."""
        for _ in range(3):
            if self.cache.set_if_absent(self.key, self.value, self.ttl_ms):
                try:
                    self.token = self.cache.claim_fences(self.key)
                except BaseException:
                    self.cache.delete_if_equal(self.key, self.value)
                    raise
                self._thread = threading.Thread(
                    target=self._renew, name=f"autoops-sync-lock {self.key}", daemon=True
                )
                self._thread.start()
                return
            holder = describe_holder(self.cache.get_raw(self.key))
            if holder is not None:
                raise LockHeldError(
                    f"{self.what} is already running on {holder} (lock {self.key} in "
                    f"{self.cache.location}); this run does nothing. The lock expires "
                    f"{self.ttl_ms / 1000:.0f} s after its holder stops renewing it",
                    holder=holder,
                )
        raise LockHeldError(f"{self.what}: the lock {self.key} keeps changing hands; try later")

    def _renew(self) -> None:
        interval = self.ttl_ms / 3000
        while not self._stop.wait(interval):
            try:
                if not self.cache.expire_if_equal(self.key, self.value, self.ttl_ms):
                    self.lost = True
                    log.error(
                        "%s: lost the lock %s; its writes will be refused", self.what, self.key
                    )
                    return
            except AutoOpsError as exc:
                # The next renewal may get through; if the lock expires meanwhile, the fenced
                # writes notice.
                log.warning("%s: could not renew the lock %s: %s", self.what, self.key, exc)

    def release(self) -> None:
        """Stop renewing and delete the lock if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.cache.delete_if_equal(self.key, self.value)
        except AutoOpsError as exc:
            log.warning(
                "%s: could not release the lock %s (it expires): %s", self.what, self.key, exc
            )

    def __enter__(self) -> SyncLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
