"""A password that was not percent-encoded (``/``, ``#`` or ``?`` in it) never shows: not in a
``ConfigError``, not on any command's stdout or stderr, not in a log line, whether the URL came
from a flag, an environment variable or the settings file."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import autoops
from _support.services import REDIS_URL, require_tcp
from autoops import ConfigError
from autoops._config import redact_url
from autoops.backup import Backuper, LocalStorage
from autoops.cli import backup as backup_cli
from autoops.cli import check as check_cli
from autoops.cli import deploy as deploy_cli
from autoops.cli import sync as sync_cli

# Each password ends in "cret99": that tail must not show either, since a URL cut at the '/', '#'
# or '?' leaves it in the "path", "fragment" or "query" part.
TAIL = "cret99"
BAD_URLS = [
    "mysql://app:se/cret99@db1:3306/shop",
    "mysql://app:se?cret99@db1:3306/shop",
    "mysql://app:se#cret99@db1:3306/shop",
    "mysql://app:a@b/cret99@db1.example.com:3306/shop",
    "redis://:se#cret99@127.0.0.1:6379/8",
    "redis://:se?cret99@127.0.0.1:6379/8",
    "redis://app:se/cret99@127.0.0.1:6379/8",
]
Main = Callable[[Sequence[str] | None], int]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("parse", [autoops.DbUrl.parse, autoops.CacheUrl.parse])
def test_an_unparseable_url_is_refused_without_its_password(
    url: str, parse: Callable[[str], object]
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(url)
    assert TAIL not in str(caught.value)
    if url.split(":", 1)[0] in {"mysql", "redis"} and (
        (parse is autoops.DbUrl.parse) == url.startswith("mysql")
    ):
        assert "percent-encod" in str(caught.value)


@pytest.mark.parametrize("url", BAD_URLS)
def test_redact_url_hides_everything_up_to_the_last_at(url: str) -> None:
    redacted = redact_url(url)
    assert TAIL not in redacted
    assert redacted.endswith(url.rpartition("@")[2])


def test_redact_url_hides_a_password_in_a_url_without_a_scheme() -> None:
    assert redact_url("app:se/cret99@db1:3306/shop") == "***@db1:3306/shop"


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalogue holding one small Redis backup, so restore and verify reach the URL."""
    require_tcp("Redis", REDIS_URL)
    where = tmp_path_factory.mktemp("store")
    cache = autoops.CacheClient.from_url(REDIS_URL, namespace=f"aot:{uuid.uuid4().hex[:12]}")
    cache.set("k", 1, ttl=60)
    Backuper(LocalStorage(where)).backup_redis(cache, mode="logical")
    cache.delete("k")
    cache.close()
    return where


def _cases(url: str, source: str, storage: Path) -> list[tuple[str, Main, list[str]]]:
    """Every command, with ``url`` on its command line when ``source`` is "flag"."""
    backup_id = Backuper(LocalStorage(storage)).list()[0].id
    flag = source == "flag"
    kind = "redis" if url.startswith("redis") else "mysql"
    # Not a reachable server: the restore must stop at the URL, before touching anything.
    target = url if flag else "redis://127.0.0.1:6379/not-a-number"
    return [
        ("autoops-sync", sync_cli.main, ["-vv", "--once", "--table", "users", "--key", "u:{id}"]),
        (
            "autoops-backup",
            backup_cli.main_backup,
            ["-vv", kind, "--storage", str(storage), *(["--url", url] if flag else [])],
        ),
        (
            "autoops-restore",
            backup_cli.main_restore,
            ["-vv", backup_id, "--url", target, "--storage", str(storage)],
        ),
        (
            "autoops-backups",
            backup_cli.main_backups,
            [
                "verify",
                "-vv",
                "--storage",
                str(storage),
                *(["--restore-test", url] if flag else []),
            ],
        ),
        ("autoops-check", check_cli.main, ["-vv"]),
        (
            "autoops-deploy",
            deploy_cli.main,
            [
                "-vv",
                "--host",
                "deploy@127.0.0.1:1",
                "--deploy-to",
                "/srv/app",
                "deploy",
                str(storage),
                *(["--health-url", url] if flag else []),
            ],
        ),
    ]


def _settings(url: str) -> str:
    kind = "redis" if url.startswith("redis") else "mysql"
    return f"""
[db]
url = "{url}"

[cache]
url = "{url}"

[monitor.checks.primary]
type = "{kind}"
url = "{url}"
"""


@pytest.mark.parametrize("source", ["flag", "env", "file"])
@pytest.mark.parametrize("url", BAD_URLS)
def test_no_command_shows_a_password_that_needs_percent_encoding(
    url: str,
    source: str,
    storage: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOOPS_CONFIG", raising=False)
    monkeypatch.delenv("AUTOOPS_DB_URL", raising=False)
    monkeypatch.delenv("AUTOOPS_CACHE_URL", raising=False)
    if source == "env":
        monkeypatch.setenv("AUTOOPS_DB_URL", url)
        monkeypatch.setenv("AUTOOPS_CACHE_URL", url)
    if source == "file":
        settings = tmp_path / "autoops.toml"
        settings.write_text(_settings(url))
        settings.chmod(0o600)
    caplog.set_level(logging.DEBUG)
    for name, main, argv in _cases(url, source, storage):
        code = main(argv)
        out, err = capsys.readouterr()
        shown = out + err + caplog.text
        assert TAIL not in shown, f"{name} ({source}) showed the password:\n{shown}"
        assert "Traceback" not in err, f"{name} ({source}):\n{err}"
        # autoops-backups reads no URL from the environment or the file: its verify succeeds.
        if source == "flag" or name != "autoops-backups":
            assert code != 0, f"{name} ({source}) succeeded with a bad URL"
        caplog.clear()
