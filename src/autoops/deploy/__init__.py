"""Deploys over SSH: locked, atomic, health-checked releases with automatic rollback, and
configuration files pushed only when they changed. Start with :class:`Deployer`."""

from ._deployer import Deployer, Hook, new_release_id
from ._health import HealthCheck
from ._results import (
    ConfigPushError,
    ConfigPushResult,
    DeployError,
    DeployOutcome,
    DeployPlan,
    DeployResult,
    HostConfigResult,
    HostDeployPlan,
    HostDeployResult,
)

__all__ = [
    "ConfigPushError",
    "ConfigPushResult",
    "DeployError",
    "DeployOutcome",
    "DeployPlan",
    "DeployResult",
    "Deployer",
    "HealthCheck",
    "Hook",
    "HostConfigResult",
    "HostDeployPlan",
    "HostDeployResult",
    "new_release_id",
]
