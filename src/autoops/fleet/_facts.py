"""What a host is and how it is doing, gathered by one shell script in one round trip.

Everything is read from files and commands every Linux host has (``/etc/os-release``,
``/proc``, ``df -P``, ``uname``, ``getconf``); nothing needs installing on the host. Listening
TCP ports come from ``/proc/net/tcp{,6}``, so ``ss`` or ``netstat`` need not be there either.
"""

from __future__ import annotations

import ipaddress
import shlex
import socket
import struct
from dataclasses import dataclass
from typing import Final

__all__ = ["DiskUsage", "HostFacts", "ListeningPort", "facts_script", "parse_facts"]

_MARK: Final = "@@autoops-facts@@"
_SECTIONS: Final = ("os", "hostname", "kernel", "cpus", "memory", "disks", "uptime", "load", "tcp")
_SKIPPED_FILESYSTEMS: Final = ("tmpfs", "devtmpfs", "squashfs")
_TCP_LISTEN: Final = "0A"


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """One mounted filesystem, as ``df -P`` sees it."""

    mount: str
    filesystem: str
    total_bytes: int
    used_bytes: int
    available_bytes: int

    @property
    def use_percent(self) -> float:
        """Used as a share of what users may use (df's "Capacity": used / (used + available))."""
        usable = self.used_bytes + self.available_bytes
        return 100.0 * self.used_bytes / usable if usable else 0.0


@dataclass(frozen=True, slots=True)
class ListeningPort:
    """A TCP socket in the LISTEN state: its local address (``0.0.0.0`` / ``::`` for all)."""

    address: str
    port: int


@dataclass(frozen=True, slots=True)
class HostFacts:
    """A host's OS and version, kernel, CPUs, memory, disks, uptime, load and listening TCP
    ports. ``memory_available_percent`` and ``load_per_core`` (5-minute load over CPUs) are the
    figures the monitor's :class:`~autoops.HostCheck` judges."""

    host: str
    hostname: str
    os_id: str
    os_name: str
    os_version: str
    kernel: str
    cpu_count: int
    memory_total_bytes: int
    memory_available_bytes: int
    disks: tuple[DiskUsage, ...]
    uptime_seconds: float
    load_average: tuple[float, float, float]
    listening: tuple[ListeningPort, ...]

    @property
    def memory_available_percent(self) -> float:
        """``MemAvailable`` as a percentage of ``MemTotal``."""
        if not self.memory_total_bytes:
            return 0.0
        return 100.0 * self.memory_available_bytes / self.memory_total_bytes

    @property
    def load_per_core(self) -> float:
        """The 5-minute load average divided by the CPU count."""
        return self.load_average[1] / max(1, self.cpu_count)

    @property
    def listening_ports(self) -> tuple[int, ...]:
        """The distinct listening TCP port numbers, sorted."""
        return tuple(sorted({entry.port for entry in self.listening}))

    def disk(self, mount: str) -> DiskUsage:
        """The filesystem mounted at ``mount``."""
        for disk in self.disks:
            if disk.mount == mount:
                return disk
        raise KeyError(mount)


class FactsParseError(ValueError):
    """The facts script's output is not what it prints on a Linux host."""


def facts_script() -> str:
    """The script run on each host; its sections are split on a marker line."""
    excluded = " ".join(f"-x {kind}" for kind in _SKIPPED_FILESYSTEMS)
    parts = {
        "os": "cat /etc/os-release 2>/dev/null",
        "hostname": "uname -n",
        "kernel": "uname -r",
        "cpus": "getconf _NPROCESSORS_ONLN 2>/dev/null || nproc",
        "memory": "grep -E '^(MemTotal|MemAvailable):' /proc/meminfo",
        "disks": f"LC_ALL=C df -P -k {excluded} 2>/dev/null",
        "uptime": "cat /proc/uptime",
        "load": "cat /proc/loadavg",
        "tcp": "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null",
    }
    return "\n".join(f"echo {shlex.quote(_MARK + name)}; {parts[name]}" for name in _SECTIONS)


def _split(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(_MARK):
            current = sections.setdefault(line[len(_MARK) :], [])
        elif current is not None:
            current.append(line)
    missing = [name for name in _SECTIONS if name not in sections]
    if missing:
        raise FactsParseError(f"the facts script printed no {', '.join(missing)} section")
    return sections


def _os_release(lines: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name.strip():
            try:
                parsed = shlex.split(value)
            except ValueError:
                parsed = [value]
            values[name.strip()] = parsed[0] if parsed else ""
    return values


def _disks(lines: list[str]) -> tuple[DiskUsage, ...]:
    disks = []
    for line in lines[1:]:
        fields = line.split()
        if len(fields) < 6 or not fields[1].isdigit():
            continue
        disks.append(
            DiskUsage(
                mount=" ".join(fields[5:]),
                filesystem=fields[0],
                total_bytes=int(fields[1]) * 1024,
                used_bytes=int(fields[2]) * 1024,
                available_bytes=int(fields[3]) * 1024,
            )
        )
    return tuple(disks)


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(hex_address, 16)))
    # /proc prints an IPv6 address as four 32-bit words, each in host (little-endian) order.
    words = struct.unpack("<4I", raw)
    return str(ipaddress.IPv6Address(struct.pack(">4I", *words)))


def _listening(lines: list[str]) -> tuple[ListeningPort, ...]:
    found: set[ListeningPort] = set()
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[3] != _TCP_LISTEN or ":" not in fields[1]:
            continue
        address, _, port = fields[1].partition(":")
        try:
            found.add(ListeningPort(_address(address), int(port, 16)))
        except ValueError:
            continue
    return tuple(sorted(found, key=lambda entry: (entry.port, entry.address)))


def parse_facts(host: str, text: str) -> HostFacts:
    """Read the facts script's output; a section that is missing or malformed raises
    :class:`FactsParseError` naming it."""
    sections = _split(text)
    release = _os_release(sections["os"])
    try:
        memory = {
            line.split(":")[0]: int(line.split()[1]) * 1024 for line in sections["memory"] if line
        }
        load = [float(value) for value in " ".join(sections["load"]).split()[:3]]
        return HostFacts(
            host=host,
            hostname=" ".join(sections["hostname"]).strip(),
            os_id=release.get("ID", "linux"),
            os_name=release.get("PRETTY_NAME") or release.get("NAME", "Linux"),
            os_version=release.get("VERSION_ID", ""),
            kernel=" ".join(sections["kernel"]).strip(),
            cpu_count=int(" ".join(sections["cpus"]).split()[0]),
            memory_total_bytes=memory.get("MemTotal", 0),
            memory_available_bytes=memory.get("MemAvailable", 0),
            disks=_disks(sections["disks"]),
            uptime_seconds=float(" ".join(sections["uptime"]).split()[0]),
            load_average=(load[0], load[1], load[2]),
            listening=_listening(sections["tcp"]),
        )
    except (IndexError, ValueError) as exc:
        raise FactsParseError(f"unexpected facts output ({type(exc).__name__}: {exc})") from None
