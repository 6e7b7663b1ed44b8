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
from ._model import Backup, BackupKind, Definer

__all__ = ["BackupEngine", "Capture", "RestoreJob"]


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
class RestoreJob:
    """One restore (or test restore) of a stored backup into ``target``: ``chunks()`` reads its
    data afresh at each call, ``check_stored()`` checks the stored file's size, SHA-256 and
    authenticity, ``progress()`` makes the terminal progress line."""

    backup: Backup
    target: Any
    chunks: Callable[[], Iterable[bytes]]
    check_stored: Callable[[], None]
    progress: Callable[[], Progress]
    replace: bool = False
    definer: Definer = "keep"


class BackupEngine(ABC):
    """What one kind of backup knows about its data."""

    kind: ClassVar[BackupKind]
    data_format: ClassVar[str]

    def handles(self, backup: Backup) -> bool:
        """Whether this engine reads ``backup`` (by its kind and data format)."""
        return backup.kind == self.kind and backup.format == self.data_format

    # Not abstract: a format with no end marker (SQLite) is checked by decompressing it whole.
    def check_content(  # noqa: B027
        self, backup: Backup, chunks: Callable[[], Iterable[bytes]], tail: bytes
    ) -> None:
        """Raise :class:`BackupVerifyError` unless the decompressed data (``tail`` is its last
        512 bytes) is whole in this format."""

    @abstractmethod
    def restore(self, job: RestoreJob) -> int | None:
        """Restore the backup into ``job.target``; the keys restored where that is a count."""

    @abstractmethod
    def test_restore(self, job: RestoreJob) -> None:
        """Restore into scratch space named by ``job.target`` and compare with the manifest."""
