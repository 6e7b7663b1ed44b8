"""The errors a backup, a verify or a restore raises, under :class:`autoops.AutoOpsError`."""

from __future__ import annotations

from .._errors import AutoOpsError

__all__ = ["BackupError", "BackupVerifyError", "EncryptionKeyError", "RestoreRefusedError"]


class BackupError(AutoOpsError):
    """A backup or a restore failed; nothing half-written was left behind as a backup.

    ``tool_message`` holds the last lines a dump or restore tool printed on stderr, if any.
    """

    def __init__(self, message: str, *, tool_message: str = "") -> None:
        super().__init__(message)
        self.tool_message = tool_message


class BackupVerifyError(BackupError):
    """A stored backup does not match its manifest (checksum, size, format or restored data)."""


class RestoreRefusedError(BackupError):
    """The restore target already holds data and ``replace=True`` was not given."""


class EncryptionKeyError(BackupError):
    """An encrypted backup cannot be opened: no key was given, or not the key (or passphrase) it
    was encrypted for. The backup itself is not damaged; nothing was restored."""
