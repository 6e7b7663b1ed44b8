"""The monitor's memory between runs: a small JSON file, replaced atomically, merged under a lock.

It holds, per check, the counters behind rates, the status history used against flapping, the
last status notified and the last remediation time. Two runs at once (cron and a person) each
merge only the checks they ran, under an ``flock`` on a sibling ``.lock`` file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from .._errors import ConfigError

__all__ = ["StateFile"]

_VERSION: Final = 1
log: Final = logging.getLogger("autoops.monitor")


class StateFile:
    """Per-check state in ``path``; a missing file is an empty state, a corrupt one is set aside
    (renamed ``.corrupt``) with a warning rather than stopping monitoring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ConfigError(
                f"the monitor state file {self.path} cannot be written: directory "
                f"{self.path.parent} does not exist"
            )

    def load(self) -> dict[str, dict[str, Any]]:
        """Every check's state, as last saved."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (ValueError, UnicodeDecodeError):
            log.warning(
                "monitor state file %s is corrupt; starting afresh (kept as %s.corrupt)",
                self.path,
                self.path,
            )
            with contextlib.suppress(OSError):
                os.replace(self.path, f"{self.path}.corrupt")
            return {}
        checks = data.get("checks") if isinstance(data, dict) else None
        if not isinstance(checks, dict):
            return {}
        return {name: entry for name, entry in checks.items() if isinstance(entry, dict)}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(f"{self.path}.lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def save(self, changes: Mapping[str, Mapping[str, Any]]) -> None:
        """Merge ``changes`` (check name to its whole new state) into the file atomically."""
        with self._locked():
            # Temporary files are only made under the lock, so any found now were left by a
            # writer that was killed mid-write.
            for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                with contextlib.suppress(OSError):
                    leftover.unlink()
            merged = self.load()
            merged.update({name: dict(entry) for name, entry in changes.items()})
            payload = json.dumps({"version": _VERSION, "checks": merged}, sort_keys=True)
            descriptor, temporary = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
            )
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
