"""The backup commands: ``autoops-backup``, ``autoops-restore`` and ``autoops-backups``.

Cron-friendly: silent on success when not on a terminal, one clear line on failure, exit codes
from :mod:`autoops.cli._common`, and an optional Prometheus textfile (``--metrics-file``) whose
figures come from the catalogue, so a failed run still reports the last success.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from .._config import redact_url
from .._errors import AutoOpsError, ConfigError
from .._metrics import MetricSample, write_textfile
from ..backup import (
    ArchivedBinlog,
    Backup,
    Backuper,
    Encryption,
    RetentionPolicy,
)
from ..backup._binlogs import server_source, verify_archive
from ..backup._mysql import dump_source
from ..backup._settings import (
    KEEP_RULES,
    backup_metrics,
    backup_section,
    retention_from_settings,
)
from ..db import DbClient, MySQLClient
from ._common import EXIT_FAILURE, EXIT_OK, add_common_arguments, run_command, settings_from

__all__ = ["main_backup", "main_backups", "main_restore"]

log: Final = logging.getLogger("autoops.backup")
EXIT_METRICS_NOT_WRITTEN: Final = 3


def _add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        metavar="WHERE",
        help="a local directory, sftp://user@host:port/path or s3://bucket/prefix (default: "
        "[backup] storage; S3 endpoint_url, region and credentials come from [backup] or the "
        "AWS environment)",
    )
    parser.add_argument("--ssh-key", metavar="PATH", help="private key for sftp:// storage")
    parser.add_argument(
        "--known-hosts", metavar="PATH", help="known_hosts for sftp:// storage (~/.ssh/...)"
    )
    parser.add_argument(
        "--encryption-key",
        metavar="PATH",
        help="age key file to encrypt new backups and read encrypted ones (default: [backup] "
        "encryption_key; autoops-backup keygen PATH makes one)",
    )
    parser.add_argument(
        "--passphrase-env",
        metavar="VARIABLE",
        help="encrypt with the passphrase in this environment variable instead of a key file",
    )


def _add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    units = {"hourly": "hours", "daily": "days", "weekly": "weeks (Mon-Sun)"}
    units.update(monthly="months", yearly="years")
    for rule in KEEP_RULES:
        text = (
            "keep the N newest backups"
            if rule == "last"
            else f"keep the newest backup of each of the last N {units[rule]} that have one"
        )
        parser.add_argument(f"--keep-{rule}", type=int, default=0, metavar="N", help=text)
    parser.add_argument(
        "--keep-within", metavar="DURATION", help="keep all within this of the newest (7d, 2w)"
    )


def _flag_policy(args: argparse.Namespace) -> RetentionPolicy | None:
    """The policy of the --keep-* flags (it replaces [backup]'s keep_* whole), or None."""
    flags = {f"keep_{rule}": getattr(args, f"keep_{rule}") for rule in KEEP_RULES}
    return retention_from_settings({}, {**flags, "keep_within": args.keep_within})


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (systemd, a timeout) ends the command as Ctrl-C does: the partial upload and the
    option file holding the password are removed on the way out, and it exits 130."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _backuper(
    args: argparse.Namespace, *, create: bool, compression: str | None = None
) -> Backuper:
    """:meth:`Backuper.from_settings` with the storage and encryption flags over ``[backup]``."""
    return Backuper.from_settings(
        settings_from(args),
        create=create,
        storage=args.storage,
        key_filename=args.ssh_key,
        known_hosts=args.known_hosts,
        encryption_key=args.encryption_key,
        encryption_passphrase_env=args.passphrase_env,
        compression=compression,
    )


def _metrics(path: str, backuper: Backuper, source: str, kind: str, succeeded: bool) -> None:
    write_textfile(path, backup_metrics(backuper, source, kind, succeeded=succeeded))


# autoops-backup ---------------------------------------------------------------------------------


def _backup_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoops-backup",
        description="Take a verified backup of MySQL/MariaDB, Redis or SQLite, then prune.",
        epilog="exit status: 0 the backup is stored (and pruned); 1 the backup failed, nothing "
        "was stored; 2 usage or configuration error; 3 the backup is stored but the metrics file "
        "could not be written (a warning on stderr); 130 stopped by SIGINT or SIGTERM, nothing "
        "was stored",
    )
    parser.add_argument(
        "kind",
        choices=["mysql", "redis", "sqlite", "binlogs", "keygen"],
        help="what to back up (binlogs: archive a MySQL/MariaDB server's binary logs for "
        "point-in-time recovery), or keygen to write a new encryption key file to PATH",
    )
    parser.add_argument("path", nargs="?", metavar="PATH", help="keygen: the key file to write")
    parser.add_argument(
        "--url", help="what to back up (default: [db] url, or [cache] url for redis)"
    )
    _add_storage_arguments(parser)
    parser.add_argument("--compression", choices=["zstd", "gzip"], default=None)
    parser.add_argument("--mode", choices=["rdb", "logical"], default="rdb", help="redis only")
    parser.add_argument("--pattern", help="redis logical dump: keys to take (default: all)")
    parser.add_argument("--tables", help="mysql: comma-separated tables (default: all)")
    parser.add_argument(
        "--from-replica",
        metavar="URL",
        help="mysql: dump this replica of the server instead, recording the primary's binlog "
        "position (a URL without user or password takes them from --url / [db] url; "
        "default: [backup] from_replica)",
    )
    parser.add_argument(
        "--prefer",
        choices=["master", "replica"],
        default=None,
        help="redis on a redis+sentinel:// URL: read the backup from the master, or from a "
        "healthy replica the sentinels name so the master does none of the work "
        "(default: [backup] redis_prefer, else master)",
    )
    parser.add_argument(
        "--verify-restore",
        metavar="TARGET",
        help="after the backup, test-restore it: a mysql:// server URL (scratch database), a "
        "redis:// URL of an empty db, or 'local' for an RDB snapshot or SQLite",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="binlogs: keep running, archiving every --interval seconds, until SIGTERM",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="binlogs --follow: seconds between archive runs, the recovery point's lag (60)",
    )
    _add_policy_arguments(parser)
    parser.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write a Prometheus textfile (if that fails after the backup is stored: exit 3)",
    )
    add_common_arguments(parser)
    return parser


def _keygen(path: str | None) -> int:
    if not path:
        raise ConfigError("keygen needs the key file to write: autoops-backup keygen PATH")
    encryption = Encryption.generate_key(path)
    print(f"wrote {path} (public key {encryption.recipient}); keep a copy apart from the backups")
    return EXIT_OK


def _take(args: argparse.Namespace) -> int:
    if args.kind == "keygen":
        return _keygen(args.path)
    if args.path is not None:
        raise ConfigError(f"unexpected argument {args.path!r}: PATH is for keygen only")
    settings = settings_from(args)
    flag_policy = _flag_policy(args)  # checked before the backup runs, not after
    if args.kind == "redis":
        url = args.url or settings.require_cache_url()
    else:
        url = args.url or settings.require_db_url()
    section = backup_section(settings)
    args.from_replica = args.from_replica or section.get("from_replica")
    if args.from_replica and args.kind != "mysql":
        raise ConfigError(f"--from-replica is for mysql backups, not {args.kind}")
    if args.prefer is not None and args.kind != "redis":
        raise ConfigError(f"--prefer is for redis backups, not {args.kind}")
    if args.kind == "redis":
        args.prefer = args.prefer or section.get("redis_prefer") or "master"
    backuper = _backuper(args, create=True, compression=args.compression)
    storage = backuper.storage
    try:
        if args.kind == "binlogs":
            return _archive_binlogs(args, backuper, url)
        policy = flag_policy if flag_policy is not None else backuper.retention
        backup = _take_backup(args, backuper, policy, url)
        if not args.metrics_file:
            return EXIT_OK
        try:
            _metrics(args.metrics_file, backuper, backup.source, args.kind, succeeded=True)
        except (AutoOpsError, OSError) as exc:
            # The backup is stored and listed: a failing exporter path must not read as a
            # failed backup (exit 1), nor go unnoticed (exit 0).
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(
                f"autoops-backup: warning: backup {backup.id} stored in {storage.location}, but "
                f"the metrics file {args.metrics_file} was not written: {reason}",
                file=sys.stderr,
            )
            return EXIT_METRICS_NOT_WRITTEN
        return EXIT_OK
    finally:
        storage.close()


def _archive_binlogs(args: argparse.Namespace, backuper: Backuper, url: str) -> int:
    """One archive run (for cron), or runs every ``--interval`` seconds with ``--follow``; a
    failed run under --follow is logged and retried at the next interval."""
    if args.interval <= 0:
        raise ConfigError("--interval must be a positive number of seconds")
    with DbClient.from_url(url) as client:
        if not isinstance(client, MySQLClient):
            raise ConfigError(f"binlogs archives a MySQL/MariaDB server; got {redact_url(url)}")
        source = server_source(dump_source(client))
        while True:
            started = time.monotonic()
            try:
                backuper.archive_binlogs(client)
            except AutoOpsError as exc:
                if args.metrics_file:
                    _binlog_metrics(args.metrics_file, backuper, source, succeeded=False)
                if not args.follow:
                    raise
                log.error("archiving the binary logs failed: %s; trying again", exc)
            else:
                if args.metrics_file:
                    _binlog_metrics(args.metrics_file, backuper, source, succeeded=True)
                if not args.follow:
                    return EXIT_OK
            time.sleep(max(0.0, args.interval - (time.monotonic() - started)))


def _binlog_metrics(path: str, backuper: Backuper, source: str, *, succeeded: bool) -> None:
    """How far the archive reaches (the recovery point) and whether the last run worked."""
    labels = {"source": source}
    samples = [
        MetricSample(
            "autoops_backup_binlog_last_run_success",
            "1 if the last binlog archive run succeeded, else 0",
            1.0 if succeeded else 0.0,
            labels,
        )
    ]
    archives = backuper.binlogs(source)
    if archives:
        samples.append(
            MetricSample(
                "autoops_backup_binlog_recovery_point_timestamp_seconds",
                "the moment the binlog archive reaches: a restore can stop at any second before it",
                max(a.archived_at for a in archives).timestamp(),
                labels,
            )
        )
    try:
        write_textfile(path, samples)
    except OSError as exc:
        log.warning("the metrics file %s was not written: %s", path, exc.strerror or exc)


def _take_backup(
    args: argparse.Namespace, backuper: Backuper, policy: RetentionPolicy | None, url: str
) -> Backup:
    """Back up, test-restore, prune; a failure after the backup was stored still updates the
    metrics file (its last run failed)."""
    source = ""
    try:
        if args.kind == "mysql":
            tables = [t for t in (args.tables or "").split(",") if t]
            backup = backuper.backup_mysql(url, tables=tables, from_replica=args.from_replica)
        elif args.kind == "redis":
            backup = backuper.backup_redis(
                url, mode=args.mode, pattern=args.pattern, prefer=args.prefer
            )
        else:
            backup = backuper.backup_sqlite(url)
        source = backup.source
        if args.verify_restore:
            target: Any = True if args.verify_restore == "local" else args.verify_restore
            backup = backuper.verify(backup, restore_test=target)
        if policy is not None:
            # Pruning runs only here, after the new backup was stored and verified.
            plan = backuper.prune(policy, source=backup.source)
            for line in plan.lines():
                log.info("%s", line)
        log.info("backup %s stored in %s", backup.id, backuper.storage.location)
        return backup
    except BaseException:
        if args.metrics_file and source:
            try:
                _metrics(args.metrics_file, backuper, source, args.kind, succeeded=False)
            except (AutoOpsError, OSError) as exc:
                log.warning("the metrics file %s was not written: %s", args.metrics_file, exc)
        raise


def _stoppable(body: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with _sigterm_interrupts():
            return body(args)

    return run


def main_backup(argv: Sequence[str] | None = None) -> int:
    """``autoops-backup``: take a backup, optionally test-restore it, prune, write metrics."""
    return run_command("autoops-backup", _stoppable(_take), _backup_parser(), argv)


# autoops-restore --------------------------------------------------------------------------------


def _restore_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoops-restore", description="Restore a backup into a database, Redis or a file."
    )
    parser.add_argument(
        "backup",
        nargs="?",
        help="backup id (or a unique prefix); see autoops-backups list. With --until it may be "
        "left out: the newest MySQL backup before that moment is taken",
    )
    parser.add_argument(
        "--url",
        required=True,
        help="target: mysql:// database, redis:// db (any Redis backup), sqlite:/// file, or a "
        "path to write an RDB snapshot to",
    )
    parser.add_argument(
        "--replace", action="store_true", help="overwrite a target that already has data"
    )
    parser.add_argument(
        "--definer",
        choices=["keep", "strip"],
        default="keep",
        help="mysql: 'strip' makes the restoring account own views, triggers and routines",
    )
    parser.add_argument(
        "--until",
        metavar="WHEN",
        help="mysql: then replay the archived binary logs up to WHEN: a time ('2026-11-30 "
        "10:15:00', this machine's time zone unless an offset like +02:00 is given; transactions "
        "committed before it are restored, none at or after it), a binlog position "
        "(binlog.000042:1234, replay stops before the event there) or a GTID (0-1-77, included)",
    )
    parser.add_argument(
        "--source",
        help="with --until and no backup id: the backed-up database (mysql://host:port/db, as "
        "autoops-backups list shows) when the storage holds several",
    )
    _add_storage_arguments(parser)
    add_common_arguments(parser)
    return parser


def _restore(args: argparse.Namespace) -> int:
    backuper = _backuper(args, create=False)
    try:
        if args.backup is None:
            if args.until is None:
                raise ConfigError("give a backup id, or --until to restore to a moment")
            backup = backuper.backup_before(args.until, args.source)
            log.info("restoring %s, the newest backup before %s", backup.id, args.until)
        else:
            backup = backuper.get(args.backup)
        if args.until is not None and backup.kind != "mysql":
            raise ConfigError(f"--until replays MySQL binary logs; {backup.id} is {backup.kind}")
        detail = ""
        if backup.kind == "mysql":
            backuper.restore_mysql(
                backup, args.url, replace=args.replace, definer=args.definer, until=args.until
            )
        elif backup.kind == "redis":
            keys = backuper.restore_redis(backup, args.url, replace=args.replace)
            files = len(backup.data_files)
            detail = f": {keys} keys from {files} data file{'s' if files > 1 else ''}"
        else:
            backuper.restore_sqlite(backup, args.url, replace=args.replace)
        log.info("restored %s into %s%s", backup.id, redact_url(args.url), detail)
    finally:
        backuper.storage.close()
    return EXIT_OK


def main_restore(argv: Sequence[str] | None = None) -> int:
    """``autoops-restore``: restore one backup into a target."""
    return run_command("autoops-restore", _stoppable(_restore), _restore_parser(), argv)


# autoops-backups --------------------------------------------------------------------------------


def _backups_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoops-backups", description="List, verify and prune the backup catalogue."
    )
    commands = parser.add_subparsers(dest="action", required=True)
    listing = commands.add_parser("list", help="list backups (oldest first)")
    listing.add_argument("--source")
    listing.add_argument(
        "--json",
        action="store_true",
        help='one JSON manifest per line (backups, then archived binlogs: kind "binlog")',
    )
    verify = commands.add_parser("verify", help="check checksums (and test-restore)")
    verify.add_argument(
        "ids", nargs="*", help="backup ids (default: every backup and archived binlog)"
    )
    verify.add_argument(
        "--restore-test", metavar="TARGET", help="as autoops-backup --verify-restore"
    )
    prune = commands.add_parser("prune", help="remove what the retention policy does not keep")
    prune.add_argument("--source")
    prune.add_argument("--dry-run", action="store_true", help="print the plan, remove nothing")
    _add_policy_arguments(prune)
    for sub in (listing, verify, prune):
        _add_storage_arguments(sub)
        add_common_arguments(sub)
    return parser


def _row(backup: Backup) -> str:
    verified = backup.verified_at.isoformat(timespec="seconds") if backup.verified_at else "never"
    return (
        f"{backup.id}  {backup.kind:6}  {backup.status:7}  {backup.size:>12}  "
        f"{backup.started_at.isoformat(timespec='seconds')}  verified {verified}  {backup.source}"
    )


def _file_rows(backup: Backup) -> list[str]:
    """One indented line per data file of a backup of several (a Redis Cluster's masters)."""
    rows = []
    for data_file in backup.files:
        row = f"    {data_file.name}  {data_file.size:>12}"
        if data_file.node:
            slots = ",".join(f"{start}-{end}" for start, end in data_file.slots)
            row += f"  master {data_file.node}  slots {slots}  {data_file.key_count} keys"
        rows.append(row)
    return rows


def _binlog_row(archive: ArchivedBinlog) -> str:
    state = "complete" if archive.complete else "active"
    last = archive.last_event_at.isoformat(timespec="seconds") if archive.last_event_at else "-"
    return (
        f"{archive.manifest_file.removesuffix('.binlog.json')}  binlog  {state:8}  "
        f"{archive.size:>12}  {archive.start_position}..{archive.end_position}  "
        f"last event {last}  {archive.source}"
    )


def _backups(args: argparse.Namespace) -> int:
    backuper = _backuper(args, create=False)
    try:
        if args.action == "list":
            for backup in backuper.list(args.source):
                if args.json:
                    print(backup.to_json().decode().replace("\n", ""))
                    continue
                print(_row(backup))
                for row in _file_rows(backup):
                    print(row)
            server = server_source(args.source) if args.source else None
            for archive in backuper.binlogs(server):
                print(
                    archive.to_json().decode().replace("\n", "")
                    if args.json
                    else _binlog_row(archive)
                )
            return EXIT_OK
        if args.action == "verify":
            backups = [backuper.get(i) for i in args.ids] if args.ids else backuper.list()
            failed = 0
            target: Any = False
            if args.restore_test:
                target = True if args.restore_test == "local" else args.restore_test
            for backup in backups:
                try:
                    backuper.verify(backup, restore_test=target)
                    print(f"ok       {backup.id}")
                except Exception as exc:
                    failed += 1
                    print(f"FAILED   {backup.id}: {exc}")
            for archive in [] if args.ids else backuper.binlogs():
                label = f"{archive.server_file} of {archive.source}"
                try:
                    verify_archive(backuper, archive)
                    print(f"ok       binlog {label}")
                except Exception as exc:
                    failed += 1
                    print(f"FAILED   binlog {label}: {exc}")
            return EXIT_FAILURE if failed else EXIT_OK
        policy = _flag_policy(args)
        policy = policy if policy is not None else backuper.retention
        if policy is None:
            raise ConfigError("prune needs a policy: --keep-daily 7 ... or [backup] keep_* keys")
        plan = backuper.prune(policy, source=args.source, dry_run=args.dry_run)
        for line in plan.lines():
            if args.dry_run:
                print(line)
            else:
                log.info("%s", line)
        return EXIT_OK
    finally:
        backuper.storage.close()


def main_backups(argv: Sequence[str] | None = None) -> int:
    """``autoops-backups list|verify|prune``: the catalogue."""
    return run_command("autoops-backups", _stoppable(_backups), _backups_parser(), argv)
