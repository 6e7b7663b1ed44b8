"""Deploy a 10 MB artifact to 4 loopback sshd hosts: autoops vs ansible-playbook vs autoops with
concurrency 1, and the time to roll the hosts back. With ``--hosts N`` (say 50) the hosts are N
local users behind 5 sshd processes (see _fleet_hosts.py), ansible runs with forks N, and the
peak RSS of the deploying process is printed.

Run: .venv/bin/python benchmarks/bench_deploy.py [--rounds 3] [--hosts 50]

ansible-core runs from its own virtualenv (default /tmp/autoops-bench-ansible, made with pip on
first use); it gets the same hosts, key and known_hosts, pipelining on and the same steps: copy,
unarchive into a new release, symlink ``current``, health check (a command on the host). Each
figure is the median of the rounds; peers run interleaved, so machine noise mostly cancels.

Each round ships a new build (the same layout, new bytes), as a real deploy does: ansible's
``copy`` skips a file whose checksum the host already has, so re-sending identical bytes would
measure ansible without its transfer and autoops with it. ``--same-artifact`` ships the first
round's bytes every round instead (the re-deploy case, where both sides may skip the transfer).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _fleet_hosts import ensure_user, start_hosts  # noqa: E402
from _support.sshd import SshServer, keygen, make_server  # noqa: E402
from autoops import Deployer, HealthCheck  # noqa: E402

ANSIBLE_VENV = Path(os.environ.get("AUTOOPS_BENCH_ANSIBLE", "/tmp/autoops-bench-ansible"))
HOSTS = 4
DAEMONS_FOR_USERS = 5
ARTIFACT_BYTES = 10 * 1024 * 1024
TARGET_RATIO = 0.33

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: release directory
      ansible.builtin.file:
        path: "{{ deploy_to }}/releases/{{ release }}"
        state: directory
    - name: copy the artifact
      ansible.builtin.copy:
        src: "{{ artifact }}"
        dest: "{{ deploy_to }}/app.tar"
    - name: unarchive into the release
      ansible.builtin.unarchive:
        src: "{{ deploy_to }}/app.tar"
        dest: "{{ deploy_to }}/releases/{{ release }}"
        remote_src: true
    - name: switch current
      ansible.builtin.file:
        src: "{{ deploy_to }}/releases/{{ release }}"
        dest: "{{ deploy_to }}/current"
        state: link
        force: true
    - name: health check
      ansible.builtin.command: test -f {{ deploy_to }}/current/index.html
      changed_when: false
"""


def ensure_ansible() -> Path:
    playbook = ANSIBLE_VENV / "bin" / "ansible-playbook"
    if not playbook.exists():
        print(f"installing ansible-core into {ANSIBLE_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run(
            [str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", "ansible-core"], check=True
        )
    return playbook


def make_artifact(directory: Path) -> Path:
    """A 10 MB tarball of incompressible bytes, new ones on every call."""
    app = directory / "app"
    shutil.rmtree(app, ignore_errors=True)
    (app / "static").mkdir(parents=True)
    (app / "index.html").write_text("<h1>benchmark</h1>\n")
    for index in range(10):
        (app / "static" / f"blob{index}.bin").write_bytes(os.urandom(ARTIFACT_BYTES // 10))
    tarball = directory / "app.tar"
    with tarfile.open(tarball, "w") as archive:
        for child in sorted(app.iterdir()):
            archive.add(child, arcname=child.name)
    return tarball


def ensure_login_user(name: str, workdir: Path) -> None:
    """A local user whose login shell is plain /bin/sh (no .bashrc to source on every command),
    unlocked for key logins; its deploy directories are made writable for it."""
    ensure_user(name)
    for child in ("autoops", "autoops-serial", "ansible"):
        (workdir / child).mkdir(exist_ok=True)
        shutil.chown(workdir / child, user=name)


def write_inventory(directory: Path, addresses: list[str], known_hosts: Path, key: Path) -> Path:
    lines = ["[all]"]
    for index, address in enumerate(addresses):
        user, _, rest = address.partition("@")
        host, _, port = rest.rpartition(":")
        lines.append(
            f"h{index} ansible_host={host} ansible_port={port} ansible_user={user} "
            f"deploy_to={directory}/ansible/h{index}"
        )
    lines += [
        "[all:vars]",
        f"ansible_ssh_private_key_file={key}",
        f"ansible_ssh_common_args='-o UserKnownHostsFile={known_hosts} "
        "-o StrictHostKeyChecking=yes'",
        "ansible_python_interpreter=/usr/bin/python3",
        "ansible_remote_tmp=/tmp/ansible-{{ ansible_user }}",
    ]
    inventory = directory / "inventory.ini"
    inventory.write_text("\n".join(lines) + "\n")
    return inventory


def run_ansible(
    playbook: Path,
    inventory: Path,
    book: Path,
    artifact: Path,
    release: str,
    workdir: Path,
    forks: int,
) -> float:
    environment = {
        **os.environ,
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_FORKS": str(forks),
        "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-local"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(workdir / "ansible-cp"),
        "ANSIBLE_NOCOLOR": "1",
    }
    started = time.perf_counter()
    completed = subprocess.run(
        [
            str(playbook),
            "-i",
            str(inventory),
            str(book),
            "-e",
            f"release={release} artifact={artifact}",
        ],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"ansible-playbook failed:\n{completed.stdout[-3000:]}")
    return elapsed


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def prepare_user_dirs(workdir: Path, users: list[str]) -> None:
    """Each user may write only its own deploy directories."""
    for name in ("autoops", "autoops-serial", "ansible"):
        (workdir / name).mkdir(exist_ok=True)
    for index, user in enumerate(users):
        for name, leaf in (("autoops", user), ("autoops-serial", user), ("ansible", f"h{index}")):
            (workdir / name / leaf).mkdir(exist_ok=True)
            shutil.chown(workdir / name / leaf, user=user)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    # A rollback needs a previous release: two rounds at least.
    parser.add_argument("--rounds", type=lambda text: max(2, int(text)), default=3)
    parser.add_argument(
        "--hosts",
        type=int,
        default=HOSTS,
        help=f"hosts to deploy to (default {HOSTS}); above {HOSTS} they are local users",
    )
    parser.add_argument(
        "--login-user",
        metavar="NAME",
        help="deploy as this local user, created with /bin/sh as its login shell, to measure "
        "without the current user's shell start-up files (default: the current user)",
    )
    parser.add_argument(
        "--same-artifact",
        action="store_true",
        help="ship the same bytes every round (default: a new build each round)",
    )
    args = parser.parse_args()
    playbook = ensure_ansible()
    count = args.hosts
    with tempfile.TemporaryDirectory(prefix="autoops-bench-deploy-") as temporary:
        workdir = Path(temporary)
        os.chmod(workdir, 0o755)  # noqa: S103 - sshd sessions read the artifact and key
        servers: list[SshServer]
        if count > HOSTS:
            fleet_hosts = start_hosts(workdir / "hosts", count, DAEMONS_FOR_USERS)
            servers = fleet_hosts.servers
            addresses = fleet_hosts.addresses(count)
            key, known_hosts = fleet_hosts.key, fleet_hosts.known_hosts
            prepare_user_dirs(workdir, fleet_hosts.users)
            root_template = "{user}"
            who = f"{count} local users (/bin/sh) behind {DAEMONS_FOR_USERS} sshd"
        else:
            keygen(workdir / "client_key")
            key = workdir / "client_key"
            servers = [make_server(workdir / f"sshd{i}", key) for i in range(count)]
            for server in servers:
                server.start()
            known_hosts = workdir / "known_hosts"
            known_hosts.write_text("".join(s.host_key_line + "\n" for s in servers))
            user = args.login_user or servers[0].user
            if args.login_user:
                ensure_login_user(args.login_user, workdir)
            addresses = [f"{user}@127.0.0.1:{server.port}" for server in servers]
            root_template = "{ssh_port}"
            shell = "/bin/sh" if args.login_user else os.environ.get("SHELL", "the login shell")
            who = f"{user} ({shell})"
        try:
            artifact = make_artifact(workdir)
            inventory = write_inventory(workdir, addresses, known_hosts, key)
            book = workdir / "deploy.yml"
            book.write_text(PLAYBOOK)

            def deployer(concurrency: int | None, name: str) -> Deployer:
                # None: the Deployer's default concurrency, the figure users get.
                options: dict[str, Any] = (
                    {} if concurrency is None else {"concurrency": concurrency}
                )
                return Deployer(
                    addresses,
                    f"{workdir}/{name}/{root_template}",
                    key_filename=str(key),
                    known_hosts=str(known_hosts),
                    batch_size=count,
                    health_check=HealthCheck.command("test -f index.html", timeout=10),
                    progress=False,
                    **options,
                )

            parallel = deployer(None, "autoops")
            serial = deployer(1, "autoops-serial")
            times: dict[str, list[float]] = {"autoops": [], "ansible": [], "serial": []}
            print(f"load average at start: {load()}", flush=True)
            for round_number in range(args.rounds):
                release = f"r{round_number}"
                if round_number and not args.same_artifact:
                    artifact = make_artifact(workdir)
                times["autoops"].append(
                    timed(partial(parallel.deploy, artifact, release_id=release))
                )
                times["ansible"].append(
                    run_ansible(playbook, inventory, book, artifact, release, workdir, count)
                )
                times["serial"].append(timed(partial(serial.deploy, artifact, release_id=release)))
                print(
                    f"  round {round_number}: autoops {times['autoops'][-1]:.3f} s, ansible "
                    f"{times['ansible'][-1]:.3f} s, concurrency 1 {times['serial'][-1]:.3f} s "
                    f"(load {load()})",
                    flush=True,
                )
            rollback = timed(parallel.rollback)
        finally:
            for server in servers:
                server.stop()

    autoops = statistics.median(times["autoops"])
    ansible = statistics.median(times["ansible"])
    serial_time = statistics.median(times["serial"])
    ratio = autoops / ansible
    target = TARGET_RATIO if count <= HOSTS else 0.1
    print(
        f"deploy of a {ARTIFACT_BYTES // (1024 * 1024)} MB artifact to {count} loopback hosts as "
        f"{who}, lock, checksum, atomic switch and a health check, median of {args.rounds} rounds, "
        + ("the same artifact every round" if args.same_artifact else "a new artifact each round")
    )
    print(f"  autoops (concurrency {parallel.concurrency:<3})    {autoops:7.3f} s")
    print(f"  ansible-playbook (forks {count:<3})  {ansible:7.3f} s")
    print(f"  autoops (concurrency 1)      {serial_time:7.3f} s")
    print(
        f"  autoops / ansible            {ratio:7.3f}x  "
        f"(target <= {target}x: {'met' if ratio <= target else 'NOT met'})"
    )
    print(f"  autoops concurrency 1 / {parallel.concurrency:<3}  {serial_time / autoops:7.2f}x")
    print(f"  rollback of {count} hosts         {rollback:7.3f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS of the deploying process {peak:.0f} MiB; load {load()}")


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
