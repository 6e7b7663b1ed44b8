"""Where backups live: a local directory, or a remote directory over SFTP.

Both write a file under a temporary ``<name>.<host>.<pid>.partial`` name and rename it into place
only once its bytes are durable (local: fsync of the file and the directory; SFTP: the remote size
and SHA-256 match what was sent), so a reader never sees half a file under a final name. Files are
created 0600 and directories 0700.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import hashlib
import logging
import os
import posixpath
import re
import shlex
import socket
import stat
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from .._display import format_bytes
from .._errors import AutoOpsError, ConfigError, ConnectError
from ._errors import BackupError, BackupVerifyError

if TYPE_CHECKING:
    from .._ssh import SshOptions

__all__ = ["LocalStorage", "SftpStorage", "Storage", "Upload", "disk_error"]

log: Final = logging.getLogger("autoops.backup")
PARTIAL_SUFFIX: Final = ".partial"
_CHUNK: Final = 1 << 20


# Partial files this process is writing right now; any other partial of this process is stale.
_ACTIVE: set[str] = set()


def _partial_name(name: str) -> str:
    return f"{name}.{socket.gethostname()}.{os.getpid()}{PARTIAL_SUFFIX}"


def _partial_owner_is_gone(name: str) -> bool:
    """True for a partial file this host's autoops wrote (``<name>.<this host>.<pid>.partial``)
    whose writing process no longer runs. Any other ``*.partial`` is left alone: another host's
    (whose processes we cannot see) and files autoops did not write."""
    host = socket.gethostname()
    # The host name is matched whole, not split on dots: web1.example.com has dots of its own.
    owned = re.fullmatch(rf".+\.{re.escape(host)}\.(\d+){re.escape(PARTIAL_SUFFIX)}", name)
    if owned is None:
        return False
    pid = int(owned.group(1))
    if pid == os.getpid():
        return name not in _ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


_NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_error(exc: OSError, directory: str | os.PathLike[str], needed: int) -> BackupError:
    """A :class:`BackupError` for a local write that failed: a full disk (or quota) says where and
    about how much was needed, so the reader knows what to free."""
    if exc.errno in _NO_SPACE:
        return BackupError(
            f"no space left on {os.fspath(directory)}: needed about {format_bytes(needed)} or "
            "more; free some space there or use another storage"
        )
    return BackupError(f"writing to {os.fspath(directory)} failed: {exc.strerror or exc}")


class Upload(abc.ABC):
    """A file being written to a storage: bytes go to a temporary name; :meth:`commit` makes it
    durable and renames it into place, :meth:`abort` removes it. Counts size and SHA-256."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.size = 0
        self._hash = hashlib.sha256()

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes written so far."""
        return self._hash.hexdigest()

    def write(self, data: bytes) -> None:
        """Append ``data``."""
        if data:
            self._write(data)
            self._hash.update(data)
            self.size += len(data)

    @abc.abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def commit(self) -> None:
        """Make the file durable under its final name (or raise and leave nothing)."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Remove the temporary file; safe to call more than once."""


class Storage(abc.ABC):
    """The small protocol every backup store implements."""

    location: str

    @abc.abstractmethod
    def create(self, name: str) -> Upload:
        """Start writing ``name`` (under a temporary name until committed)."""

    @abc.abstractmethod
    def open(self, name: str) -> IO[bytes]:
        """Open a stored file for reading."""

    @abc.abstractmethod
    def names(self) -> list[str]:
        """Every file name in the store (partial files included)."""

    @abc.abstractmethod
    def size(self, name: str) -> int:
        """A stored file's size in bytes."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove a file; a missing one is not an error."""

    def checksum(self, name: str) -> str:
        """SHA-256 of a stored file, read back from the store."""
        digest = hashlib.sha256()
        with self.open(name) as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def read_bytes(self, name: str) -> bytes:
        """A small stored file's content."""
        with self.open(name) as handle:
            return handle.read()

    def write_bytes(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` atomically (replacing any old file)."""
        upload = self.create(name)
        try:
            upload.write(data)
            upload.commit()
        except BaseException:
            upload.abort()
            raise

    def clean_partials(self) -> list[str]:
        """Remove the partial files autoops writers on this host left when they died; returns
        their names."""
        removed = []
        for name in self.names():
            if name.endswith(PARTIAL_SUFFIX) and _partial_owner_is_gone(name):
                self.delete(name)
                removed.append(name)
                log.info("removed %s left in %s by an interrupted backup", name, self.location)
        return removed

    def close(self) -> None:
        """Release connections (nothing for a local directory)."""
        return

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


# local ----------------------------------------------------------------------------------------


class _LocalUpload(Upload):
    def __init__(self, directory: Path, name: str) -> None:
        super().__init__(name)
        self._directory = directory
        self._partial = directory / _partial_name(name)
        _ACTIVE.add(self._partial.name)
        try:
            fd = os.open(self._partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            _ACTIVE.discard(self._partial.name)
            raise disk_error(exc, directory, 0) from exc
        self._file: IO[bytes] | None = os.fdopen(fd, "wb", buffering=_CHUNK)

    def _write(self, data: bytes) -> None:
        assert self._file is not None, "write after commit or abort"
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise disk_error(exc, self._directory, self.size + len(data)) from exc

    def commit(self) -> None:
        assert self._file is not None, "commit after commit or abort"
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            on_disk = os.fstat(self._file.fileno()).st_size
            self._file.close()
        except OSError as exc:
            self.abort()
            raise disk_error(exc, self._directory, self.size) from exc
        self._file = None
        if on_disk != self.size:
            self.abort()
            raise BackupError(
                f"{self._partial} holds {on_disk} bytes after writing {self.size}; the disk "
                "may be full or failing"
            )
        os.replace(self._partial, self._directory / self.name)
        _ACTIVE.discard(self._partial.name)
        _fsync_directory(self._directory)

    def abort(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            self._partial.unlink()
        _ACTIVE.discard(self._partial.name)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage(Storage):
    """Backups in a local directory (created 0700 if missing; with ``create=False`` a missing
    directory is a :class:`ConfigError`, for readers of a catalogue that must already exist)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path).expanduser().absolute()
        self.location = str(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"backup storage {self.path} exists and is not a directory")
        if not create and not self.path.exists():
            raise ConfigError(_no_catalogue(self.location))
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create backup directory {self.path}: {exc.strerror}"
            ) from None

    def _file(self, name: str) -> Path:
        if not name or "/" in name or name in {".", ".."}:
            raise ConfigError(f"bad backup file name {name!r}")
        return self.path / name

    def create(self, name: str) -> Upload:
        return _LocalUpload(self.path, self._file(name).name)

    def open(self, name: str) -> IO[bytes]:
        try:
            return self._file(name).open("rb")
        except FileNotFoundError:
            raise BackupError(f"{name} is not in {self.location}") from None

    def names(self) -> list[str]:
        return sorted(entry.name for entry in self.path.iterdir() if entry.is_file())

    def size(self, name: str) -> int:
        try:
            return self._file(name).stat().st_size
        except FileNotFoundError:
            raise BackupError(f"{name} is not in {self.location}") from None

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._file(name).unlink()


def _no_catalogue(location: str) -> str:
    return (
        f"no backup catalogue at {location}: the directory does not exist; check the storage "
        "path (only a backup creates it)"
    )


# SFTP -----------------------------------------------------------------------------------------


def _sftp_error(action: str, where: str, exc: BaseException) -> BackupError | ConnectError:
    if isinstance(exc, OSError) and exc.errno in {errno.ENOENT, errno.EACCES}:
        return BackupError(f"cannot {action} on {where}: {exc}")
    return ConnectError(
        f"the SFTP connection to {where} failed while trying to {action} ({type(exc).__name__}: "
        f"{exc}); nothing was left under a final name, run the backup again"
    )


class _SftpUpload(Upload):
    def __init__(self, storage: SftpStorage, name: str) -> None:
        super().__init__(name)
        self._storage = storage
        self._partial = posixpath.join(storage.path, _partial_name(name))
        self._final = posixpath.join(storage.path, name)
        _ACTIVE.add(posixpath.basename(self._partial))
        sftp = storage.sftp()
        try:
            self._file: Any = sftp.open(self._partial, "wb")
            self._file.chmod(0o600)
            # Writes are sent without waiting for each ack; errors surface at close.
            self._file.set_pipelined(True)
        except Exception as exc:
            raise _sftp_error(f"create {self._partial}", storage.location, exc) from exc

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except Exception as exc:
            error = _sftp_error(f"write {self._partial}", self._storage.location, exc)
            if isinstance(error, ConnectError):
                self.abort()
                self._storage.close()
            raise error from exc

    def commit(self) -> None:
        where = self._storage.location
        try:
            self._file.close()
            remote_size = self._storage.sftp().stat(self._partial).st_size
        except Exception as exc:
            self.abort()
            self._storage.close()
            raise _sftp_error(f"finish {self._partial}", where, exc) from exc
        if remote_size != self.size:
            self.abort()
            raise BackupVerifyError(
                f"{self._partial} on {where} holds {remote_size} bytes, {self.size} were sent; "
                "the upload was cut short"
            )
        remote_sum = self._storage.remote_checksum(self._partial)
        if remote_sum != self.sha256:
            self.abort()
            raise BackupVerifyError(
                f"{self._partial} on {where} has SHA-256 {remote_sum}, expected {self.sha256}"
            )
        try:
            self._storage.sftp().posix_rename(self._partial, self._final)
        except Exception as exc:
            raise _sftp_error(f"rename {self._partial}", where, exc) from exc
        _ACTIVE.discard(posixpath.basename(self._partial))

    def abort(self) -> None:
        _ACTIVE.discard(posixpath.basename(self._partial))
        with contextlib.suppress(Exception):
            self._file.close()
        with contextlib.suppress(Exception):
            self._storage.sftp().remove(self._partial)


class SftpStorage(Storage):
    """Backups in a directory on an SSH host, over SFTP, with the host key checked.

    ``host`` is ``user@host:port``; ``options`` an :class:`~autoops.SshOptions` (key file,
    known_hosts, timeouts). The remote SHA-256 is computed on the host (by ``openssl`` or
    ``sha256sum``) when it has either, else by reading the file back. The directory is created
    on first use, unless ``create=False`` (then a missing one is a :class:`ConfigError`).
    """

    def __init__(
        self, host: str, path: str, *, options: SshOptions | None = None, create: bool = True
    ) -> None:
        # Fabric (under _ssh) loads only when a backup goes over SSH.
        from .._ssh import SshHost, SshOptions  # noqa: PLC0415

        self.host = SshHost.parse(host)
        self.options = options if options is not None else SshOptions()
        if not path:
            raise ConfigError("SftpStorage needs a remote directory path")
        self.path = path.rstrip("/") or "/"
        self.location = (
            f"sftp://{self.host}{self.path if self.path.startswith('/') else '/' + self.path}"
        )
        self.create_directory = create
        self._connection: Any = None
        self._sftp: Any = None
        self._hashes_remotely: bool | None = None

    def sftp(self) -> Any:
        """The open paramiko SFTP client (connecting, and creating the directory, on first use)."""
        if self._sftp is None:
            from .._ssh import connect  # noqa: PLC0415  (Fabric loads only for SSH storage)

            self._connection = connect(self.host, self.options)
            try:
                self._sftp = self._connection.sftp()
                self._make_directory()
            except AutoOpsError:
                self.close()
                raise
            except Exception as exc:
                self.close()
                raise _sftp_error("open the backup directory", self.location, exc) from exc
        return self._sftp

    def _make_directory(self) -> None:
        parts = [part for part in self.path.split("/") if part]
        current = "/" if self.path.startswith("/") else ""
        for part in parts:
            current = posixpath.join(current, part) if current else part
            try:
                self._sftp.stat(current)
            except FileNotFoundError:
                if not self.create_directory:
                    raise ConfigError(_no_catalogue(self.location)) from None
                self._sftp.mkdir(current, mode=0o700)

    def _call(self, action: str, fn: Any) -> Any:
        try:
            return fn(self.sftp())
        except AutoOpsError:
            raise
        except Exception as exc:
            self.close()
            raise _sftp_error(action, self.location, exc) from exc

    def remote_checksum(self, remote_path: str) -> str:
        """SHA-256 of a remote file, computed on the host when it can."""
        from .._ssh import run, sha256_command  # noqa: PLC0415  (Fabric loads only for SSH)

        if self._hashes_remotely is not False:
            self.sftp()
            command = sha256_command(shlex.quote(remote_path))
            result = run(self._connection, command, check=False)
            if result.ok and result.stdout.split():
                self._hashes_remotely = True
                return result.stdout.split()[0]
            self._hashes_remotely = False
        digest = hashlib.sha256()
        with self._call(f"read {remote_path}", lambda sftp: sftp.open(remote_path, "rb")) as handle:
            handle.prefetch()
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def _remote(self, name: str) -> str:
        if not name or "/" in name or name in {".", ".."}:
            raise ConfigError(f"bad backup file name {name!r}")
        return posixpath.join(self.path, name)

    def create(self, name: str) -> Upload:
        self._remote(name)
        return _SftpUpload(self, name)

    def open(self, name: str) -> IO[bytes]:
        remote = self._remote(name)

        def opener(sftp: Any) -> IO[bytes]:
            handle = sftp.open(remote, "rb")
            handle.prefetch()
            return handle  # type: ignore[no-any-return]

        return self._call(f"read {remote}", opener)  # type: ignore[no-any-return]

    def names(self) -> list[str]:
        entries = self._call(f"list {self.path}", lambda sftp: sftp.listdir_attr(self.path))
        return sorted(entry.filename for entry in entries if stat.S_ISREG(entry.st_mode or 0))

    def size(self, name: str) -> int:
        remote = self._remote(name)
        return int(self._call(f"stat {remote}", lambda sftp: sftp.stat(remote).st_size))

    def delete(self, name: str) -> None:
        remote = self._remote(name)

        def remove(sftp: Any) -> None:
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(remote)

        self._call(f"delete {remote}", remove)

    def checksum(self, name: str) -> str:
        return self.remote_checksum(self._remote(name))

    def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
        self._sftp = None
        self._connection = None
