"""One host's side of a deploy: its SSH session and the shell scripts that change its layout.

Every value put into a script is shell-quoted here; the only unquoted text is hook and check
commands, which the deploy's author wrote as shell on purpose.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import fabric
import paramiko

from .._errors import ConnectError
from .._retry import RetryPolicy
from .._ssh import (
    CommandResult,
    SshHost,
    SshOptions,
    connect,
    describe_error,
    sha256_command,
)
from ._shell import PersistentShell

__all__ = ["HostSession", "HostState", "LockOwner", "Scripts"]

LOCK_DIR: Final = ".autoops-deploy.lock"
HISTORY: Final = ".autoops-history"
# The last artifact unpacked, kept by its SHA-256 so a deploy of the same bytes need not send it.
KEPT_ARTIFACT: Final = ".autoops-artifact-"
# The unpack script's exit statuses that send the artifact again when the kept copy was used.
ARTIFACT_DIFFERS: Final = 65
KEPT_ARTIFACT_GONE: Final = 69
PARTIAL_SUFFIX: Final = ".partial"
_VARIABLE_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

q = shlex.quote


def _die(message: str, code: int) -> str:
    return f"{{ echo {q(message)} >&2; exit {code}; }}"


def valid_variable_name(name: str) -> bool:
    return bool(_VARIABLE_NAME.match(name))


@dataclass(frozen=True, slots=True)
class LockOwner:
    """Who holds a deploy lock, read from its owner file."""

    fields: Mapping[str, str]

    @classmethod
    def parse(cls, text: str) -> LockOwner:
        pairs = (part.split("=", 1) for part in text.split() if "=" in part)
        return cls(dict(pair for pair in pairs if len(pair) == 2))

    @property
    def token(self) -> str:
        return self.fields.get("token", "")

    def __str__(self) -> str:
        if not self.fields:
            return "an unknown owner (the lock has no owner file yet, or it was lost)"
        get = self.fields.get
        return (
            f"{get('user', '?')}@{get('host', '?')} (pid {get('pid', '?')}, "
            f"release {get('release', '?')}, since {get('since', '?')})"
        )


@dataclass(slots=True)
class HostState:
    """What a host's ``deploy_to`` holds right now."""

    exists: bool = False
    current: str | None = None
    releases: list[str] = field(default_factory=list)
    lock: LockOwner | None = None
    switched: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    prepared: set[str] = field(default_factory=set)
    artifacts: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, text: str) -> HostState:
        state = cls()
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key == "exists":
                state.exists = True
            elif key == "current" and value:
                state.current = value.rstrip("/").rsplit("/", 1)[-1]
            elif key == "release" and value and not value.endswith(PARTIAL_SUFFIX):
                state.releases.append(value)
            elif key == "lock":
                state.lock = LockOwner.parse(value)
            elif key == "artifact" and value:
                state.artifacts.add(value)
            elif key == "history":
                release, _, event = value.partition("\t")
                event = event.split("\t", 1)[0]
                # Events are in order: a release prepared or switched again after it failed
                # (a retry, or a rollback to it by name) is no longer failed.
                if event == "switched":
                    state.switched.append(release)
                    state.failed.discard(release)
                elif event == "failed":
                    state.failed.add(release)
                elif event == "prepared":
                    state.prepared.add(release)
                    state.failed.discard(release)
        state.releases.sort()
        return state

    def after_switch_to(self, release: str) -> HostState:
        """The state once ``release`` is unpacked and current."""
        return HostState(
            exists=True,
            current=release,
            releases=sorted({*self.releases, release}),
            switched=[*self.switched, release],
            failed=set(self.failed),
            prepared={*self.prepared, release},
        )

    def unfinished(self) -> list[str]:
        """Releases a killed deploy left behind before they were ready (never current)."""
        ready = self.prepared | set(self.switched)
        if not ready:
            return []
        return [r for r in self.releases if r not in ready and r != self.current]

    def rollback_target(self) -> str | None:
        """The release to go back to: the last one switched to before ``current`` that is still
        present and was never marked failed; else the newest older release by name."""
        candidates = [
            release
            for release in reversed(self.switched)
            if release != self.current and release not in self.failed and release in self.releases
        ]
        if candidates:
            return candidates[0]
        unfinished = set(self.unfinished())
        older = [
            release
            for release in self.releases
            if release not in self.failed
            and release not in unfinished
            and (self.current is None or release < self.current)
        ]
        return older[-1] if older else None


class Scripts:
    """The shell scripts run on a host with ``deploy_to`` at ``root``."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.lock = f"{root}/{LOCK_DIR}"

    def state(self) -> str:
        root = q(self.root)
        return (
            f"cd {root} 2>/dev/null || exit 0\n"
            "echo exists=1\n"
            'printf "current=%s\\n" "$(readlink current 2>/dev/null)"\n'
            "for release in releases/*/; do\n"
            '  [ -d "$release" ] && printf "release=%s\\n" "$(basename "$release")"\n'
            "done\n"
            f"if [ -d {LOCK_DIR} ]; then\n"
            f'  printf "lock=%s\\n" "$(tr "\\n" " " < {LOCK_DIR}/owner 2>/dev/null)"\n'
            "fi\n"
            f"for kept in {KEPT_ARTIFACT}*; do\n"
            f'  [ -f "$kept" ] && printf "artifact=%s\\n" "${{kept#{KEPT_ARTIFACT}}}"\n'
            "done\n"
            f'[ -f {HISTORY} ] && tail -n 500 {HISTORY} | sed "s/^/history=/"\n'
            "exit 0\n"
        )

    def acquire_lock(self, owner: Mapping[str, str], *, break_lock: bool) -> str:
        lock = q(self.lock)
        lines = "".join(f"{key}={value}\n" for key, value in owner.items())
        breaking = (
            f"if [ -d {lock} ]; then\n"
            f'  printf "broke=%s\\n" "$(tr "\\n" " " < {lock}/owner 2>/dev/null)"\n'
            f"  rm -rf {lock}\n"
            "fi\n"
            if break_lock
            else ""
        )
        return (
            f"mkdir -p {q(self.root)}/releases {q(self.root)}/shared || exit 3\n"
            f"{breaking}"
            f"if mkdir {lock} 2>/dev/null; then\n"
            f"  printf %s {q(lines)} > {lock}/owner.tmp && mv {lock}/owner.tmp {lock}/owner\n"
            "  echo acquired\n"
            f"  ( {self.clear_stale()} )\n"
            f"  ( {self.state()} )\n"
            "else\n"
            f'  printf "held=%s\\n" "$(tr "\\n" " " < {lock}/owner 2>/dev/null)"\n'
            "fi\n"
        )

    def release_lock(self, token: str, remove: Sequence[str] = ()) -> str:
        """Release the lock if it is ours, first removing the ``remove`` releases."""
        lock = q(self.lock)
        cleanup = f"  ( {self.remove_releases(remove)} )\n" if remove else ""
        return (
            f'if [ "$(sed -n "s/^token=//p" {lock}/owner 2>/dev/null)" = {q(token)} ]; then\n'
            f"{cleanup}"
            f"  rm -rf {lock} && echo released\n"
            "else\n"
            "  echo not-ours\n"
            "fi\n"
        )

    def upload_path(self, release: str) -> str:
        return f"{self.root}/.autoops-upload-{release}"

    def kept_artifact(self, digest: str) -> str:
        return f"{self.root}/{KEPT_ARTIFACT}{digest}"

    def clear_stale(self) -> str:
        # The lock is ours, so any partial release or upload left here is from a dead deploy.
        return (
            f"cd {q(self.root)} && rm -rf releases/*{PARTIAL_SUFFIX} .autoops-upload-* "
            "current.tmp-*"
        )

    def unpack(
        self,
        release: str,
        digest: str,
        shared_dirs: Sequence[str],
        shared_files: Sequence[str],
        *,
        mark_prepared: str | None,
        reuse: bool = False,
        keep: bool = False,
    ) -> str:
        """Verify, unpack into ``<id>.partial``, link shared paths, rename to ``<id>``; with
        ``mark_prepared`` (a time) also record the release as ready in the history. With
        ``reuse`` the artifact is the copy kept by an earlier deploy instead of an upload (gone:
        exit 69; its bytes differ: exit 65 and it is removed); with ``keep`` the artifact is
        kept afterwards (replacing any other kept one), else every kept one is removed."""
        root = q(self.root)
        partial = q(f"releases/{release}{PARTIAL_SUFFIX}")
        final = q(f"releases/{release}")
        upload = q(self.upload_path(release))
        kept = q(self.kept_artifact(digest))
        take_kept = (
            f"mv -f {kept} {upload} 2>/dev/null || "
            f"{_die('the artifact kept by an earlier deploy is gone', KEPT_ARTIFACT_GONE)}\n"
            if reuse
            else ""
        )
        dispose_artifact = (
            f"rm -f {KEPT_ARTIFACT}*\nmv -f {upload} {kept}\n"
            if keep
            else f"rm -f {upload} {KEPT_ARTIFACT}*\n"
        )
        links = []
        for path in shared_dirs:
            links.append(f"mkdir -p {q('shared/' + path)}")
            links.append(self._link(f"releases/{release}{PARTIAL_SUFFIX}", path))
        for path in shared_files:
            links.append(
                f"[ -e {q('shared/' + path)} ] || "
                + _die(f"shared file {self.root}/shared/{path} is missing; create it first", 67)
            )
            links.append(self._link(f"releases/{release}{PARTIAL_SUFFIX}", path))
        link_script = "\n".join(links)
        mismatch = (
            f"the {'kept' if reuse else 'uploaded'} artifact's sha256 differs from the local "
            f"{digest}"
        )
        # A failed step removes the half-made release and the upload (the trap), so nothing
        # named .partial outlives the deploy that made it.
        return (
            "set -e\n"
            f"cd {root}\n"
            f"[ ! -e {final} ] || {_die(f'release {release} already exists', 66)}\n"
            f"trap {q(f'rm -rf {partial} {upload}')} EXIT\n"
            f"{take_kept}"
            f'actual="$({sha256_command(upload)})"\n'
            'actual="${actual%% *}"\n'
            f'[ "$actual" = {q(digest)} ] || {_die(mismatch, ARTIFACT_DIFFERS)}\n'
            f"mkdir {partial}\n"
            # tar's own reason, without its closing "Exiting with failure status" line.
            f'if ! errors="$(tar -xf {upload} -C {partial} 2>&1 >/dev/null)"; then\n'
            '  printf "%s\\n" "$errors" | grep -v "Exiting with failure status" >&2 || true\n'
            "  exit 68\n"
            "fi\n"
            f"{dispose_artifact}"
            f"{link_script}\n"
            f"mv -T {partial} {final}\n"
            "trap - EXIT\n"
            + (f"{self.mark_prepared(release, mark_prepared)}\n" if mark_prepared else "")
        )

    def _link(self, release_dir: str, path: str) -> str:
        target = q(f"{release_dir}/{path}")
        return (
            f'rm -rf {target} && mkdir -p "$(dirname {target})" && '
            f"ln -s {q(f'{self.root}/shared/{path}')} {target}"
        )

    def switch(self, release: str, when: str, *, mark_failed: str | None = None) -> str:
        root = q(self.root)
        temporary = q(f"current.tmp-{release}")
        return (
            "set -e\n"
            f"cd {root}\n"
            f"[ -d {q('releases/' + release)} ] || {_die(f'release {release} is not here', 66)}\n"
            f"ln -sfn {q('releases/' + release)} {temporary}\n"
            f"mv -T {temporary} current\n"
            f"printf '%s\\tswitched\\t%s\\n' {q(release)} {q(when)} >> {HISTORY}\n"
            + (f"{self.mark_failed(mark_failed, when)}\n" if mark_failed else "")
            + "readlink current\n"
        )

    def unset_current(self, release: str, when: str) -> str:
        return (
            f"cd {q(self.root)} && rm -f current && "
            f"printf '%s\\tfailed\\t%s\\n' {q(release)} {q(when)} >> {HISTORY}\n"
        )

    def mark_prepared(self, release: str, when: str) -> str:
        line = f"printf '%s\\tprepared\\t%s\\n' {q(release)} {q(when)}"
        return f"cd {q(self.root)} && {line} >> {HISTORY}"

    def mark_failed(self, release: str, when: str) -> str:
        line = f"printf '%s\\tfailed\\t%s\\n' {q(release)} {q(when)}"
        return f"cd {q(self.root)} && {line} >> {HISTORY}"

    def remove_releases(self, releases: Sequence[str]) -> str:
        names = " ".join(q(name) for name in releases)
        return f"cd {q(self.root)}/releases && rm -rf -- {names}"

    def hook(self, directory: str, command: str, environment: Mapping[str, str]) -> str:
        exports = "".join(f"export {name}={q(value)}\n" for name, value in environment.items())
        return f"{exports}cd {q(directory)}\n{command}\n"


class HostSession:
    """An SSH session to one host, opened once and used for every step of one operation."""

    def __init__(
        self,
        address: str,
        options: SshOptions,
        root: str,
        variables: Mapping[str, str],
        retry: RetryPolicy | None = None,
    ) -> None:
        self.address = address
        self.host = SshHost.parse(address)
        self.options = options
        self.root = root
        self.variables = dict(variables)
        self.scripts = Scripts(root)
        self._retry = retry
        self._connection: fabric.Connection | None = None
        self._shell: PersistentShell | None = None

    @property
    def connection(self) -> fabric.Connection:
        if self._connection is None:
            self._connection = connect(self.host, self.options, retry=self._retry)
            self._prepare_sftp_timeout()
        return self._connection

    def _prepare_sftp_timeout(self) -> None:
        assert self._connection is not None
        try:
            sftp: paramiko.SFTPClient = self._connection.sftp()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectError(
                f"cannot open SFTP on {self.address}: {describe_error(exc)}"
            ) from exc
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(self.options.command_timeout)

    def sh(
        self,
        script: str,
        *,
        timeout: float | None = None,
        check: bool = True,
        what: str = "a deploy script",
    ) -> CommandResult:
        """Run ``script`` with POSIX ``sh`` whatever the login shell is, in this host's
        long-lived shell (started again if a timeout ended the last one); a failure is named by
        ``what``."""
        if self._shell is None or self._shell.broken:
            if self._shell is not None:
                self._shell.close()
            self._shell = PersistentShell(self.connection, self.address)
        return self._shell.run(
            script, timeout=timeout or self.options.command_timeout, check=check, what=what
        )

    def state(self) -> HostState:
        return HostState.parse(
            self.sh(self.scripts.state(), what="reading the deploy state").stdout
        )

    def close(self) -> None:
        if self._shell is not None:
            self._shell.close()
            self._shell = None
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None
