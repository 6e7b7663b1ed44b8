"""URLs, secrets and settings: what parses, what is refused and how, and which source wins."""

from __future__ import annotations

from pathlib import Path

import pytest

import autoops
from autoops import CacheUrl, ConfigError, DbUrl, Secret, load_settings


def test_mysql_url_parses_every_part() -> None:
    url = DbUrl.parse("mysql://app:s3cr%40t@db.example:3307/shop?charset=utf8mb4&connect_timeout=3")
    assert (url.dialect, url.host, url.port, url.user, url.database) == (
        "mysql",
        "db.example",
        3307,
        "app",
        "shop",
    )
    assert url.password == Secret("s3cr@t")
    assert url.options == {"charset": "utf8mb4", "connect_timeout": 3.0}


@pytest.mark.parametrize("scheme", ["mysql", "mysql+pymysql", "mariadb"])
def test_mysql_schemes_are_accepted(scheme: str) -> None:
    assert DbUrl.parse(f"{scheme}://u@h/d").dialect == "mysql"


def test_mysql_port_defaults_to_3306() -> None:
    assert DbUrl.parse("mysql://u@h/d").port == 3306


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///relative.db", "relative.db"),
        ("sqlite:////var/lib/app.db", "/var/lib/app.db"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_urls_name_a_file(url: str, path: str) -> None:
    assert DbUrl.parse(url).path == path


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6380/2", ("redis", "127.0.0.1", 6380, 2)),
        ("rediss://cache.example/0", ("rediss", "cache.example", 6379, 0)),
        ("redis://localhost", ("redis", "localhost", 6379, 0)),
    ],
)
def test_redis_urls_parse(url: str, expected: tuple[str, str, int, int]) -> None:
    parsed = CacheUrl.parse(url)
    assert (parsed.scheme, parsed.host, parsed.port, parsed.db) == expected


def test_unix_and_memory_cache_urls_parse() -> None:
    unix = CacheUrl.parse("unix:///run/redis.sock?db=3")
    assert (unix.path, unix.db) == ("/run/redis.sock", 3)
    assert CacheUrl.parse("memory://shared").path == "shared"
    assert CacheUrl.parse("memory://").path == ""


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("", "empty"),
        ("localhost:3306/db", "no scheme"),
        ("postgres://u@h/d", "unknown database URL scheme 'postgres'"),
        ("mysql://u@h:notaport/d", "bad port"),
        ("mysql://u@h:70000/d", "bad port"),
        ("mysql://u@h/d?colour=blue", "unknown option 'colour'"),
        ("mysql://u@h/d?connect_timeout=soon", "bad value for option 'connect_timeout'"),
        ("mysql://u@h/d?charset=a&charset=b", "given twice"),
        ("mysql:///d", "names no host"),
        ("mysql://u@h/a/b", "contains '/'"),
        ("sqlite://host/x.db", "no host"),
        ("sqlite://", "names no file"),
    ],
)
def test_bad_database_urls_name_the_bad_part(url: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        DbUrl.parse(url)


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("memcached://h", "unknown cache URL scheme 'memcached'"),
        ("redis://h:0/0", "bad port"),
        ("redis://h/zero", "bad database number"),
        ("redis://h/0?pool=5", "unknown option 'pool'"),
        ("redis://h/0?max_connections=-1", "bad value for option 'max_connections'"),
        ("unix://", "names no socket path"),
        ("memory://x?ttl_jitter=0.1&pool=1", "unknown option"),
    ],
)
def test_bad_cache_urls_name_the_bad_part(url: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        autoops.CacheClient.from_url(url)


def test_unknown_keyword_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown option 'read_timout'"):
        autoops.DbClient.from_url("mysql://u@h/d", read_timout=5)


def test_passwords_never_show_in_repr_str_or_errors() -> None:
    db_url = DbUrl.parse("mysql://app:hunter2@h/d")
    cache_url = CacheUrl.parse("redis://:hunter2@h:6379/0")
    client = autoops.DbClient.from_url("mysql://app:hunter2@h/d")
    texts = [repr(db_url), str(db_url), repr(cache_url), str(cache_url), repr(client)]
    texts.append(repr(load_settings(db_url="mysql://a:hunter2@h/d", environ={})))
    with pytest.raises(ConfigError) as caught:
        DbUrl.parse("mysql://app:hunter2@h:99999/d")
    texts.append(str(caught.value))
    for text in texts:
        assert "hunter2" not in text
    assert "***" in str(db_url)


def test_secret_reveals_only_on_request() -> None:
    secret = Secret("hunter2")
    assert secret.reveal() == "hunter2"
    assert "hunter2" not in f"{secret} {secret!r}"


def test_arguments_beat_environment_which_beats_the_file(tmp_path: Path) -> None:
    config = tmp_path / "autoops.toml"
    config.write_text('[db]\nurl = "sqlite:///file.db"\n[cache]\nurl = "memory://file"\n')
    env = {"AUTOOPS_DB_URL": "sqlite:///env.db"}
    from_file_and_env = load_settings(config, environ=env)
    assert from_file_and_env.db_url == "sqlite:///env.db"
    assert from_file_and_env.db_url_source == "environment variable AUTOOPS_DB_URL"
    assert from_file_and_env.cache_url == "memory://file"
    assert (
        load_settings(config, db_url="sqlite:///arg.db", environ=env).db_url == "sqlite:///arg.db"
    )


def test_config_file_path_comes_from_autoops_config(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text('[cache]\nurl = "memory://x"\n')
    settings = load_settings(environ={"AUTOOPS_CONFIG": str(config)})
    assert settings.cache_url == "memory://x"


def test_a_missing_url_says_how_to_set_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOOPS_DB_URL", raising=False)
    monkeypatch.delenv("AUTOOPS_CONFIG", raising=False)
    with pytest.raises(
        ConfigError, match=r"pass url=\.\.\., set AUTOOPS_DB_URL, or add \[db\] url"
    ):
        autoops.DbClient.from_config()


def test_an_explicit_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "autoops.toml"
    config.write_text("[db\nurl = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config, environ={})


def test_file_options_reach_the_client(tmp_path: Path) -> None:
    config = tmp_path / "autoops.toml"
    config.write_text(
        '[cache]\nurl = "memory://opts"\nnamespace = "shop"\nttl_jitter = 0.2\n'
        "[retry]\nattempts = 3\n"
    )
    cache = autoops.CacheClient.from_config(config)
    assert (cache.namespace, cache.ttl_jitter, cache.retry.attempts) == ("shop", 0.2, 3)


def test_unknown_retry_setting_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "autoops.toml"
    config.write_text('[cache]\nurl = "memory://"\n[retry]\ntries = 3\n')
    with pytest.raises(ConfigError, match="unknown retry setting"):
        autoops.CacheClient.from_config(config)


def test_a_keyword_option_of_none_turns_a_timeout_off() -> None:
    client = autoops.DbClient.from_url("mysql://u@h/d", read_timeout=None)
    assert client.connection_settings.read_timeout is None
