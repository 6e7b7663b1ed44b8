"""Old public names kept working for a while, each use warning with what to write instead."""

from __future__ import annotations

import warnings

__all__ = ["renamed"]


def renamed(old: str, new: str) -> None:
    """Warn (:class:`DeprecationWarning`, pointing at the caller's caller) that ``old`` is now
    ``new``."""
    warnings.warn(
        f"{old} is deprecated and will be removed; use {new}", DeprecationWarning, stacklevel=3
    )
