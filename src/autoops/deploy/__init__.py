"""Deploys over SSH: locked, atomic, health-checked releases with automatic rollback, and
configuration files pushed only when they changed. Start with :class:`Deployer`."""

from ._deployer import Deployer, Hook, new_release_id
from ._health import HealthCheck
from ._results import (
    ConfigPushError,
    ConfigPushResult,
    DeployError,
    DeployResult,
    HostConfigResult,
    HostPlan,
    HostResult,
    Outcome,
    Plan,
)

__all__ = [
    "ConfigPushError",
    "ConfigPushResult",
    "DeployError",
    "DeployResult",
    "Deployer",
    "HealthCheck",
    "Hook",
    "HostConfigResult",
    "HostPlan",
    "HostResult",
    "Outcome",
    "Plan",
    "new_release_id",
]
