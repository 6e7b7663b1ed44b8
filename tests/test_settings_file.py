"""A settings file that cannot be read is a ConfigError naming the file (and, for a byte that is
not UTF-8, its offset); every command then prints one line and exits with its usage/config code.
A settings file holding a password that others can read is warned about, as ssh does for keys."""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import autoops
from autoops import ConfigError
from autoops.cli import backup as backup_cli
from autoops.cli import check as check_cli
from autoops.cli import deploy as deploy_cli
from autoops.cli import sync as sync_cli

Main = Callable[[Sequence[str] | None], int]
PASSWORD_URL = 'url = "mysql://app:s3cret@db1.example.com:3306/shop"\n'


def _bad_file(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / "autoops.toml"
    if kind == "not-utf8":
        # Latin-1 "café" in a comment, as an editor on an old system saves it.
        path.write_bytes(b"[db]\n" + PASSWORD_URL.encode() + b"# caf\xe9\n")
    elif kind == "bad-toml":
        path.write_text("[db\n" + PASSWORD_URL)
    elif kind == "directory":
        path = tmp_path / "settings.d"
        path.mkdir()
    else:
        path = tmp_path / "missing.toml"
    return path


def _commands(path: Path, tmp_path: Path) -> list[tuple[str, Main, list[str], int]]:
    config = ["--config", str(path)]
    store = ["--storage", str(tmp_path / "store")]
    return [
        ("autoops-sync", sync_cli.main, [*config, "--table", "t", "--key", "k:{id}"], 2),
        ("autoops-backup", backup_cli.main_backup, ["sqlite", *config, *store], 2),
        (
            "autoops-restore",
            backup_cli.main_restore,
            ["an-id", "--url", f"sqlite:///{tmp_path}/r.db", *config, *store],
            2,
        ),
        ("autoops-backups", backup_cli.main_backups, ["list", *config, *store], 2),
        # Monitoring Plugins: a configuration error is UNKNOWN (3), never 1 (WARNING).
        ("autoops-check", check_cli.main, config, 3),
        ("autoops-deploy", deploy_cli.main, [*config, "deploy", str(tmp_path)], 2),
    ]


@pytest.mark.parametrize("kind", ["not-utf8", "bad-toml", "directory", "missing"])
def test_an_unreadable_settings_file_is_one_line_and_the_config_exit_code(
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    path = _bad_file(kind, tmp_path)
    for name, main, argv, expected in _commands(path, tmp_path):
        code = main(argv)
        out, err = capsys.readouterr()
        shown = (out + err).strip()
        assert code == expected, f"{name}: exit {code}, expected {expected}\n{shown}"
        assert "Traceback" not in shown
        assert len(shown.splitlines()) == 1, f"{name}:\n{shown}"
        assert str(path) in shown
        assert "s3cret" not in shown


def test_a_byte_that_is_not_utf8_is_named_with_its_offset(tmp_path: Path) -> None:
    path = _bad_file("not-utf8", tmp_path)
    with pytest.raises(ConfigError, match=r"not UTF-8: byte 0xe9 at offset \d+") as caught:
        autoops.load_settings(path)
    offset = int(str(caught.value).split("offset ")[1].split()[0])
    assert path.read_bytes()[offset] == 0xE9


@pytest.mark.parametrize(
    "content",
    [
        "[db]\n" + PASSWORD_URL,
        '[cache]\nurl = "redis://127.0.0.1:6379/0?password=s3cret"\n',
        '[monitor.notify.mail]\ntype = "email"\npassword = "s3cret"\n',
    ],
)
def test_a_settings_file_with_a_password_readable_by_others_is_warned_about(
    content: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "autoops.toml"
    path.write_text(content)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="autoops.config"):
        autoops.load_settings(path)
        autoops.load_settings(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "warned more than once for one file"
    assert str(path) in warnings[0]
    assert f"chmod 600 {path}" in warnings[0]
    assert "s3cret" not in warnings[0]


@pytest.mark.parametrize(
    ("content", "mode"),
    [
        ("[db]\n" + PASSWORD_URL, 0o600),
        ('[db]\nurl = "mysql://app@db1.example.com/shop"\n', 0o644),
    ],
)
def test_a_private_file_or_one_without_a_password_is_not_warned_about(
    content: str, mode: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "autoops.toml"
    path.write_text(content)
    path.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="autoops.config"):
        autoops.load_settings(path)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert caplog.records == []


def test_a_command_prints_the_permission_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "autoops.toml"
    path.write_text("[db]\n" + PASSWORD_URL)
    path.chmod(0o640)
    monkeypatch.chdir(tmp_path)
    backup_cli.main_backups(["list", "--config", str(path), "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert f"chmod 600 {path}" in err
    assert "readable by its group" in err
