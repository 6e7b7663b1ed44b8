"""What a fleet command, transfer or facts gathering did, host by host."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._display import format_bytes, format_seconds, html_table
from .._errors import AutoOpsError

__all__ = ["FleetError", "FleetResult", "HostResult", "HostStatus"]

#: ``ok``: exit 0 (or the transfer verified); ``failed``: the command exited non-zero or the host
#: refused the transfer; ``timeout``: still running at the timeout (then stopped);
#: ``unreachable``: no connection, so nothing was sent; ``lost``: the connection dropped after the
#: command was sent, so its outcome is unknown (never re-run on our own); ``refused``: the host key
#: or the login was refused.
HostStatus = Literal["ok", "failed", "timeout", "unreachable", "lost", "refused"]

_COLUMNS = ("host", "status", "exit", "time", "output")


@dataclass(frozen=True, slots=True)
class HostResult:
    """One host's part: ``status``, the exit code (``None`` when the command never finished),
    the kept output as bytes (``stdout``/``stderr`` decode it, bad UTF-8 replaced), how many
    bytes of each stream were cut to keep memory bounded, the error for any status but ``ok`` and
    ``failed``, and for transfers the local or remote ``path``, ``size_bytes`` and ``sha256``."""

    host: str
    status: HostStatus
    exit_code: int | None = None
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""
    stdout_cut_bytes: int = 0
    stderr_cut_bytes: int = 0
    duration_seconds: float = 0.0
    error: str = ""
    path: str = ""
    size_bytes: int = 0
    sha256: str = ""

    @property
    def ok(self) -> bool:
        """True when the command exited 0 or the transfer was verified."""
        return self.status == "ok"

    @property
    def stdout(self) -> str:
        """The kept stdout as text (bytes that are not UTF-8 become U+FFFD)."""
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        """The kept stderr as text (bytes that are not UTF-8 become U+FFFD)."""
        return self.stderr_bytes.decode("utf-8", "replace")

    @property
    def truncated(self) -> bool:
        """True when output was cut (only the last bytes of a stream were kept)."""
        return bool(self.stdout_cut_bytes or self.stderr_cut_bytes)

    def summary(self) -> str:
        """One line for the table: the error, else the last line of output, with a cut noted."""
        if self.error:
            text = self.error
        elif self.path:
            text = f"{self.path} ({format_bytes(self.size_bytes)}, sha256 {self.sha256[:12]})"
        else:
            lines = (self.stdout or self.stderr).strip().splitlines()
            text = lines[-1] if lines else ""
        if self.truncated:
            cut = format_bytes(self.stdout_cut_bytes + self.stderr_cut_bytes)
            text = f"[{cut} of output cut] {text}"
        return text

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (output decoded as text)."""
        return {
            "host": self.host,
            "status": self.status,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "stdout_cut_bytes": self.stdout_cut_bytes,
            "stderr_cut_bytes": self.stderr_cut_bytes,
            "duration_seconds": round(self.duration_seconds, 6),
            "error": self.error,
            "path": self.path,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
        }

    def _row(self, width: int | None = 80) -> tuple[str, str, str, str, str]:
        summary = self.summary()
        if width is not None and len(summary) > width:
            summary = summary[: width - 3] + "..."
        return (
            self.host,
            self.status,
            "" if self.exit_code is None else str(self.exit_code),
            format_seconds(self.duration_seconds),
            summary,
        )


def _text_table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [_COLUMNS, *rows]) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [_COLUMNS, *rows]
    ]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class FleetResult:
    """Every host's :class:`HostResult` for one ``run``, ``put`` or ``get``, in the order the
    hosts were given; ``str()`` is a terminal table and Jupyter shows an HTML one."""

    action: str
    hosts: tuple[HostResult, ...]
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every host succeeded."""
        return all(host.ok for host in self.hosts)

    @property
    def failed(self) -> list[HostResult]:
        """The results of the hosts that did not succeed."""
        return [host for host in self.hosts if not host.ok]

    @property
    def failed_hosts(self) -> list[str]:
        """The hosts that did not succeed, to retry with ``Fleet(result.failed_hosts, ...)``."""
        return [host.host for host in self.failed]

    def __getitem__(self, host: str) -> HostResult:
        for result in self.hosts:
            if result.host == host:
                return result
        raise KeyError(host)

    def __iter__(self) -> Iterator[HostResult]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def raise_on_failure(self) -> FleetResult:
        """Raise :class:`FleetError` naming the failed hosts; return ``self`` when all are ok."""
        if not self.ok:
            failed = self.failed
            shown = "; ".join(f"{host.host}: {host.status} {host.summary()}" for host in failed[:5])
            more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
            raise FleetError(
                f"{self.action} failed on {len(failed)} of {len(self.hosts)} host(s): "
                f"{shown}{more}",
                result=self,
            )
        return self

    def counts(self) -> dict[str, int]:
        """How many hosts ended in each status."""
        totals: dict[str, int] = {}
        for host in self.hosts:
            totals[host.status] = totals.get(host.status, 0) + 1
        return totals

    def table(self, *, width: int | None = 80) -> str:
        """A plain-text table, one row per host, and a totals line."""
        rows = [host._row(width) for host in self.hosts]
        totals = ", ".join(f"{count} {status}" for status, count in sorted(self.counts().items()))
        return (
            f"{_text_table(rows)}\n{self.action}: {len(self.hosts)} host(s), {totals} "
            f"in {format_seconds(self.duration_seconds)}"
        )

    def as_json(self) -> str:
        """The whole result as a JSON document."""
        return json.dumps(
            {
                "action": self.action,
                "ok": self.ok,
                "duration_seconds": round(self.duration_seconds, 6),
                "counts": self.counts(),
                "hosts": [host.as_dict() for host in self.hosts],
            },
            indent=2,
        )

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"<FleetResult {self.action}: {'ok' if self.ok else 'FAILED'}\n{self.table()}>"

    def _repr_html_(self) -> str:
        return html_table(
            self.action,
            [
                ("status", "ok" if self.ok else "failed"),
                ("hosts", len(self.hosts)),
                ("failed", ", ".join(self.failed_hosts)),
                ("time", format_seconds(self.duration_seconds)),
            ],
            columns=_COLUMNS,
            body=[host._row(None) for host in self.hosts],
        )


class FleetError(AutoOpsError):
    """A fleet operation failed on one or more hosts; ``result`` holds every host's outcome."""

    def __init__(self, message: str, *, result: FleetResult) -> None:
        super().__init__(message)
        self.result = result
