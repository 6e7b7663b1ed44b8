"""Run a few health checks from Python and print them as a Nagios plugin would.

Run: .venv/bin/python examples/monitor_checks.py
"""

from __future__ import annotations

import autoops

checks: list[autoops.Check] = [
    autoops.MySQLCheck(
        "db", "mysql://root@127.0.0.1:3306/", thresholds={"connections": ("70", "85")}
    ),
    autoops.RedisCheck("cache", "redis://127.0.0.1:6379/0"),
    autoops.TcpCheck("ssh-port", "127.0.0.1", 22, timeout=2),
]
results = autoops.run_checks(checks, deadline=20)
print(autoops.results_as_nagios(results))
print("worst:", autoops.CheckStatus.worst(result.status for result in results).name)
