"""Which client class serves which kind of URL: a table kept beside the base class.

As redis-py's ``parse_url`` picks a connection class by scheme and SQLAlchemy loads dialects from
a registry, a base client (``DbClient``, ``CacheClient``) names its backends by import path and
imports one only when a URL asks for it. The base module never imports its subclasses, so a
backend module imports the base freely and no import circle forms; a new backend is one entry.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TypeVar

from ._errors import ConfigError

__all__ = ["SchemeTable"]

T = TypeVar("T")


class SchemeTable:
    """``{scheme: "package.module:Class"}`` for subclasses of ``base``."""

    def __init__(self, base: type, entries: Mapping[str, str]) -> None:
        self.base = base
        self.entries = dict(entries)

    def client_class(self, scheme: str, wanted: type[T], label: str) -> type[T]:
        """The class serving ``scheme`` (``label`` is the redacted URL, for messages); a
        :class:`ConfigError` when it is not ``wanted`` or one of its subclasses, so
        ``MySQLClient.from_url("sqlite:///x")`` refuses instead of handing back another class."""
        target = self.entries.get(scheme)
        if target is None:
            known = ", ".join(f"{name}://" for name in sorted(self.entries))
            raise ConfigError(
                f"no {self.base.__name__} serves {scheme}:// URLs ({label}); use one of {known}"
            )
        module_name, _, class_name = target.partition(":")
        found = getattr(importlib.import_module(module_name), class_name)
        if not issubclass(found, wanted):
            raise ConfigError(
                f"{wanted.__name__} cannot open {label}: a {scheme}:// URL is served by "
                f"{found.__name__}; use {self.base.__name__}.from_url, which picks the client by "
                "scheme, or a URL of this client's kind"
            )
        return found  # type: ignore[no-any-return]
