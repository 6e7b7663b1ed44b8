"""Deploy a 10 MB artifact to 4 loopback sshd hosts: autoops vs ansible-playbook vs autoops with
concurrency 1, and the time to roll 4 hosts back.

Run: .venv/bin/python benchmarks/bench_deploy.py [--rounds 3]

ansible-core runs from its own virtualenv (default /tmp/autoops-bench-ansible, made with pip on
first use); it gets the same hosts, key and known_hosts, pipelining on and the same steps: copy,
unarchive into a new release, symlink ``current``, health check (a command on the host). Each
figure is the median of the rounds; peers run interleaved, so machine noise mostly cancels.
"""

from __future__ import annotations

import argparse
import os
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _support.sshd import SshServer, keygen, make_server  # noqa: E402
from autoops import Deployer, HealthCheck  # noqa: E402

ANSIBLE_VENV = Path(os.environ.get("AUTOOPS_BENCH_ANSIBLE", "/tmp/autoops-bench-ansible"))
HOSTS = 4
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
    app = directory / "app"
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
    if subprocess.run(["id", name], capture_output=True, check=False).returncode != 0:
        subprocess.run(
            [
                "useradd",
                "--shell",
                "/bin/sh",
                "--home-dir",
                f"/tmp/{name}-home",
                "--create-home",
                name,
            ],
            check=True,
        )
    subprocess.run(["usermod", "-p", "*", name], check=True)
    for child in ("autoops", "autoops-serial", "ansible"):
        (workdir / child).mkdir(exist_ok=True)
        shutil.chown(workdir / child, user=name)


def write_inventory(
    directory: Path, servers: list[SshServer], known_hosts: Path, user: str
) -> Path:
    key = servers[0].client_key
    lines = ["[all]"]
    for index, server in enumerate(servers):
        lines.append(
            f"h{index} ansible_host=127.0.0.1 ansible_port={server.port} ansible_user={user} "
            f"deploy_to={directory}/ansible/h{index}"
        )
    lines += [
        "[all:vars]",
        f"ansible_ssh_private_key_file={key}",
        f"ansible_ssh_common_args='-o UserKnownHostsFile={known_hosts} "
        "-o StrictHostKeyChecking=yes'",
        "ansible_python_interpreter=/usr/bin/python3",
        f"ansible_remote_tmp=/tmp/ansible-{user}",
    ]
    inventory = directory / "inventory.ini"
    inventory.write_text("\n".join(lines) + "\n")
    return inventory


def run_ansible(
    playbook: Path, inventory: Path, book: Path, artifact: Path, release: str, workdir: Path
) -> float:
    environment = {
        **os.environ,
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_FORKS": str(HOSTS),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--login-user",
        metavar="NAME",
        help="deploy as this local user, created with /bin/sh as its login shell, to measure "
        "without the current user's shell start-up files (default: the current user)",
    )
    args = parser.parse_args()
    playbook = ensure_ansible()
    with tempfile.TemporaryDirectory(prefix="autoops-bench-deploy-") as temporary:
        workdir = Path(temporary)
        os.chmod(workdir, 0o755)  # noqa: S103 - sshd sessions read the artifact and key
        keygen(workdir / "client_key")
        servers = [make_server(workdir / f"sshd{i}", workdir / "client_key") for i in range(HOSTS)]
        for server in servers:
            server.start()
        try:
            known_hosts = workdir / "known_hosts"
            known_hosts.write_text("".join(s.host_key_line + "\n" for s in servers))
            artifact = make_artifact(workdir)
            user = args.login_user or servers[0].user
            if args.login_user:
                ensure_login_user(args.login_user, workdir)
            inventory = write_inventory(workdir, servers, known_hosts, user)
            book = workdir / "deploy.yml"
            book.write_text(PLAYBOOK)

            def deployer(concurrency: int, name: str) -> Deployer:
                return Deployer(
                    [f"{user}@127.0.0.1:{server.port}" for server in servers],
                    f"{workdir}/{name}/{{ssh_port}}",
                    key_filename=str(servers[0].client_key),
                    known_hosts=str(known_hosts),
                    concurrency=concurrency,
                    batch_size=HOSTS,
                    health_check=HealthCheck.command("test -f index.html", timeout=10),
                    progress=False,
                )

            parallel = deployer(10, "autoops")
            serial = deployer(1, "autoops-serial")
            times: dict[str, list[float]] = {"autoops": [], "ansible": [], "serial": []}
            for round_number in range(args.rounds):
                release = f"r{round_number}"
                times["autoops"].append(
                    timed(partial(parallel.deploy, artifact, release_id=release))
                )
                times["ansible"].append(
                    run_ansible(playbook, inventory, book, artifact, release, workdir)
                )
                times["serial"].append(timed(partial(serial.deploy, artifact, release_id=release)))
            rollback = timed(parallel.rollback)
        finally:
            for server in servers:
                server.stop()

    autoops = statistics.median(times["autoops"])
    ansible = statistics.median(times["ansible"])
    serial_time = statistics.median(times["serial"])
    ratio = autoops / ansible
    shell = "/bin/sh" if args.login_user else os.environ.get("SHELL", "the login shell")
    print(
        f"deploy of a {ARTIFACT_BYTES // (1024 * 1024)} MB artifact to {HOSTS} loopback hosts as "
        f"{args.login_user or servers[0].user} ({shell}), median of {args.rounds} rounds"
    )
    print(f"  autoops (concurrency 10)     {autoops:7.3f} s")
    print(f"  ansible-playbook (forks {HOSTS})   {ansible:7.3f} s")
    print(f"  autoops (concurrency 1)      {serial_time:7.3f} s")
    print(
        f"  autoops / ansible            {ratio:7.3f}x  "
        f"(target <= {TARGET_RATIO}x: {'met' if ratio <= TARGET_RATIO else 'NOT met'})"
    )
    print(f"  autoops concurrency 1 / 10   {serial_time / autoops:7.2f}x")
    print(f"  rollback of {HOSTS} hosts          {rollback:7.3f} s")


if __name__ == "__main__":
    main()
