"""The artifact to ship: a local directory packed to a tarball once, or a tarball as given."""

from __future__ import annotations

import hashlib
import os
import posixpath
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from .._errors import ConfigError

__all__ = ["Artifact"]

_TARBALL_SUFFIXES: Final = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_size(path: Path) -> int:
    return sum(
        (Path(parent) / name).stat().st_size
        for parent, _dirs, files in os.walk(path)
        for name in files
        if not (Path(parent) / name).is_symlink()
    )


_MAX_LINK_HOPS: Final = 40


def _resolve(path: str, links: dict[str, str]) -> list[str] | None:
    """The components ``path`` (relative to the release) reaches once the archive's own
    symlinks are followed, or ``None`` when it leaves the release (an absolute link, a ``..``
    above the top, a loop). Resolved component by component, as the kernel does: a lexical
    ``normpath`` is fooled by ``a -> .`` followed by ``a/..``."""
    stack: list[str] = []
    pending = path.split("/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return None
            stack.pop()
            continue
        stack.append(part)
        target = links.get("/".join(stack))
        if target is None:
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS or target.startswith("/"):
            return None
        stack.pop()
        pending = target.split("/") + pending
    return stack


def _member_name(name: str) -> str:
    return posixpath.normpath(name.removeprefix("./")) if name not in ("", ".", "./") else "."


def _check_members(path: Path, members: list[tarfile.TarInfo]) -> frozenset[str]:
    """Refuse a member that would land or point outside the release, and device files; return
    the names of the archive's symlinks."""
    links: dict[str, str] = {}
    for member in members:
        raw = member.name
        if raw.startswith("/") or ".." in raw.split("/"):
            raise ConfigError(
                f"artifact {path} holds {raw!r}, a path outside the release (absolute or with "
                "'..'); pack the release relative to its own top directory"
            )
        if member.isdev() or member.isfifo():
            raise ConfigError(
                f"artifact {path} holds the device or FIFO {raw!r}; a release holds files, "
                "directories and links only"
            )
        if member.issym():
            links[_member_name(raw)] = member.linkname
    # Many members share a directory: each is resolved once.
    through_link: dict[str, bool] = {}
    for member in members:
        name = _member_name(member.name)
        parent = posixpath.dirname(name)
        if links and parent and parent not in through_link:
            through_link[parent] = _resolve(parent, {}) != _resolve(parent, links)
        if through_link.get(parent):
            raise ConfigError(
                f"artifact {path} holds {member.name!r} below a symlink: unpacking it would "
                "write through the link"
            )
        if member.issym():
            target = member.linkname
            if target.startswith("/") or _resolve(posixpath.join(parent, target), links) is None:
                raise ConfigError(
                    f"artifact {path} holds the symlink {member.name!r} -> {member.linkname!r}, "
                    "which points outside the release; a deploy never follows a link out of "
                    "the release: make it relative and inside, or create it in a hook"
                )
        elif member.islnk():
            target = member.linkname
            if (
                target.startswith("/")
                or ".." in target.split("/")
                or _resolve(target, links) is None
            ):
                raise ConfigError(
                    f"artifact {path} holds the hard link {member.name!r} -> {target!r}, "
                    "which points outside the release"
                )
    return frozenset(links)


@dataclass
class Artifact:
    """A tarball ready to upload, with its size and SHA-256; a packed directory's temporary
    tarball is removed on :meth:`close`."""

    path: Path
    size: int
    sha256: str
    symlinks: frozenset[str] = frozenset()
    _temporary: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def open(cls, source: str | os.PathLike[str]) -> Artifact:
        """Pack ``source`` if it is a directory (uncompressed: loopback and LAN links are faster
        than gzip), or take it as is if it is a tarball; anything else is a ConfigError, and so
        is an archive with a member outside the release (absolute, ``..``, a link pointing
        out, a device file)."""
        artifact, members = cls._open(Path(source))
        try:
            artifact.symlinks = _check_members(
                Path(source), artifact._members() if members is None else members
            )
        except BaseException:
            artifact.close()
            raise
        return artifact

    def _members(self) -> list[tarfile.TarInfo]:
        try:
            with tarfile.open(self.path, "r:*") as archive:
                return archive.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ConfigError(f"artifact {self.path} is not a readable tarball: {exc}") from exc

    def refuse_links_on(self, paths: Sequence[str], what: str) -> None:
        """A ConfigError when a shared path passes through a symlink of the release: replacing
        what lies below it would follow the link."""
        for path in paths:
            parts = posixpath.normpath(path).split("/")
            for end in range(1, len(parts)):
                prefix = "/".join(parts[:end])
                if prefix in self.symlinks:
                    raise ConfigError(
                        f"{what} {path!r} passes through {prefix!r}, a symlink in the artifact; "
                        "linking it into shared/ would follow the link"
                    )

    @classmethod
    def _open(cls, path: Path) -> tuple[Artifact, list[tarfile.TarInfo] | None]:
        """The artifact, and for a packed directory its members as packed (reading the tarball
        back costs as much as packing it)."""
        if path.is_dir():
            temporary = tempfile.TemporaryDirectory(prefix="autoops-deploy-")
            tarball = Path(temporary.name) / "release.tar"
            members: list[tarfile.TarInfo] = []

            def keep(member: tarfile.TarInfo) -> tarfile.TarInfo:
                members.append(member)
                return member

            try:
                with tarfile.open(tarball, "w") as archive:
                    for child in sorted(path.iterdir()):
                        archive.add(child, arcname=child.name, filter=keep)
            except OSError as exc:
                temporary.cleanup()
                raise ConfigError(f"cannot pack the artifact directory {path}: {exc}") from exc
            packed = cls(tarball, tarball.stat().st_size, _sha256(tarball), _temporary=temporary)
            return packed, members
        if path.is_file():
            if not path.name.endswith(_TARBALL_SUFFIXES):
                raise ConfigError(
                    f"artifact {path} is neither a directory nor a tarball "
                    f"({', '.join(_TARBALL_SUFFIXES)})"
                )
            return cls(path, path.stat().st_size, _sha256(path)), None
        raise ConfigError(f"artifact {path} does not exist")

    def close(self) -> None:
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None

    def __enter__(self) -> Artifact:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
