"""Backup engines: one per kind of backup (MySQL, Redis RDB, Redis logical, SQLite) behind one
interface, as SQLAlchemy has dialects. :class:`Backuper` stores, lists, checks and encrypts;
an engine knows its format: how it is taken, checked, restored and test-restored. A new kind
of backup is a new engine, registered in ``_backuper.ENGINES``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from .._progress import Progress
from ._model import Backup, BackupKind, DataFile, Definer

__all__ = ["BackupEngine", "Capture", "Part", "RestoreJob", "SplitCapture"]


@dataclass(frozen=True, slots=True)
class Capture:
    """A backup being taken: its data (``chunks()``, read once) and how to describe it once
    the data is complete (``describe()``: the manifest's tool, version, tables...)."""

    kind: BackupKind
    source: str
    data_format: str
    chunks: Callable[[], Iterator[bytes]]
    describe: Callable[[], dict[str, Any]]
    label: str


@dataclass(frozen=True, slots=True)
class Part:
    """One data file of a :class:`SplitCapture`: ``name`` goes into the file's name
    (``<id>.<name>.<format>...``); a Redis Cluster master's ``node`` and ``slots`` go into the
    manifest's ``files`` entry, with its ``key_count`` once known."""

    name: str
    node: str = ""
    slots: tuple[tuple[int, int], ...] = ()
    key_count: Callable[[], int | None] = lambda: None


@dataclass(frozen=True, slots=True)
class SplitCapture:
    """A backup taken as several data files at once (one per Redis Cluster master):
    ``pieces()`` yields ``(part number, bytes)`` as the parts' sources deliver them, read once;
    ``describe()`` as for :class:`Capture`."""

    kind: BackupKind
    source: str
    data_format: str
    parts: tuple[Part, ...]
    pieces: Callable[[], Iterator[tuple[int, bytes]]]
    describe: Callable[[], dict[str, Any]]
    label: str


@dataclass(frozen=True, slots=True)
class RestoreJob:
    """One restore (or test restore) of a stored backup into ``target``: ``chunks()`` reads its
    data afresh at each call (the one data file's; ``file_chunks(f)`` reads one of
    ``backup.data_files``), ``check_stored()`` checks the stored files' sizes, SHA-256 and
    authenticity, ``progress()`` makes the terminal progress line."""

    backup: Backup
    target: Any
    chunks: Callable[[], Iterable[bytes]]
    file_chunks: Callable[[DataFile], Iterable[bytes]]
    check_stored: Callable[[], None]
    progress: Callable[[], Progress]
    replace: bool = False
    definer: Definer = "keep"


class BackupEngine(ABC):
    """What one kind of backup knows about its data."""

    kind: ClassVar[BackupKind]
    data_format: ClassVar[str]
    # Whether it reads a backup of several data files (backup.files).
    several_files: ClassVar[bool] = False

    def handles(self, backup: Backup) -> bool:
        """Whether this engine reads ``backup`` (by its kind, data format and files)."""
        return (
            backup.kind == self.kind
            and backup.format == self.data_format
            and (self.several_files or not backup.files)
        )

    # Not abstract: a format with no end marker (SQLite) is checked by decompressing it whole.
    def check_content(  # noqa: B027
        self, backup: Backup, chunks: Callable[[], Iterable[bytes]], tail: bytes
    ) -> None:
        """Raise :class:`BackupVerifyError` unless the decompressed data (``tail`` is its last
        512 bytes) is whole in this format. A backup of several files is checked one file at a
        time, each as a backup of that one file (``backup.data_file``)."""

    @abstractmethod
    def restore(self, job: RestoreJob) -> int | None:
        """Restore the backup into ``job.target``; the keys restored where that is a count."""

    @abstractmethod
    def test_restore(self, job: RestoreJob) -> None:
        """Restore into scratch space named by ``job.target`` and compare with the manifest."""
