"""Configuration files rendered per host and pushed only when their content changed.

A changed file is uploaded next to its destination, given its mode and owner, validated there
(so a validator such as ``nginx -t -c {path}`` sees exactly what will go live), and only then
renamed over the old one, whose previous version is kept as ``<dest>.autoops-previous``.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import posixpath
import secrets
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import jinja2

from .._errors import AutoOpsError, ConfigError
from .._ssh import RemoteCommandError, read_bytes, sha256_command, upload_bytes
from ._health import expand
from ._remote import HostSession
from ._results import HostConfigResult

__all__ = ["PREVIOUS_SUFFIX", "push_to_host", "render_template"]

PREVIOUS_SUFFIX: Final = ".autoops-previous"
q = shlex.quote


def load_template(template: str | os.PathLike[str]) -> jinja2.Template:
    """Load a Jinja2 template file; an undefined variable fails the render instead of
    silently becoming empty text."""
    path = Path(template)
    if not path.is_file():
        raise ConfigError(f"config template {path} does not exist")
    environment = jinja2.Environment(  # noqa: S701 - config files, not HTML: no escaping wanted
        loader=jinja2.FileSystemLoader(str(path.parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    try:
        return environment.get_template(path.name)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"config template {path} line {exc.lineno}: {exc.message}") from None


def render_template(template: jinja2.Template, context: Mapping[str, Any], where: str) -> bytes:
    """Render for one host; a missing variable is a ConfigError naming it and the host."""
    try:
        return template.render(**context).encode("utf-8")
    except jinja2.UndefinedError as exc:
        raise ConfigError(
            f"config template {template.name} for {where}: {exc.message}; pass it in context "
            "or host_vars"
        ) from None


def _remote_status(session: HostSession, dest: str) -> tuple[str, str] | None:
    script = (
        f"if [ -f {q(dest)} ]; then "
        f"sum=$({sha256_command(q(dest))}); "
        f"printf '%s %s\\n' \"${{sum%% *}}\" "
        f"\"$(stat -c '%a %U %G' {q(dest)})\"; else echo missing; fi"
    )
    line = session.sh(script).stdout.strip()
    if line == "missing":
        return None
    digest, _, ownership = line.partition(" ")
    return digest, ownership


def _wanted_ownership(mode: int, owner: str | None, group: str | None, current: str) -> bool:
    current_mode, _, rest = current.partition(" ")
    current_owner, _, current_group = rest.partition(" ")
    return (
        int(current_mode, 8) == mode
        and (owner is None or owner == current_owner)
        and (group is None or group == current_group)
    )


def push_to_host(
    session: HostSession,
    content: bytes,
    dest_template: str,
    *,
    mode: int,
    owner: str | None,
    group: str | None,
    validate: str | None,
    on_change: str | None,
    dry_run: bool,
    environment: Callable[[HostSession], Mapping[str, str]],
) -> HostConfigResult:
    """Push ``content`` to one host's ``dest``; never raises for the host's own failures, which
    the returned result carries."""
    dest = expand(dest_template, session.variables, "config destination")
    if not dest.startswith("/"):
        raise ConfigError(f"config destination {dest!r} must be an absolute path")
    try:
        return _push(
            session, content, dest, mode, owner, group, validate, on_change, dry_run, environment
        )
    except RemoteCommandError as exc:
        return HostConfigResult(
            session.address,
            dest,
            changed=True,
            applied=False,
            error=exc.args[0].splitlines()[0],
            stderr_tail=exc.stderr_tail,
        )
    except AutoOpsError as exc:
        return HostConfigResult(session.address, dest, changed=True, applied=False, error=str(exc))


def _push(
    session: HostSession,
    content: bytes,
    dest: str,
    mode: int,
    owner: str | None,
    group: str | None,
    validate: str | None,
    on_change: str | None,
    dry_run: bool,
    environment: Callable[[HostSession], Mapping[str, str]],
) -> HostConfigResult:
    status = _remote_status(session, dest)
    digest = hashlib.sha256(content).hexdigest()
    if (
        status is not None
        and status[0] == digest
        and _wanted_ownership(mode, owner, group, status[1])
    ):
        return HostConfigResult(session.address, dest, changed=False, applied=False)
    if dry_run:
        old = read_bytes(session.connection, dest, where=session.address) if status else b""
        diff = "".join(
            difflib.unified_diff(
                (old or b"").decode("utf-8", "replace").splitlines(keepends=True),
                content.decode("utf-8", "replace").splitlines(keepends=True),
                fromfile=f"{session.address}:{dest}",
                tofile=f"{session.address}:{dest} (new)",
            )
        )
        if not diff and status is not None:
            diff = f"mode/owner change to {mode:o} {owner or ''}:{group or ''}\n"
        return HostConfigResult(session.address, dest, changed=True, applied=False, diff=diff)
    directory, name = posixpath.split(dest)
    staged = posixpath.join(directory, f".{name}.autoops-{secrets.token_hex(4)}")
    upload_bytes(session.connection, content, staged, where=session.address)
    try:
        setup = [f"chmod {mode:o} {q(staged)}"]
        if owner is not None or group is not None:
            spec = (owner or "") + (f":{group}" if group is not None else "")
            setup.append(f"chown {q(spec)} {q(staged)}")
        session.sh(" && ".join(setup))
        if validate:
            check = session.sh(validate.replace("{path}", q(staged)), check=False)
            if not check.ok:
                tail = (check.stderr or check.stdout).strip()
                return HostConfigResult(
                    session.address,
                    dest,
                    changed=True,
                    applied=False,
                    error=f"validation {validate!r} failed (exit {check.exit_code}); "
                    f"{dest} was left as it was",
                    stderr_tail="\n".join(tail.splitlines()[-10:]),
                )
        keep = f"cp -p {q(dest)} {q(dest + PREVIOUS_SUFFIX)} && " if status is not None else ""
        session.sh(f"{keep}mv -f {q(staged)} {q(dest)}")
    finally:
        session.sh(f"rm -f {q(staged)}", check=False)
    if on_change:
        exports = "".join(
            f"export {key}={q(value)}\n" for key, value in environment(session).items()
        )
        session.sh(f"{exports}export CONFIG_PATH={q(dest)}\n{on_change}")
    return HostConfigResult(session.address, dest, changed=True, applied=True)
