"""Encrypted backups: age-format files the age CLI reads and writes, sealed manifests, and a wrong
key or any tampering refused before anything reaches a restore target."""

from __future__ import annotations

import dataclasses
import os
import pty
import select
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

import autoops
from _support.services import require_program
from autoops.backup._encryption import ENCRYPTED_SUFFIX

ROOT = Path(__file__).resolve().parent.parent
MARKER = "confidential-row-marker"


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "backup.key"
    autoops.Encryption.generate_key(path)
    return path


@pytest.fixture
def age() -> str:
    require_program(shutil.which("age") or "/usr/bin/age", "age")
    return shutil.which("age") or "/usr/bin/age"


def _sqlite_db(path: Path, rows: int = 3000) -> Path:
    db = autoops.SQLiteClient(path)
    db.execute('CREATE TABLE "usérs" (id INTEGER PRIMARY KEY, note TEXT, data BLOB)')
    db.executemany(
        'INSERT INTO "usérs" (note, data) VALUES (%s, %s)',
        [(f"{MARKER} {i}", os.urandom(64)) for i in range(rows)],
    )
    db.close()
    return path


def _stored_bytes(storage_dir: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(storage_dir.iterdir()):
        yield path.name, path.read_bytes()


@pytest.fixture
def mysql_orders(mysql_db: autoops.DbClient) -> autoops.MySQLClient:
    assert isinstance(mysql_db, autoops.MySQLClient)
    mysql_db.execute(
        "CREATE TABLE `order_items` (id BIGINT PRIMARY KEY, note VARCHAR(100), "
        "amount DECIMAL(10,2), created_at DATETIME) ENGINE=InnoDB"
    )
    mysql_db.executemany(
        "INSERT INTO `order_items` VALUES (%s, %s, %s, '2024-01-01 00:00:00')",
        [(2**53 + i, f"{MARKER} {i}", i / 100) for i in range(2000)],
    )
    return mysql_db


def _table_names(db: autoops.DbClient) -> list[str]:
    return [next(iter(row.values())) for row in db.query("SHOW FULL TABLES")]


# the age format, both ways ------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 3 * 65536, 200_001])
def test_autoops_reads_what_the_age_cli_encrypted(age: str, key: Path, size: int) -> None:
    encryption = autoops.Encryption.from_keyfile(key)
    plaintext = os.urandom(size)
    sealed = subprocess.run(
        [age, "-r", encryption.recipient], input=plaintext, capture_output=True, check=True
    ).stdout
    assert encryption.decrypt_bytes(sealed, "age output") == plaintext


@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 3 * 65536, 200_001])
def test_the_age_cli_reads_what_autoops_encrypted(age: str, key: Path, size: int) -> None:
    plaintext = os.urandom(size)
    sealed = autoops.Encryption.from_keyfile(key).encrypt_bytes(plaintext)
    opened = subprocess.run(
        [age, "-d", "-i", str(key)], input=sealed, capture_output=True, check=True
    )
    assert opened.stdout == plaintext


def test_the_age_cli_decrypts_a_stored_backup_with_the_key_file(
    age: str, key: Path, tmp_path: Path
) -> None:
    backuper = autoops.Backuper(
        autoops.LocalStorage(tmp_path / "store"),
        encryption=autoops.Encryption.from_keyfile(key),
    )
    backup = backuper.backup_sqlite(_sqlite_db(tmp_path / "app.db"))
    assert backup.data_file.endswith(ENCRYPTED_SUFFIX)
    compressed = subprocess.run(
        [age, "-d", "-i", str(key), str(tmp_path / "store" / backup.data_file)],
        capture_output=True,
        check=True,
    ).stdout
    restored = tmp_path / "by-age.db"
    restored.write_bytes(zstandard.ZstdDecompressor().decompressobj().decompress(compressed))
    db = autoops.SQLiteClient(restored)
    assert db.query('SELECT COUNT(*) AS n FROM "usérs"') == [{"n": 3000}]
    db.close()


def test_a_key_made_by_age_keygen_works(tmp_path: Path, age: str) -> None:
    keygen = shutil.which("age-keygen") or "/usr/bin/age-keygen"
    subprocess.run([keygen, "-o", str(tmp_path / "k")], capture_output=True, check=True)
    encryption = autoops.Encryption.from_keyfile(tmp_path / "k")
    assert f"public key: {encryption.recipient}" in (tmp_path / "k").read_text()
    assert encryption.decrypt_bytes(encryption.encrypt_bytes(b"x"), "k") == b"x"


def _age_on_a_terminal(age: str, arguments: list[str], passphrase: str) -> int:
    """Run the age CLI on a pseudo-terminal (it reads passphrases only from one), answering
    each passphrase prompt; returns its exit code."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: become age, or fail without running pytest's teardown
        try:
            os.execv(age, [age, *arguments])  # noqa: S606 (a fixed program, no shell)
        finally:
            os._exit(127)
    seen = b""
    answered = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if not select.select([terminal], [], [], 0.5)[0]:
                continue
            try:
                data = os.read(terminal, 1024)
            except OSError:  # EIO: age exited and closed the terminal
                break
            if not data:
                break
            seen += data
            if seen.lower().count(b"passphrase") > answered:
                answered = seen.lower().count(b"passphrase")
                os.write(terminal, passphrase.encode() + b"\n")
    finally:
        os.close(terminal)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_passphrase_files_interoperate_with_the_age_cli_both_ways(age: str, tmp_path: Path) -> None:
    passphrase = "correct horse battery staple"
    encryption = autoops.Encryption.from_passphrase(passphrase, work_factor=12)
    plaintext = os.urandom(100_000)
    (tmp_path / "ours.age").write_bytes(encryption.encrypt_bytes(plaintext))
    arguments = ["-d", "-o", str(tmp_path / "ours.out"), str(tmp_path / "ours.age")]
    assert _age_on_a_terminal(age, arguments, passphrase) == 0
    assert (tmp_path / "ours.out").read_bytes() == plaintext
    (tmp_path / "plain").write_bytes(plaintext)
    arguments = ["-p", "-o", str(tmp_path / "theirs.age"), str(tmp_path / "plain")]
    assert _age_on_a_terminal(age, arguments, passphrase) == 0
    assert encryption.decrypt_bytes((tmp_path / "theirs.age").read_bytes(), "age -p") == plaintext


# keys ----------------------------------------------------------------------------------------


def test_generate_key_writes_a_0600_file_and_never_overwrites_one(tmp_path: Path) -> None:
    path = tmp_path / "backup.key"
    encryption = autoops.Encryption.generate_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert encryption.recipient.startswith("age1")
    before = path.read_bytes()
    with pytest.raises(autoops.ConfigError, match="never overwritten"):
        autoops.Encryption.generate_key(path)
    assert path.read_bytes() == before


def test_a_file_that_is_not_a_key_is_a_clear_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad").write_text("# comment\nAGE-SECRET-KEY-1NOTAKEY\n")
    with pytest.raises(autoops.ConfigError, match="line 2 is not an age secret key"):
        autoops.Encryption.from_keyfile(tmp_path / "bad")
    with pytest.raises(autoops.ConfigError, match="cannot read"):
        autoops.Encryption.from_keyfile(tmp_path / "missing")
    (tmp_path / "latin1").write_bytes(b"\xe9t\xe9\n")
    with pytest.raises(autoops.ConfigError, match="not an age key file"):
        autoops.Encryption.from_keyfile(tmp_path / "latin1")


def test_keygen_command_writes_a_key_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k"
    command = [sys.executable, str(ROOT / "scripts" / "autoops-backup"), "keygen", str(path)]
    first = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert autoops.Encryption.from_keyfile(path).recipient in first.stdout
    second = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert second.returncode == 2
    assert len(second.stderr.strip().splitlines()) == 1
    assert "never overwritten" in second.stderr


def test_a_rotated_key_file_reads_old_backups_and_encrypts_new_ones_for_the_new_key(
    tmp_path: Path,
) -> None:
    storage = autoops.LocalStorage(tmp_path / "store")
    db = _sqlite_db(tmp_path / "app.db")
    old = autoops.Encryption.generate_key(tmp_path / "old.key")
    old_backup = autoops.Backuper(storage, encryption=old).backup_sqlite(db)
    autoops.Encryption.generate_key(tmp_path / "new.key")
    rotated = tmp_path / "rotated.key"
    rotated.write_text((tmp_path / "new.key").read_text() + (tmp_path / "old.key").read_text())
    encryption = autoops.Encryption.from_keyfile(rotated)
    backuper = autoops.Backuper(storage, encryption=encryption)
    new_backup = backuper.backup_sqlite(db)
    assert new_backup.options["encrypted_for"] == encryption.recipient != old.recipient
    for backup in backuper.list():
        assert backuper.verify(backup).status == "ok"
    backuper.restore_sqlite(old_backup, tmp_path / "old-restored.db")
    with pytest.raises(autoops.EncryptionKeyError):
        autoops.Backuper(storage, encryption=old).restore_sqlite(
            new_backup, tmp_path / "refused.db"
        )
    assert not (tmp_path / "refused.db").exists()


# what storage sees -------------------------------------------------------------------------


def test_storage_never_sees_table_data_or_names_and_the_restore_is_exact(
    mysql_orders: autoops.MySQLClient, mysql_url: str, key: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    backuper = autoops.Backuper(
        autoops.LocalStorage(store), encryption=autoops.Encryption.from_keyfile(key)
    )
    backup = backuper.backup_mysql(mysql_orders)
    for name, content in _stored_bytes(store):
        assert MARKER.encode() not in content, name
        assert b"order_items" not in content, name
        assert b"INSERT INTO" not in content, name
    listed = autoops.Backuper(autoops.LocalStorage(store)).list()
    assert [(b.id, b.size, b.sha256) for b in listed] == [(backup.id, backup.size, backup.sha256)]
    assert listed[0].tables == {}
    assert backuper.verify(listed[0], restore_test=mysql_url).status == "ok"
    before = mysql_orders.query("CHECKSUM TABLE `order_items`")
    mysql_orders.execute("DROP TABLE `order_items`")
    backuper.restore_mysql(listed[0], mysql_orders)
    assert mysql_orders.query("CHECKSUM TABLE `order_items`") == before
    assert mysql_orders.query("SELECT MAX(id) AS m FROM `order_items`") == [{"m": 2**53 + 1999}]


def test_listing_and_pruning_need_no_key_but_verify_does_and_marks_nothing_corrupt(
    key: Path, tmp_path: Path
) -> None:
    storage = autoops.LocalStorage(tmp_path / "store")
    db = _sqlite_db(tmp_path / "app.db", rows=10)
    encrypted = autoops.Backuper(storage, encryption=autoops.Encryption.from_keyfile(key))
    first = encrypted.verify(encrypted.backup_sqlite(db))
    encrypted.verify(encrypted.backup_sqlite(db))
    keyless = autoops.Backuper(storage)
    with pytest.raises(autoops.EncryptionKeyError, match="is encrypted"):
        keyless.verify(keyless.list()[0])
    assert [b.status for b in keyless.list()] == ["ok", "ok"]
    plan = keyless.prune(autoops.RetentionPolicy(keep_last=1))
    assert [b.id for b in plan.remove] == [first.id]
    assert len(keyless.list()) == 1


# refusals before anything is written ---------------------------------------------------------


def test_a_wrong_key_is_refused_before_the_target_database_is_touched(
    mysql_orders: autoops.MySQLClient, mysql_url: str, key: Path, tmp_path: Path
) -> None:
    storage = autoops.LocalStorage(tmp_path / "store")
    backup = autoops.Backuper(
        storage, encryption=autoops.Encryption.from_keyfile(key)
    ).backup_mysql(mysql_orders)
    mysql_orders.execute("DROP TABLE `order_items`")
    other = autoops.Encryption.generate_key(tmp_path / "other.key")
    with pytest.raises(autoops.EncryptionKeyError, match="cannot be decrypted with the key in"):
        autoops.Backuper(storage, encryption=other).restore_mysql(backup, mysql_orders)
    with pytest.raises(autoops.EncryptionKeyError, match="is encrypted"):
        autoops.Backuper(storage).restore_mysql(backup, mysql_orders)
    assert _table_names(mysql_orders) == []


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_is_refused_and_verify_marks_the_backup_corrupt(
    mysql_orders: autoops.MySQLClient, key: Path, tmp_path: Path
) -> None:
    storage = autoops.LocalStorage(tmp_path / "store")
    backuper = autoops.Backuper(storage, encryption=autoops.Encryption.from_keyfile(key))
    backup = backuper.backup_mysql(mysql_orders)
    _flip_byte(tmp_path / "store" / backup.data_file, backup.size // 2)
    mysql_orders.execute("DROP TABLE `order_items`")
    with pytest.raises(autoops.BackupVerifyError):
        backuper.restore_mysql(backup, mysql_orders)
    assert _table_names(mysql_orders) == []
    with pytest.raises(autoops.BackupVerifyError):
        backuper.verify(backup)
    assert backuper.list()[0].status == "corrupt"


def test_tampering_with_a_forged_manifest_checksum_is_refused_by_authentication_first(
    mysql_orders: autoops.MySQLClient, key: Path, tmp_path: Path
) -> None:
    """Even when the stored checksum is forged to match, every chunk is authenticated before
    the restore starts, so the damaged tail never reaches the database."""
    storage = autoops.LocalStorage(tmp_path / "store")
    backuper = autoops.Backuper(storage, encryption=autoops.Encryption.from_keyfile(key))
    backup = backuper.backup_mysql(mysql_orders)
    data_path = tmp_path / "store" / backup.data_file
    _flip_byte(data_path, backup.size - 20)
    forged = dataclasses.replace(backup, sha256=storage.checksum(backup.data_file))
    backuper._update(forged)
    mysql_orders.execute("DROP TABLE `order_items`")
    with pytest.raises(autoops.BackupVerifyError, match="fails authentication"):
        backuper.restore_mysql(backuper.list()[0], mysql_orders)
    assert _table_names(mysql_orders) == []


def _age_chunks(encryption: autoops.Encryption, size: int) -> tuple[bytes, list[bytes]]:
    sealed = encryption.encrypt_bytes(os.urandom(size))
    header_end = sealed.index(b"\n", sealed.index(b"\n---") + 1) + 1 + 16
    body = sealed[header_end:]
    step = 65536 + 16
    return sealed[:header_end], [body[i : i + step] for i in range(0, len(body), step)]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda c: [c[1], c[0], *c[2:]], id="reordered"),
        pytest.param(lambda c: c[:-1], id="last-chunk-dropped"),
        pytest.param(lambda c: c[:2], id="truncated-at-a-chunk-boundary"),
        pytest.param(lambda c: [*c[:-1], c[-1][:-1]], id="truncated-mid-chunk"),
        pytest.param(lambda c: [*c, c[-1]], id="chunk-repeated"),
        pytest.param(lambda c: [c[0], c[0], *c[2:]], id="chunk-duplicated"),
    ],
)
def test_reordered_truncated_or_repeated_chunks_fail_authentication(
    key: Path, tamper: object
) -> None:
    encryption = autoops.Encryption.from_keyfile(key)
    header, chunks = _age_chunks(encryption, 4 * 65536 + 100)
    assert callable(tamper)
    damaged = header + b"".join(tamper(chunks))
    with pytest.raises(autoops.BackupVerifyError, match=r"fails authentication|truncated"):
        encryption.decrypt_bytes(damaged, "damaged.age")


def test_a_modified_header_fails_authentication(key: Path) -> None:
    encryption = autoops.Encryption.from_keyfile(key)
    sealed = encryption.encrypt_bytes(b"data")
    mac_line = sealed.index(b"\n---") + 5
    damaged = sealed[:mac_line] + bytes([sealed[mac_line] ^ 1]) + sealed[mac_line + 1 :]
    with pytest.raises(autoops.BackupVerifyError):
        encryption.decrypt_bytes(damaged, "damaged.age")


def test_an_unencrypted_file_is_not_mistaken_for_an_encrypted_one(key: Path) -> None:
    with pytest.raises(autoops.BackupVerifyError, match="not an age"):
        autoops.Encryption.from_keyfile(key).decrypt_bytes(b"CREATE TABLE t (x);\n" * 10, "f")


# passphrases -------------------------------------------------------------------------------


def test_a_passphrase_from_the_environment_encrypts_and_a_wrong_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = autoops.LocalStorage(tmp_path / "store")
    monkeypatch.setenv("BACKUP_PASSPHRASE", "correct horse battery staple")
    encryption = autoops.Encryption.from_environment("BACKUP_PASSPHRASE", work_factor=12)
    assert "correct horse" not in repr(encryption)
    backuper = autoops.Backuper(storage, encryption=encryption)
    backup = backuper.backup_sqlite(_sqlite_db(tmp_path / "app.db", rows=50))
    backuper.restore_sqlite(backuper.list()[0], tmp_path / "restored.db")
    wrong = autoops.Encryption.from_passphrase("wrong", work_factor=12)
    with pytest.raises(autoops.EncryptionKeyError, match="passphrase"):
        autoops.Backuper(storage, encryption=wrong).restore_sqlite(backup, tmp_path / "no.db")
    assert not (tmp_path / "no.db").exists()
    monkeypatch.delenv("BACKUP_PASSPHRASE")
    with pytest.raises(autoops.ConfigError, match="BACKUP_PASSPHRASE is unset"):
        autoops.Encryption.from_environment("BACKUP_PASSPHRASE")
