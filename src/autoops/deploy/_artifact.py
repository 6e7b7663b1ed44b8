"""The artifact to ship: a local directory packed to a tarball once, or a tarball as given."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
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


@dataclass
class Artifact:
    """A tarball ready to upload, with its size and SHA-256; a packed directory's temporary
    tarball is removed on :meth:`close`."""

    path: Path
    size: int
    sha256: str
    _temporary: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def open(cls, source: str | os.PathLike[str]) -> Artifact:
        """Pack ``source`` if it is a directory (uncompressed: loopback and LAN links are faster
        than gzip), or take it as is if it is a tarball; anything else is a ConfigError."""
        path = Path(source)
        if path.is_dir():
            temporary = tempfile.TemporaryDirectory(prefix="autoops-deploy-")
            tarball = Path(temporary.name) / "release.tar"
            try:
                with tarfile.open(tarball, "w") as archive:
                    for child in sorted(path.iterdir()):
                        archive.add(child, arcname=child.name)
            except OSError as exc:
                temporary.cleanup()
                raise ConfigError(f"cannot pack the artifact directory {path}: {exc}") from exc
            return cls(tarball, tarball.stat().st_size, _sha256(tarball), temporary)
        if path.is_file():
            if not path.name.endswith(_TARBALL_SUFFIXES):
                raise ConfigError(
                    f"artifact {path} is neither a directory nor a tarball "
                    f"({', '.join(_TARBALL_SUFFIXES)})"
                )
            return cls(path, path.stat().st_size, _sha256(path))
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
