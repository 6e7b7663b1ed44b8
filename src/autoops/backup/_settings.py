"""The ``[backup]`` table of the settings file and the metrics of a backup run: what the backup
commands read and write, for a library user as for the commands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from .._config import Settings, renamed_setting
from .._errors import ConfigError
from .._metrics import MetricSample
from ._encryption import Encryption
from ._retention import RetentionPolicy, parse_duration
from ._s3 import S3Storage
from ._storage import LocalStorage, SftpStorage, Storage

if TYPE_CHECKING:
    from ._backuper import Backuper

__all__ = [
    "KEEP_RULES",
    "backup_metrics",
    "backup_section",
    "encryption_from_settings",
    "retention_from_settings",
    "storage_from_settings",
]

KEEP_RULES: Final = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
_TEXT_SETTINGS: Final = (
    "storage",
    "key_filename",
    "known_hosts",
    "compression",
    "keep_within",
    "encryption_key",
    "encryption_passphrase_env",
    "from_replica",
    "redis_prefer",
)


def backup_section(settings: Settings) -> dict[str, Any]:
    """The ``[backup]`` table, each known key checked for its type, so a bad value is one
    configuration error before anything runs rather than a traceback half way; the old name
    ``ssh_key`` is read as ``key_filename`` (with a warning to rename it)."""
    section = dict(settings.section("backup"))
    where = f"[backup] in {settings.path}"
    key = renamed_setting(section, "ssh_key", "key_filename", "[backup]")
    section.pop("ssh_key", None)
    if key is not None:
        section["key_filename"] = key
    for name in _TEXT_SETTINGS:
        if name in section and not isinstance(section[name], str):
            raise ConfigError(
                f"{where}: {name} must be a quoted string, got {section[name]!r}"
                + (' (a duration like "7d")' if name == "keep_within" else "")
            )
    if section.get("redis_prefer", "master") not in ("master", "replica"):
        raise ConfigError(
            f'{where}: redis_prefer must be "master" or "replica", got {section["redis_prefer"]!r}'
        )
    for rule in KEEP_RULES:
        value = section.get(f"keep_{rule}", 0)
        # TOML's true is a bool, which Python would take for 1.
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: keep_{rule} must be a whole number >= 0, got {value!r}")
    return section


def storage_from_settings(section: Mapping[str, Any], *, create: bool) -> Storage:
    """The storage ``section["storage"]`` names: a directory, ``sftp://user@host:port/path``
    (with ``key_filename`` and ``known_hosts``) or ``s3://bucket/prefix`` (with the S3 keys).
    Only a backup (``create``) makes a missing directory, so a typo in a reading command is an
    error instead of an empty list."""
    where = section.get("storage")
    if not where:
        raise ConfigError(
            "no backup storage: pass --storage DIR or sftp://user@host/path, or set "
            '[backup] storage = "..." in autoops.toml'
        )
    where = str(where)
    if where.startswith("sftp://"):
        parts = urlsplit(where)
        if not parts.hostname or not parts.path:
            raise ConfigError(f"bad SFTP storage {where!r}: use sftp://user@host:22/path")
        user = f"{unquote(parts.username)}@" if parts.username else ""
        # Fabric (under _ssh) loads only when a backup goes over SSH.
        from .._ssh import SshOptions  # noqa: PLC0415

        options = SshOptions(
            key_filename=section.get("key_filename"), known_hosts=section.get("known_hosts")
        )
        return SftpStorage(
            f"{user}{parts.hostname}:{parts.port or 22}", parts.path, options=options, create=create
        )
    if where.startswith("s3://"):
        return S3Storage.from_settings(where, section)
    if "://" in where:
        raise ConfigError(
            f"unknown storage {where!r}: use a directory, sftp://user@host/path or s3://bucket/prefix"
        )
    return LocalStorage(where, create=create)


def encryption_from_settings(section: Mapping[str, Any]) -> Encryption | None:
    """The encryption of ``encryption_key`` (an age key file) or ``encryption_passphrase_env``
    (the variable holding a passphrase); None when neither is set, an error when both are."""
    key_file = section.get("encryption_key")
    variable = section.get("encryption_passphrase_env")
    if key_file and variable:
        raise ConfigError("give an encryption key file or a passphrase variable, not both")
    if key_file:
        return Encryption.from_keyfile(str(key_file))
    if variable:
        return Encryption.from_environment(str(variable))
    return None


def retention_from_settings(
    section: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> RetentionPolicy | None:
    """The retention policy of the ``keep_*`` keys, or of ``overrides`` (flags) when any of
    them is set: a policy given on the command line replaces the file's whole, never mixes with
    it. None when no rule is set anywhere."""
    chosen = {key: value for key, value in (overrides or {}).items() if value}
    if not chosen:
        chosen = {key: value for key, value in section.items() if key.startswith("keep_")}
        if not chosen:
            return None
    within = chosen.get("keep_within")
    return RetentionPolicy(
        **{f"keep_{rule}": int(chosen.get(f"keep_{rule}", 0)) for rule in KEEP_RULES},
        keep_within=parse_duration(str(within)) if within is not None else None,
    )


def backup_metrics(
    backuper: Backuper, source: str, kind: str, *, succeeded: bool
) -> list[MetricSample]:
    """The Prometheus samples of a backup run of ``source``, from the catalogue, so a failed run
    still reports the last success: success, count, and the newest complete backup's time, size
    and duration."""
    backups = [backup for backup in backuper.list(source) if backup.ok]
    labels = {"kind": kind, "source": source}
    samples = [
        MetricSample(
            "autoops_backup_last_run_success",
            "1 if the last backup run succeeded, else 0",
            1.0 if succeeded else 0.0,
            labels,
        ),
        MetricSample(
            "autoops_backup_complete_backups",
            "complete backups in the catalogue",
            len(backups),
            labels,
        ),
    ]
    if backups:
        newest = backups[-1]
        for metric, help_text, value in (
            (
                "autoops_backup_last_success_timestamp_seconds",
                "when the newest complete backup finished (Unix time)",
                newest.finished_at.timestamp(),
            ),
            (
                "autoops_backup_last_size_bytes",
                "size of the newest complete backup as stored",
                newest.size,
            ),
            (
                "autoops_backup_last_duration_seconds",
                "how long the newest complete backup took",
                newest.duration_seconds,
            ),
        ):
            samples.append(MetricSample(metric, help_text, value, labels))
    return samples
