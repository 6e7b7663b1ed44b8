"""Deployer: locked, atomic, health-checked releases to many hosts, rolled back on failure.

The order of a deploy, and why:

1. connect to every host and take the lock on every host, or on none (a partial lock would let
   two deploys each own half the fleet);
2. prepare every host in parallel: upload, verify the checksum on the host, unpack into
   ``releases/<id>.partial`` and rename it, so a release under its final name is always whole;
3. switch in batches (temporary symlink renamed over ``current``, read back), health-check each
   batch, and roll every switched host back once failures exceed ``max_failures``;
4. remove old releases, never ``current`` nor the rollback target; release the locks, always.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import posixpath
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar, get_args

from .._errors import AutoOpsError, ConfigError, ConnectError, LockHeldError
from .._progress import Progress
from .._retry import RetryPolicy
from .._ssh import CommandResult, RemoteCommandError, SshHost, SshOptions
from .._time import utc_now
from ._artifact import Artifact, directory_size
from ._configpush import load_template, push_to_host, render_template
from ._health import HealthCheck, expand
from ._remote import (
    ARTIFACT_DIFFERS,
    KEPT_ARTIFACT_GONE,
    PARTIAL_SUFFIX,
    HostSession,
    HostState,
    LockOwner,
    valid_variable_name,
)
from ._results import (
    ConfigPushError,
    ConfigPushResult,
    DeployError,
    DeployOutcome,
    DeployPhase,
    DeployPlan,
    DeployResult,
    HookPhase,
    HostConfigResult,
    HostDeployPlan,
    HostDeployResult,
)
from ._run import DeployRun
from ._transfer import send_file

__all__ = ["Deployer", "Hook", "new_release_id"]

log: Final = logging.getLogger("autoops.deploy")
T = TypeVar("T")
_RELEASE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
HOOK_PHASES: Final = get_args(HookPhase)


def new_release_id() -> str:
    """A release id that sorts by time: ``20260101T120000Z-3f9a1c`` (UTC, plus 6 random hex)."""
    return f"{utc_now():%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _utc_now() -> str:
    return utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Hook:
    """A shell command (yours, run as written) at a phase of every host's deploy:
    ``after_unpack`` (in the new release, before any switch: install dependencies),
    ``before_switch`` (in the new release; ``once=True`` runs it on the first host only:
    migrations) or ``after_switch`` (in ``current``, after every switch including rollbacks:
    restart the service). Host variables and ``RELEASE_ID``, ``RELEASE_PATH``, ``DEPLOY_TO`` are
    in its environment."""

    command: str
    phase: HookPhase = "after_switch"
    once: bool = False

    def __post_init__(self) -> None:
        if self.phase not in HOOK_PHASES:
            raise ConfigError(f"unknown hook phase {self.phase!r}; use one of {HOOK_PHASES}")
        if self.once and self.phase != "before_switch":
            raise ConfigError("only before_switch hooks can run once (on the first host)")
        if not self.command.strip():
            raise ConfigError(f"the {self.phase} hook has an empty command")


def _check_root(root: str, where: str) -> str:
    """``root`` if it is a normalized absolute path other than ``/``: a deploy removes and
    replaces whole directories under it, so ``/srv/../etc`` or ``/`` must never reach a host."""
    if not root.startswith("/"):
        raise ConfigError(f"deploy_to {root!r}{where} must be an absolute path")
    trimmed = root.rstrip("/")
    if not trimmed:
        raise ConfigError(f"deploy_to {root!r}{where} is the root directory; use e.g. /srv/app")
    if posixpath.normpath(trimmed) != trimmed:
        raise ConfigError(
            f"deploy_to {root!r}{where} is not a normalized path (no '..', '.' or '//'); "
            f"write it as {posixpath.normpath(trimmed)!r} if that is what you mean"
        )
    return trimmed


def _check_relative(path: str, what: str) -> str:
    clean = path.strip().strip("/")
    if not clean or path.startswith("/") or ".." in clean.split("/"):
        raise ConfigError(f"{what} {path!r} must be a relative path inside the release")
    return clean


class Deployer:
    """Deploy releases to ``hosts`` (``user@host:port`` strings) under ``deploy_to``.

    ``deploy_to``, health check targets and config destinations may use ``{host}``, ``{user}``,
    ``{ssh_port}`` and ``host_vars`` placeholders. ``concurrency`` bounds the hosts worked on at
    once; ``batch_size`` hosts switch together; more than ``max_failures`` failed hosts roll the
    whole deploy back. ``on_phase(host, phase)`` is called as each host enters each phase (for
    logs or dashboards); ``connect_retry`` governs retried connects; ``progress`` forces the
    terminal progress line on or off (default: on for a terminal). With ``reuse_artifact`` each
    host keeps the last artifact it unpacked (one copy, under ``deploy_to``) and a deploy of the
    same bytes is not sent it again (its SHA-256 is still checked there); False keeps none.
    """

    def __init__(
        self,
        hosts: Sequence[str],
        deploy_to: str,
        *,
        key_filename: str | None = None,
        known_hosts: str | None = None,
        trust_unknown_hosts: bool = False,
        connect_timeout: float = 10.0,
        command_timeout: float = 600.0,
        keepalive: int = 15,
        concurrency: int = 50,
        batch_size: int = 1,
        max_failures: int = 0,
        keep_releases: int = 5,
        shared_dirs: Sequence[str] = (),
        shared_files: Sequence[str] = (),
        hooks: Sequence[Hook] = (),
        health_check: HealthCheck | None = None,
        host_vars: Mapping[str, Mapping[str, str]] | None = None,
        on_phase: Callable[[str, DeployPhase], None] | None = None,
        connect_retry: RetryPolicy | None = None,
        progress: bool | None = None,
        reuse_artifact: bool = True,
    ) -> None:
        if isinstance(hosts, str) or not hosts:
            raise ConfigError("Deployer needs a list of hosts such as ['deploy@web1:22']")
        if len(set(hosts)) != len(hosts):
            raise ConfigError("the same host is listed twice")
        for host in hosts:
            SshHost.parse(host)
        self.hosts = list(hosts)
        self.deploy_to = _check_root(deploy_to, "")
        for name, value in {
            "concurrency": concurrency,
            "batch_size": batch_size,
            "keep_releases": keep_releases,
        }.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        if not isinstance(max_failures, int) or max_failures < 0:
            raise ConfigError(f"max_failures must be a whole number >= 0, got {max_failures!r}")
        if not isinstance(reuse_artifact, bool):
            raise ConfigError(f"reuse_artifact must be true or false, got {reuse_artifact!r}")
        self.ssh = SshOptions(
            key_filename=os.path.expanduser(key_filename) if key_filename else None,
            known_hosts=os.path.expanduser(known_hosts) if known_hosts else None,
            trust_unknown_hosts=trust_unknown_hosts,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            keepalive=keepalive,
        )
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.max_failures = max_failures
        self.keep_releases = keep_releases
        self.shared_dirs = [_check_relative(path, "shared dir") for path in shared_dirs]
        self.shared_files = [_check_relative(path, "shared file") for path in shared_files]
        self.hooks = list(hooks)
        self.health_check = health_check
        self.on_phase = on_phase
        self.connect_retry = connect_retry
        self.progress = progress
        self.reuse_artifact = reuse_artifact
        self._variables = self._host_variables(host_vars or {})

    def _host_variables(
        self, host_vars: Mapping[str, Mapping[str, str]]
    ) -> dict[str, dict[str, str]]:
        unknown = sorted(set(host_vars) - set(self.hosts))
        if unknown:
            raise ConfigError(f"host_vars names host(s) not in hosts: {', '.join(unknown)}")
        variables: dict[str, dict[str, str]] = {}
        for address in self.hosts:
            parsed = SshHost.parse(address)
            values = {"host": parsed.host, "user": parsed.user or "", "ssh_port": str(parsed.port)}
            for name, value in host_vars.get(address, {}).items():
                if not valid_variable_name(name):
                    raise ConfigError(f"host variable name {name!r} for {address} is not valid")
                values[name] = str(value)
            variables[address] = values
        for address, values in variables.items():
            _check_root(expand(self.deploy_to, values, "deploy_to"), f" (for {address})")
        return variables

    @classmethod
    def from_settings(cls, section: Mapping[str, Any], **overrides: Any) -> Deployer:
        """Build from a ``[deploy]`` settings table; keyword arguments override its keys."""
        values: dict[str, Any] = dict(section)
        values.update({key: value for key, value in overrides.items() if value is not None})
        missing = [name for name in ("hosts", "deploy_to") if name not in values]
        if missing:
            raise ConfigError(
                f"[deploy] needs {' and '.join(missing)} (or pass --host / --deploy-to)"
            )
        try:
            hooks = [
                Hook(**hook) if isinstance(hook, Mapping) else hook
                for hook in values.pop("hooks", [])
            ]
            check = values.pop("health_check", None)
            if isinstance(check, Mapping):
                check = _health_from_mapping(check)
            return cls(
                values.pop("hosts"),
                values.pop("deploy_to"),
                hooks=hooks,
                health_check=check,
                **values,
            )
        except TypeError as exc:
            raise ConfigError(f"bad [deploy] setting: {exc}") from None

    # -- sessions -----------------------------------------------------------------------------

    def _session(self, address: str) -> HostSession:
        variables = self._variables[address]
        return HostSession(
            address,
            self.ssh,
            expand(self.deploy_to, variables, "deploy_to"),
            variables,
            retry=self.connect_retry,
        )

    def _parallel(self, work: Callable[[T], None], items: Iterable[T]) -> None:
        todo = list(items)
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo))) as pool:
            for future in [pool.submit(work, item) for item in todo]:
                future.result()

    @contextlib.contextmanager
    def _phase(self, result: HostDeployResult, name: DeployPhase) -> Iterator[None]:
        result.phase = name
        if self.on_phase is not None:
            self.on_phase(result.host, name)
        started = time.monotonic()
        try:
            yield
        finally:
            result.timings[name] = result.timings.get(name, 0.0) + time.monotonic() - started

    def _guard(self, result: HostDeployResult, work: Callable[[], None]) -> None:
        try:
            work()
        except RemoteCommandError as exc:
            result.fail(f"{result.phase}: {str(exc).splitlines()[0]}", exc.stderr_tail)
        except AutoOpsError as exc:
            result.fail(f"{result.phase}: {exc}")

    def _environment(self, session: HostSession, release: str) -> dict[str, str]:
        return {
            **{k: v for k, v in session.variables.items() if valid_variable_name(k)},
            "RELEASE_ID": release,
            "RELEASE_PATH": f"{session.root}/releases/{release}",
            "DEPLOY_TO": session.root,
        }

    def _run_hooks(
        self, session: HostSession, phase: str, release: str, *, once: bool = False
    ) -> None:
        directory = (
            f"{session.root}/current"
            if phase == "after_switch"
            else f"{session.root}/releases/{release}"
        )
        for hook in self.hooks:
            if hook.phase != phase or hook.once != once:
                continue
            output = session.sh(
                session.scripts.hook(directory, hook.command, self._environment(session, release)),
                what=f"hook {_first_line(hook.command)!r}",
            )
            log.debug(
                "%s hook on %s said: %s", phase, session.address, output.stdout.strip()[-2000:]
            )

    # -- locking --------------------------------------------------------------------------------

    def _owner(self, release: str, token: str) -> dict[str, str]:
        return {
            "user": getpass.getuser(),
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "release": release,
            "since": _utc_now(),
            "token": token,
        }

    def _lock_all(self, run: DeployRun, release: str, break_lock: bool) -> None:
        """Lock every host or none and keep each host's state read under the lock in
        ``run.states``; a held lock raises :class:`LockHeldError` naming its owner."""
        sessions, results, states = run.sessions, run.results, run.states
        owner = self._owner(release, run.token)
        held: dict[str, LockOwner] = {}
        acquired: list[str] = []

        def lock(address: str) -> None:
            result = results[address]
            with self._phase(result, "lock"):

                def take() -> None:
                    script = sessions[address].scripts.acquire_lock(owner, break_lock=break_lock)
                    output = sessions[address].sh(script, what="taking the deploy lock").stdout
                    for line in output.splitlines():
                        if line.startswith("broke="):
                            log.warning(
                                "broke the deploy lock on %s held by %s",
                                address,
                                LockOwner.parse(line[6:]),
                            )
                        elif line.startswith("held="):
                            held[address] = LockOwner.parse(line[5:])
                    if "acquired" in output.split():
                        acquired.append(address)
                        states[address] = HostState.parse(output)

                self._guard(result, take)

        try:
            self._parallel(lock, sessions)
        except BaseException:
            # Interrupted while locking: give back what was taken (ours only, by token).
            self._release_all(run)
            raise
        unreachable = [address for address in sessions if results[address].error]
        if not held and not unreachable:
            return
        self._release_all(run, only=acquired)
        if held:
            address, holder = next(iter(held.items()))
            raise LockHeldError(
                f"the deploy lock on {address} ({sessions[address].root}/.autoops-deploy.lock) "
                f"is held by {holder}; nothing was changed. Wait for that deploy to finish; if it "
                "died, re-run with break_lock=True (--break-lock)",
                holder=str(holder),
            )

    def _release_all(
        self,
        run: DeployRun,
        *,
        only: Sequence[str] | None = None,
        remove: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        sessions, results = run.sessions, run.results

        def unlock(address: str) -> None:
            session = sessions[address]
            doomed = (remove or {}).get(address, ())
            try:
                script = session.scripts.release_lock(run.token, doomed)
                output = session.sh(
                    script,
                    timeout=max(30.0, len(doomed) * 30.0),
                    what="releasing the deploy lock",
                ).stdout
                results[address].lock_released = "released" in output.split()
            except AutoOpsError as exc:
                log.error(
                    "could not release the deploy lock on %s (%s): once it is reachable, "
                    "remove %s/.autoops-deploy.lock or deploy with break_lock=True",
                    address,
                    exc,
                    session.root,
                )

        self._parallel(unlock, only if only is not None else list(sessions))

    def _locked_run(
        self,
        run: DeployRun,
        lock_release: str,
        break_lock: bool,
        work: Callable[[], Mapping[str, Sequence[str]]],
    ) -> DeployResult:
        """The skeleton of a deploy and a rollback: lock every host or none, do ``work`` (which
        returns the old releases to remove from each host), release the locks (removing those
        releases), always; then close every session."""
        try:
            self._lock_all(run, lock_release, break_lock)
            if run.outcome.failed:
                run.outcome.message = _not_locked(run.outcome)
            else:
                remove: Mapping[str, Sequence[str]] = {}
                try:
                    remove = work()
                finally:
                    self._release_all(run, remove=remove)
        finally:
            run.close()
        return run.outcome

    # -- public operations --------------------------------------------------------------------

    def deploy(
        self,
        artifact: str | os.PathLike[str],
        *,
        release_id: str | None = None,
        hosts: Sequence[str] | None = None,
        break_lock: bool = False,
        check: bool = True,
    ) -> DeployResult:
        """Ship ``artifact`` (a directory or tarball) as a new release on every host (or only on
        ``hosts``: retry the failed hosts of a deploy with its ``release_id`` and
        ``result.failed_hosts``; a release there that is not current is replaced).

        Returns the per-host result; with ``check`` a failed or rolled-back deploy raises
        :class:`DeployError` carrying it. A lock held elsewhere raises :class:`LockHeldError`.
        """
        release = self._release_id(release_id)
        targets = self._targets(hosts)
        with Artifact.open(artifact) as packed:
            packed.refuse_links_on(self.shared_dirs, "shared dir")
            packed.refuse_links_on(self.shared_files, "shared file")
            return self._deploy(packed, release, targets, break_lock=break_lock, check=check)

    def _targets(self, hosts: Sequence[str] | None) -> list[str]:
        if hosts is None:
            return list(self.hosts)
        unknown = [host for host in hosts if host not in self.hosts]
        if unknown or not hosts:
            raise ConfigError(
                f"hosts {unknown or '[]'} must be a non-empty subset of this Deployer's hosts"
            )
        return [host for host in self.hosts if host in hosts]

    def _release_id(self, release_id: str | None) -> str:
        release = release_id or new_release_id()
        if not _RELEASE_ID.match(release) or release.endswith(PARTIAL_SUFFIX):
            raise ConfigError(
                f"release id {release!r} must be letters, digits, '.', '_' or '-' "
                "(and sort by time; the default id does)"
            )
        return release

    def _deploy(
        self,
        artifact: Artifact,
        release: str,
        targets: Sequence[str],
        *,
        break_lock: bool,
        check: bool,
    ) -> DeployResult:
        run = DeployRun.start("deploy", release, targets, self._session)
        outcome = self._locked_run(
            run, release, break_lock, lambda: self._prepare_and_switch(run, artifact, release)
        )
        log.info("%r", outcome)
        if check and not outcome.ok:
            raise DeployError(_summary(outcome), result=outcome)
        return outcome

    def _prepare_and_switch(
        self, run: DeployRun, artifact: Artifact, release: str
    ) -> dict[str, list[str]]:
        """Prepare, switch and check; return the old releases to remove from each host."""
        sessions, results, states, outcome = run.sessions, run.results, run.states, run.outcome
        progress = Progress(
            f"deploy {release}", total=2 * len(sessions), unit="host steps", enabled=self.progress
        )
        with progress:

            def prepare(address: str) -> None:
                self._guard(
                    results[address],
                    lambda: self._prepare(
                        sessions[address], results[address], artifact, release, states[address]
                    ),
                )
                progress.advance()

            self._parallel(prepare, sessions)
            failures = len(outcome.failed)
            prepared = [address for address in sessions if not results[address].error]
            if failures > self.max_failures:
                outcome.message = (
                    f"{failures} host(s) failed before any switch (max_failures="
                    f"{self.max_failures}); no host was switched"
                )
                self._discard(run, prepared, release)
                return {}
            switched = self._switch_in_batches(run, prepared, release, progress)
            if outcome.rolled_back:
                return {}
            if outcome.failed:
                deployed = sum(result.ok for result in results.values())
                names = ", ".join(f"{r.host} ({r.error})" for r in outcome.failed)
                outcome.message = (
                    f"deployed to {deployed} of {len(results)} host(s); {len(outcome.failed)} "
                    f"failed, within max_failures={self.max_failures}: {names}"
                )
            return {
                address: _releases_to_remove(
                    states[address].after_switch_to(release),
                    self.keep_releases,
                    results[address].previous_release,
                )
                for address in switched
            }

    def _prepare(
        self,
        session: HostSession,
        result: HostDeployResult,
        artifact: Artifact,
        release: str,
        state: HostState,
    ) -> None:
        scripts = session.scripts
        result.previous_release = state.current
        result.current_release = state.current
        if release == state.current:
            raise AutoOpsError(f"release {release} is already current on {session.address}")
        leftovers = state.unfinished()
        if release in state.releases:
            log.info("replacing the earlier copy of %s on %s", release, session.address)
            leftovers.append(release)
        if leftovers:
            log.warning("removing %s on %s before unpacking", leftovers, session.address)
            session.sh(scripts.remove_releases(leftovers), what="removing unfinished releases")
            state.releases = [r for r in state.releases if r not in leftovers]
        has_hooks = any(hook.phase == "after_unpack" for hook in self.hooks)

        def unpack(*, reuse: bool) -> None:
            with self._phase(result, "unpack"):
                session.sh(
                    scripts.unpack(
                        release,
                        artifact.sha256,
                        self.shared_dirs,
                        self.shared_files,
                        mark_prepared=None if has_hooks else _utc_now(),
                        reuse=reuse,
                        keep=self.reuse_artifact,
                    ),
                    what=f"unpacking release {release}",
                )

        reused = False
        if self.reuse_artifact and artifact.sha256 in state.artifacts:
            try:
                unpack(reuse=True)
                reused = True
                log.info("%s already held this artifact; it was not sent again", session.address)
            except RemoteCommandError as exc:
                if exc.exit_code not in (ARTIFACT_DIFFERS, KEPT_ARTIFACT_GONE):
                    raise
                log.warning("%s on %s; sending it", str(exc).splitlines()[0], session.address)
        if not reused:
            with self._phase(result, "upload"):
                send_file(
                    session.connection,
                    artifact.path,
                    scripts.upload_path(release),
                    where=session.address,
                    timeout=session.options.command_timeout,
                )
            result.uploaded = True
            unpack(reuse=False)
        if has_hooks:
            with self._phase(result, "after_unpack"):
                try:
                    self._run_hooks(session, "after_unpack", release)
                    session.sh(scripts.mark_prepared(release, _utc_now()))
                except AutoOpsError:
                    with contextlib.suppress(AutoOpsError):
                        session.sh(scripts.remove_releases([release]))
                    raise
        result.phase = "prepared"

    def _discard(self, run: DeployRun, addresses: Sequence[str], release: str) -> None:
        def discard(address: str) -> None:
            session = run.sessions[address]
            with contextlib.suppress(AutoOpsError):
                session.sh(session.scripts.remove_releases([release]))

        self._parallel(discard, addresses)

    def _switch_in_batches(
        self, run: DeployRun, prepared: list[str], release: str, progress: Progress
    ) -> list[str]:
        sessions, results, outcome = run.sessions, run.results, run.outcome
        switched: list[str] = []
        if prepared and any(hook.once for hook in self.hooks):
            leader = prepared[0]
            result = results[leader]

            def run_once() -> None:
                with self._phase(result, "before_switch"):
                    self._run_hooks(sessions[leader], "before_switch", release, once=True)

            self._guard(result, run_once)
            if result.error:
                outcome.message = f"the once-only before_switch hook failed on {leader}"
                self._discard(run, prepared, release)
                return []
        try:
            for start in range(0, len(prepared), self.batch_size):
                batch = prepared[start : start + self.batch_size]

                def switch(address: str) -> None:
                    result = results[address]
                    self._guard(
                        result, lambda: self._switch_one(sessions[address], result, release)
                    )
                    progress.advance()

                self._parallel(switch, batch)
                for address in batch:
                    if results[address].current_release == release:
                        switched.append(address)
                failed_now = [address for address in batch if results[address].error]
                self._parallel(
                    lambda address: self._roll_back_one(
                        sessions[address], results[address], release
                    ),
                    [address for address in failed_now if address in switched],
                )
                if len(outcome.failed) > self.max_failures:
                    names = ", ".join(f"{r.host} ({r.error})" for r in outcome.failed)
                    outcome.message = (
                        f"{len(outcome.failed)} host(s) failed (max_failures={self.max_failures}): "
                        f"{names}; every switched host was rolled back"
                    )
                    self._roll_back_switched(run, switched, release)
                    self._discard(run, [a for a in prepared if a not in switched], release)
                    outcome.rolled_back = True
                    return []
        except KeyboardInterrupt:
            outcome.message = "interrupted; every switched host was rolled back"
            self._roll_back_switched(run, switched, release)
            outcome.rolled_back = True
            raise
        return [address for address in switched if results[address].ok]

    def _switch_one(self, session: HostSession, result: HostDeployResult, release: str) -> None:
        with self._phase(result, "before_switch"):
            self._run_hooks(session, "before_switch", release)
        with self._phase(result, "switch"):
            self._switch(session, release)
            result.current_release = release
        with self._phase(result, "after_switch"):
            self._run_hooks(session, "after_switch", release)
        if self.health_check is not None:
            with self._phase(result, "health"):
                self.health_check.wait(session.variables, self._remote_runner(session))
        result.outcome = DeployOutcome.DEPLOYED
        result.phase = "done"

    def _remote_runner(self, session: HostSession) -> Callable[[str, float], CommandResult]:
        def run_check(command: str, timeout: float) -> CommandResult:
            script = session.scripts.hook(
                f"{session.root}/current", command, self._environment(session, "")
            )
            return session.sh(script, timeout=timeout, check=False)

        return run_check

    def _switch(
        self, session: HostSession, release: str, *, mark_failed: str | None = None
    ) -> None:
        script = session.scripts.switch(release, _utc_now(), mark_failed=mark_failed)
        output = session.sh(script, what=f"switching to release {release}").stdout.strip()
        if output.splitlines()[-1:] != [f"releases/{release}"]:
            raise AutoOpsError(
                f"after the switch, current on {session.address} points at {output!r}, "
                f"not releases/{release}"
            )

    def _roll_back_one(self, session: HostSession, result: HostDeployResult, release: str) -> None:
        """Put a switched host back on the release it had before, and mark ``release`` failed."""
        with self._phase(result, "rollback"):
            try:
                if result.previous_release is None:
                    session.sh(session.scripts.unset_current(release, _utc_now()))
                    result.current_release = None
                else:
                    self._switch(session, result.previous_release, mark_failed=release)
                    result.current_release = result.previous_release
                    self._run_hooks(session, "after_switch", result.previous_release)
            except AutoOpsError as exc:
                result.error = f"{result.error or 'deploy stopped'}; ROLLBACK FAILED: {exc}"
                result.outcome = DeployOutcome.FAILED
                return
        back_to = result.previous_release or "no current (first deploy)"
        if result.outcome == DeployOutcome.FAILED:
            result.error = f"{result.error}; rolled back to {back_to}"
        else:
            result.outcome = DeployOutcome.ROLLED_BACK

    def _roll_back_switched(self, run: DeployRun, switched: Sequence[str], release: str) -> None:
        sessions, results = run.sessions, run.results
        healthy = [
            address for address in switched if results[address].outcome == DeployOutcome.DEPLOYED
        ]
        self._parallel(
            lambda address: self._roll_back_one(sessions[address], results[address], release),
            healthy,
        )

    def rollback(
        self, to: str | None = None, *, break_lock: bool = False, check: bool = True
    ) -> DeployResult:
        """Switch every host back to its previous good release (or to release ``to``), run the
        ``after_switch`` hooks and the health check, and mark the release left as failed."""
        if to is not None:
            self._release_id(to)
        run = DeployRun.start("rollback", to or "previous", self.hosts, self._session)

        def roll_back() -> dict[str, list[str]]:
            self._parallel(
                lambda address: self._guard(
                    run.results[address],
                    lambda: self._rollback_host(
                        run.sessions[address], run.results[address], run.states[address], to
                    ),
                ),
                run.sessions,
            )
            return {}

        outcome = self._locked_run(run, f"rollback-{to or 'previous'}", break_lock, roll_back)
        if check and not outcome.ok:
            raise DeployError(_summary(outcome), result=outcome)
        return outcome

    def _rollback_host(
        self, session: HostSession, result: HostDeployResult, state: HostState, to: str | None
    ) -> None:
        with self._phase(result, "inspect"):
            result.previous_release = state.current
            result.current_release = state.current
            target = to if to is not None else state.rollback_target()
            if target is None:
                raise AutoOpsError(
                    f"no release to roll back to on {session.address} (current: {state.current})"
                )
            if target not in state.releases:
                raise AutoOpsError(f"release {target} is not on {session.address}")
        with self._phase(result, "switch"):
            left = state.current if state.current != target else None
            self._switch(session, target, mark_failed=left)
            result.current_release = target
        with self._phase(result, "after_switch"):
            self._run_hooks(session, "after_switch", target)
        if self.health_check is not None:
            with self._phase(result, "health"):
                self.health_check.wait(session.variables, self._remote_runner(session))
        result.outcome = DeployOutcome.ROLLED_BACK
        result.phase = "done"

    def plan(
        self, artifact: str | os.PathLike[str], *, release_id: str | None = None
    ) -> DeployPlan:
        """What :meth:`deploy` would do on each host, found read-only (no lock, no upload)."""
        release = self._release_id(release_id)
        path = os.fspath(artifact)
        if os.path.isdir(path):
            size = directory_size(Path(path))
        elif os.path.isfile(path):
            size = os.path.getsize(path)
        else:
            raise ConfigError(f"artifact {path} does not exist")
        plans: dict[str, HostDeployPlan] = {}

        def inspect(address: str) -> None:
            session = self._session(address)
            try:
                state = session.state()
            except AutoOpsError as exc:
                plans[address] = HostDeployPlan(address, None, (), (), None, error=str(exc))
                return
            finally:
                session.close()
            future = state.after_switch_to(release)
            plans[address] = HostDeployPlan(
                address,
                state.current,
                tuple(state.releases),
                tuple(_releases_to_remove(future, self.keep_releases, state.current)),
                str(state.lock) if state.lock else None,
            )

        self._parallel(inspect, self.hosts)
        return DeployPlan(release, size, tuple(plans[address] for address in self.hosts))

    def push_config(
        self,
        template: str | os.PathLike[str],
        dest: str,
        context: Mapping[str, Any] | None = None,
        *,
        mode: int = 0o644,
        owner: str | None = None,
        group: str | None = None,
        validate: str | None = None,
        on_change: str | None = None,
        dry_run: bool = False,
        check: bool = True,
    ) -> ConfigPushResult:
        """Render the Jinja2 ``template`` per host (host variables, then ``context``) and put
        it at ``dest`` only where the content (or mode/owner) differs: staged beside ``dest``,
        validated with ``validate`` (``{path}`` is the staged file), renamed into place, the old
        one kept as ``dest.autoops-previous``; ``on_change`` then runs (e.g. a reload). With
        ``dry_run`` nothing changes and each changed host carries a unified diff. With ``check``
        a failed host raises :class:`ConfigPushError`."""
        compiled = load_template(template)
        rendered = {
            address: render_template(
                compiled, {**self._variables[address], **(context or {})}, address
            )
            for address in self.hosts
        }
        results: dict[str, HostConfigResult] = {}

        def push(address: str) -> None:
            session = self._session(address)
            try:
                results[address] = push_to_host(
                    session,
                    rendered[address],
                    dest,
                    mode=mode,
                    owner=owner,
                    group=group,
                    validate=validate,
                    on_change=on_change,
                    dry_run=dry_run,
                    environment=lambda s: self._environment(s, ""),
                )
            except ConnectError as exc:
                results[address] = HostConfigResult(
                    address, dest, changed=False, applied=False, error=str(exc)
                )
            finally:
                session.close()

        self._parallel(push, self.hosts)
        outcome = ConfigPushResult(dest, dry_run, tuple(results[address] for address in self.hosts))
        if check and not outcome.ok:
            failed = "; ".join(f"{h.host}: {h.error}" for h in outcome.hosts if h.error)
            raise ConfigPushError(f"pushing {dest} failed on: {failed}", result=outcome)
        return outcome

    def _states(self) -> dict[str, HostState]:
        states: dict[str, HostState] = {}

        def inspect(address: str) -> None:
            session = self._session(address)
            try:
                states[address] = session.state()
            finally:
                session.close()

        self._parallel(inspect, self.hosts)
        return {address: states[address] for address in self.hosts}

    def __repr__(self) -> str:
        hosts = ", ".join(self.hosts[:3]) + (
            f", ... ({len(self.hosts)} hosts)" if len(self.hosts) > 3 else ""
        )
        return f"Deployer([{hosts}], deploy_to={self.deploy_to!r})"

    def releases(self) -> dict[str, list[str]]:
        """Each host's releases, oldest first."""
        return {address: state.releases for address, state in self._states().items()}

    def current(self) -> dict[str, str | None]:
        """Each host's current release (``None`` where nothing is deployed yet)."""
        return {address: state.current for address, state in self._states().items()}


def _releases_to_remove(state: HostState, keep: int, rollback_target: str | None) -> list[str]:
    protected = {state.current, rollback_target, state.rollback_target()}
    newest = set(state.releases[-keep:])
    return [
        release for release in state.releases if release not in newest and release not in protected
    ]


def _first_line(command: str) -> str:
    lines = command.strip().splitlines()
    return lines[0][:80] + (" ..." if len(lines) > 1 or len(lines[0]) > 80 else "")


def _not_locked(outcome: DeployResult) -> str:
    reasons = "; ".join(f"{host.host}: {host.error}" for host in outcome.failed)
    return f"not every host could be locked ({reasons}); nothing was changed"


def _summary(outcome: DeployResult) -> str:
    """The exception's text: what happened, then each failed host's stderr tail (the failing
    command's own words)."""
    failed = "; ".join(f"{host.host}: {host.error}" for host in outcome.failed)
    text = f"{outcome.action} of {outcome.release} failed"
    if outcome.message:
        text += f": {outcome.message}"
    elif failed:
        text += f": {failed}"
    for host in outcome.failed:
        if host.stderr_tail:
            tail = "\n".join(f"    {line}" for line in host.stderr_tail.splitlines())
            text += f"\n  stderr on {host.host}:\n{tail}"
    return text


def _health_from_mapping(values: Mapping[str, Any]) -> HealthCheck:
    settings = dict(values)
    if "url" in settings:
        return HealthCheck.http(settings.pop("url"), **settings)
    if "port" in settings:
        return HealthCheck.tcp(int(settings.pop("port")), **settings)
    if "command" in settings:
        return HealthCheck.command(settings.pop("command"), **settings)
    raise ConfigError("[deploy.health_check] needs url, port or command")
