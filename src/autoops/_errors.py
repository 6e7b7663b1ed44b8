"""One error family for everything autoops raises.

Every error carries a message that says what failed, where, and what to do next, and chains the
driver's exception as ``__cause__`` so the detail is one ``.__cause__`` away. No message ever
contains a password: messages are built from redacted URLs and never from driver exception text
that could echo credentials back.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "AutoOpsError",
    "CodecError",
    "ConfigError",
    "ConnectError",
    "IntegrityError",
    "LockHeldError",
    "OutcomeUnknownError",
    "QueryError",
    "TransactionConflictError",
]


class AutoOpsError(Exception):
    """Base class of every error autoops raises; catch this to handle them all."""


class ConfigError(AutoOpsError, ValueError):
    """A URL, option, config file or argument is wrong; the message names the bad part."""


class CodecError(AutoOpsError, ValueError):
    """A value cannot be encoded for the cache, or stored bytes cannot be decoded."""


class ConnectError(AutoOpsError):
    """A server could not be reached, or the connection was lost, after every retry allowed."""


class OutcomeUnknownError(ConnectError):
    """The connection was lost after a write was sent: it may or may not have been applied.

    autoops never replays such a write on its own; check the data, then decide.
    """


class AuthenticationError(AutoOpsError):
    """The server rejected the credentials or the permissions; retrying cannot help."""


class QueryError(AutoOpsError):
    """The server rejected a statement or command (syntax, unknown table, WRONGTYPE, ...)."""


class IntegrityError(QueryError):
    """A statement broke a constraint (duplicate key, foreign key, NOT NULL)."""


class TransactionConflictError(QueryError):
    """A deadlock or lock wait timeout persisted through every retry of the transaction."""


class LockHeldError(AutoOpsError):
    """Another runner holds the lock this operation needs; the message names the holder."""

    def __init__(self, message: str, *, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder
