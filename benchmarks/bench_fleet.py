"""``fleet.run("uptime")`` on 1, 4, 16 and 50 loopback hosts: autoops vs a plain Fabric
``ThreadingGroup`` vs ``ansible -m command -f 50``, counted from creating the fleet (what a cron
job pays: connects, logins, the command), with each tool's growth from 1 to 50 hosts.

Run: .venv/bin/python benchmarks/bench_fleet.py [--rounds 3] [--sizes 1,4,16,50]

Hosts are local users behind 5 sshd processes (see _fleet_hosts.py), so every tool shares this
machine's 2 cores with the daemons and the logins; judge the ratios, not the absolute figures.
ansible-core runs from its own virtualenv (default /tmp/autoops-bench-ansible, made on first
use) with pipelining on and host keys checked. Peers run interleaved; figures are medians.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _fleet_hosts import FleetHosts, start_hosts  # noqa: E402

ANSIBLE_VENV = Path(os.environ.get("AUTOOPS_BENCH_ANSIBLE", "/tmp/autoops-bench-ansible"))


def ensure_ansible() -> Path:
    command = ANSIBLE_VENV / "bin" / "ansible"
    if not command.exists():
        print(f"installing ansible-core into {ANSIBLE_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run(
            [str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", "ansible-core"], check=True
        )
    return command


def run_autoops(hosts: FleetHosts, addresses: list[str]) -> None:
    from autoops import Fleet

    with Fleet(
        addresses,
        key_filename=str(hosts.key),
        known_hosts=str(hosts.known_hosts),
        progress=False,
    ) as fleet:
        fleet.run("uptime").raise_on_failure()


def run_fabric(hosts: FleetHosts, addresses: list[str]) -> None:
    from fabric import ThreadingGroup

    group = ThreadingGroup(
        *addresses, connect_kwargs={"key_filename": str(hosts.key), "look_for_keys": False}
    )
    try:
        results = group.run("uptime", hide=True)
        if len(results) != len(addresses) or not all(r.ok for r in results.values()):
            raise SystemExit("fabric: not every host succeeded")
    finally:
        group.close()


def write_inventory(workdir: Path, addresses: list[str], hosts: FleetHosts) -> Path:
    lines = ["[all]"]
    for index, address in enumerate(addresses):
        user, _, rest = address.partition("@")
        host, _, port = rest.rpartition(":")
        lines.append(f"h{index} ansible_host={host} ansible_port={port} ansible_user={user}")
    lines += [
        "[all:vars]",
        f"ansible_ssh_private_key_file={hosts.key}",
        f"ansible_ssh_common_args='-o UserKnownHostsFile={hosts.known_hosts} "
        "-o StrictHostKeyChecking=yes'",
        "ansible_python_interpreter=/usr/bin/python3",
        "ansible_remote_tmp=/tmp/ansible-$USER",
    ]
    path = workdir / f"inventory-{len(addresses)}.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_ansible(ansible: Path, inventory: Path, workdir: Path) -> None:
    environment = {
        **os.environ,
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-local"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(workdir / "ansible-cp"),
        "ANSIBLE_NOCOLOR": "1",
    }
    completed = subprocess.run(
        [str(ansible), "all", "-i", str(inventory), "-m", "command", "-a", "uptime", "-f", "50"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"ansible failed:\n{completed.stdout[-3000:]}{completed.stderr[-2000:]}")


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="1,4,16,50")
    parser.add_argument("--no-ansible", action="store_true", help="skip the ansible peer")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    ansible = None if args.no_ansible else ensure_ansible()
    # Import both libraries first, so neither pays the other's (shared) import of paramiko.
    import fabric  # noqa: F401

    import autoops.fleet  # noqa: F401

    figures: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory(prefix="autoops-bench-fleet-") as temporary:
        workdir = Path(temporary)
        hosts = start_hosts(workdir, max(sizes))
        try:
            print(f"load average at start: {load()}", flush=True)
            for size in sizes:
                addresses = hosts.addresses(size)
                inventory = write_inventory(workdir, addresses, hosts)
                times: dict[str, list[float]] = {"autoops": [], "fabric": [], "ansible": []}
                for _ in range(args.rounds):
                    times["autoops"].append(timed(partial(run_autoops, hosts, addresses)))
                    times["fabric"].append(timed(partial(run_fabric, hosts, addresses)))
                    if ansible is not None:
                        times["ansible"].append(
                            timed(partial(run_ansible, ansible, inventory, workdir))
                        )
                for tool, values in times.items():
                    if values:
                        figures[(tool, size)] = statistics.median(values)
                line = "  ".join(
                    f"{tool} {figures[(tool, size)]:6.3f} s"
                    for tool in times
                    if (tool, size) in figures
                )
                print(f"{size:3d} hosts: {line}   (load {load()})", flush=True)
        finally:
            hosts.stop()

    print(f"\nfleet.run('uptime'), median of {args.rounds} rounds, from creating the fleet")
    tools = [tool for tool in ("autoops", "fabric", "ansible") if (tool, sizes[0]) in figures]
    print(
        "hosts  " + "".join(f"{tool:>12}" for tool in tools) + "  autoops/fabric  autoops/ansible"
    )
    for size in sizes:
        row = "".join(f"{figures[(tool, size)]:11.3f}s" for tool in tools)
        fabric_ratio = figures[("autoops", size)] / figures[("fabric", size)]
        ansible_ratio = (
            f"{figures[('autoops', size)] / figures[('ansible', size)]:15.3f}x"
            if ("ansible", size) in figures
            else ""
        )
        print(f"{size:5d}  {row}  {fabric_ratio:13.3f}x{ansible_ratio}")
    first, last = sizes[0], sizes[-1]
    growth = "  ".join(
        f"{tool} {figures[(tool, last)] / figures[(tool, first)]:.1f}x" for tool in tools
    )
    print(f"growth from {first} to {last} hosts: {growth}")
    if ("ansible", last) in figures:
        ratio = figures[("autoops", last)] / figures[("ansible", last)]
        versus_fabric = figures[("autoops", last)] <= figures[("fabric", last)]
        print(
            f"targets at {last} hosts: <= 0.2x ansible {'met' if ratio <= 0.2 else 'NOT met'}; "
            f"no slower than fabric {'met' if versus_fabric else 'NOT met'}"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (autoops and fabric runs): {peak:.0f} MiB; load {load()}")


if __name__ == "__main__":
    main()
