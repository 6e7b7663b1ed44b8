"""A nightly backup of an SQLite app database with retention, as a script would do it.

Run: ``.venv/bin/python examples/backup_nightly.py /tmp/app.db /tmp/backups``
"""

from __future__ import annotations

import sys

import autoops


def main(database: str, directory: str) -> int:
    backuper = autoops.Backuper(autoops.LocalStorage(directory))
    backup = backuper.backup_sqlite(database)
    backuper.verify(backup, restore_test=True)
    plan = backuper.prune(
        autoops.RetentionPolicy(keep_daily=7, keep_weekly=4), source=backup.source
    )
    print(backup)
    for line in plan.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
