"""Fleet management: run commands, copy files and gather facts on many hosts in parallel."""

from __future__ import annotations

from ._facts import DiskUsage, HostFacts, ListeningPort
from ._fleet import Fleet
from ._results import FleetError, FleetResult, HostResult, HostStatus

__all__ = [
    "DiskUsage",
    "Fleet",
    "FleetError",
    "FleetResult",
    "HostFacts",
    "HostResult",
    "HostStatus",
    "ListeningPort",
]
