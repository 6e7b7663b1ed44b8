"""The one clock reading the packages share."""

from __future__ import annotations

import datetime as dt

__all__ = ["utc_now"]


def utc_now() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)
