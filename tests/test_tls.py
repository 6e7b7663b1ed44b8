"""TLS end to end: every path that connects works against TLS-only servers, and no password
crosses the wire in the clear.

The servers are private: a mariadbd with ``require_secure_transport`` and a redis-server with a
TLS port and no plaintext port (``--port 0``), both with a CA and certificate made for the run.
A recording relay in front of the TLS port shows what actually crossed the network.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

import pymysql
import pytest
import redis

import autoops
from _support.certs import ServerTls, make_server_tls
from _support.mariadb_pair import MARIADBD, MariaDbInstance, start_with_tls
from _support.proxy import TcpProxy
from _support.services import MYSQL_HOST, MYSQL_PORT, redis_server, require_program
from _support.sync_tables import cached_rows, create_users, expected_cache, make_sync
from autoops.backup import _redis_logical as backup_redis

# Characters a URL must escape, so the tests also prove the password survives every hand-over.
PASSWORD = "tls-S3cret/p@ss:w0rd#1"
MYSQL_USER = "app-user"
# A value that would show in a dump or a restore sent in the clear.
MARKER = "plaintext-marker-8f3a1c"


@dataclass(frozen=True)
class TlsMariaDb:
    server: MariaDbInstance
    tls: ServerTls

    def url(self, database: str, *, port: int | None = None) -> str:
        return (
            f"mysql://{MYSQL_USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{port or self.server.port}"
            f"/{database}?ssl_ca={quote(str(self.tls.ca_file))}&ssl_verify_identity=true"
        )


@dataclass(frozen=True)
class TlsRedis:
    port: int
    tls: ServerTls

    def url(self, db: int = 0, *, port: int | None = None) -> str:
        return (
            f"rediss://:{quote(PASSWORD, safe='')}@127.0.0.1:{port or self.port}/{db}"
            f"?ssl_ca_certs={quote(str(self.tls.ca_file))}"
        )

    def raw(self, db: int = 0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            db=db,
            password=PASSWORD,
            ssl=True,
            ssl_ca_certs=str(self.tls.ca_file),
        )


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ServerTls:
    return make_server_tls(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_mariadb(
    tmp_path_factory: pytest.TempPathFactory, server_tls: ServerTls
) -> Iterator[TlsMariaDb]:
    require_program(MARIADBD, "mariadb-server")
    server = start_with_tls(tmp_path_factory.mktemp("mariadb-tls"), server_tls)
    try:
        admin = server.admin_connection()
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE USER `{MYSQL_USER}`@'%%' IDENTIFIED BY %s", (PASSWORD,))
            cursor.execute(f"GRANT ALL ON *.* TO `{MYSQL_USER}`@'%'")
        admin.close()
        yield TlsMariaDb(server, server_tls)
    finally:
        server.stop()


@pytest.fixture
def tls_database(tls_mariadb: TlsMariaDb) -> Iterator[str]:
    """A fresh database on the TLS server, dropped afterwards."""
    name = f"tls-{uuid.uuid4().hex[:8]}"
    admin = tls_mariadb.server.admin_connection()
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield name
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    admin.close()


@pytest.fixture(scope="module")
def tls_redis(
    tmp_path_factory: pytest.TempPathFactory, server_tls: ServerTls
) -> Iterator[TlsRedis]:
    require_program("/usr/bin/redis-server", "redis-server")
    directory = tmp_path_factory.mktemp("redis-tls")
    with redis_server(
        directory, "--repl-diskless-sync-delay", "0", tls=server_tls, password=PASSWORD
    ) as port:
        yield TlsRedis(port, server_tls)


@pytest.fixture
def clean_tls_redis(tls_redis: TlsRedis) -> Iterator[TlsRedis]:
    raw = tls_redis.raw()
    raw.flushall()
    yield tls_redis
    raw.flushall()
    raw.close()


@pytest.fixture
def relay() -> Iterator[list[TcpProxy]]:
    """Recording relays made by the test; closed afterwards."""
    made: list[TcpProxy] = []
    yield made
    for proxy in made:
        proxy.close()


def _recording_relay(made: list[TcpProxy], port: int) -> TcpProxy:
    proxy = TcpProxy("127.0.0.1", port, record=True)
    made.append(proxy)
    return proxy


def _fill_mysql(db: autoops.DbClient) -> None:
    db.execute(
        "CREATE TABLE order_items (id BIGINT PRIMARY KEY, note VARCHAR(64) NOT NULL, "
        "amount BIGINT NOT NULL)"
    )
    db.executemany(
        "INSERT INTO order_items (id, note, amount) VALUES (%s, %s, %s)",
        [(i, f"{MARKER} {i}", 2**53 + i) for i in range(1, 201)],
    )


def _fill_redis(raw: redis.Redis, namespace: str) -> None:
    raw.set(f"{namespace}:plain", MARKER)
    raw.set(f"{namespace}:expiring", MARKER, px=600_000)
    raw.hset(f"{namespace}:hash", mapping={"field": MARKER})
    raw.rpush(f"{namespace}:list", "x", "y")


# the settings value ------------------------------------------------------------------------


def test_connection_settings_never_show_the_password(
    tls_mariadb: TlsMariaDb, tls_redis: TlsRedis
) -> None:
    db = autoops.DbClient.from_url(tls_mariadb.url("any"))
    cache = autoops.CacheClient.from_url(tls_redis.url())
    try:
        for settings in (db.connection_settings, cache.connection_settings):
            for text in (repr(settings), str(settings), settings.redacted()):
                assert PASSWORD not in text
                assert quote(PASSWORD, safe="") not in text
            assert settings.password is not None
            assert settings.password.reveal() == PASSWORD
            assert settings.tls is not None
            assert settings.tls.ca_file == str(tls_mariadb.tls.ca_file)
        assert "***" in str(db.connection_settings)
        assert str(cache.connection_settings).startswith("rediss://:***@127.0.0.1:")
    finally:
        db.close()
        cache.close()


def test_a_memory_cache_has_no_connection_settings_to_share() -> None:
    with pytest.raises(autoops.ConfigError, match="in-process"):
        _ = autoops.CacheClient.from_url("memory://").connection_settings


def test_a_bad_tls_verify_mode_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(autoops.ConfigError, match="none, optional or required"):
        autoops.CacheClient.from_url("rediss://cache.example.com:6380/0?ssl_cert_reqs=strict")


def test_a_client_built_from_another_clients_settings_connects_the_same_way(
    tls_mariadb: TlsMariaDb, tls_database: str, tls_redis: TlsRedis
) -> None:
    with autoops.DbClient.from_url(tls_mariadb.url(tls_database)) as db:
        settings = replace(db.connection_settings, database="mysql")
    with autoops.DbClient.from_connection_settings(settings) as second:
        row = second.query_one("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert row is not None
        assert row["Value"]
        assert second.query_one("SELECT DATABASE() AS db") == {"db": "mysql"}
    cache = autoops.CacheClient.from_url(tls_redis.url(3), namespace="first")
    other = autoops.CacheClient.from_connection_settings(cache.connection_settings, "second")
    try:
        other.set("k", "v")
        assert cache.get("k") is None
        assert tls_redis.raw(3).get("second:k") == b'"v"'
    finally:
        other.delete("k")
        cache.close()
        other.close()


# clients -----------------------------------------------------------------------------------


def test_a_mysql_url_without_tls_options_is_still_encrypted_to_a_server_that_requires_tls(
    tls_mariadb: TlsMariaDb, tls_database: str
) -> None:
    """No TLS options means "TLS if the server offers it" (pymysql's default), not "no TLS"."""
    url = tls_mariadb.url(tls_database).split("?", 1)[0]
    for _ in range(2):  # the second connection reuses the first one's TLS context
        with autoops.DbClient.from_url(url) as db:
            row = db.query_one("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            assert row is not None
            assert row["Value"]


def test_a_server_without_tls_is_asked_once_and_again_when_it_starts_requiring_tls(
    tls_mariadb: TlsMariaDb,
) -> None:
    """Asking for TLS from a server that has none ends the connect after its greeting (an
    aborted connect to the server), so the answer is remembered; a refusal later asks again."""
    proxy = TcpProxy(MYSQL_HOST, MYSQL_PORT)  # the shared server offers no TLS
    try:
        url = f"mysql://root@{proxy.address}/"
        for _ in range(3):
            with autoops.DbClient.from_url(url, retry=autoops.RetryPolicy.none()) as db:
                assert db.query_one("SELECT 1 AS one") == {"one": 1}
        assert proxy.accepted == 4  # one ended at the greeting, then three in the clear
        proxy.target = ("127.0.0.1", tls_mariadb.server.port)  # now a TLS-only server
        with autoops.DbClient.from_url(url, retry=autoops.RetryPolicy.none()) as db:
            row = db.query_one("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            assert row is not None
            assert row["Value"]
    finally:
        proxy.close()


def test_a_rewritten_ca_file_is_read_again_by_the_next_connection(
    tls_mariadb: TlsMariaDb, tls_database: str, tmp_path: Path
) -> None:
    """Contexts are shared between connections, but a rotated CA file is not missed."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(tls_mariadb.tls.ca_file.read_bytes())
    url = tls_mariadb.url(tls_database).replace(
        quote(str(tls_mariadb.tls.ca_file)), quote(str(ca_file))
    )
    with autoops.DbClient.from_url(url, retry=autoops.RetryPolicy.none()) as db:
        assert db.query_one("SELECT 1 AS one") == {"one": 1}
    foreign_ca = make_server_tls(tmp_path / "other").ca_file
    ca_file.write_bytes(foreign_ca.read_bytes() + b"\n")
    with (
        autoops.DbClient.from_url(url, retry=autoops.RetryPolicy.none()) as db,
        pytest.raises(autoops.ConnectError),
    ):
        db.query("SELECT 1")


def test_mysql_client_verifies_the_server_and_talks_tls(
    tls_mariadb: TlsMariaDb, tls_database: str
) -> None:
    with autoops.DbClient.from_url(tls_mariadb.url(tls_database)) as db:
        row = db.query_one("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert row is not None
        assert row["Value"]
    foreign_ca = make_server_tls(Path(str(tls_mariadb.tls.ca_file.parent) + "-other")).ca_file
    wrong_ca = tls_mariadb.url(tls_database).replace(
        quote(str(tls_mariadb.tls.ca_file)), quote(str(foreign_ca))
    )
    with (
        autoops.DbClient.from_url(wrong_ca, retry=autoops.RetryPolicy.none()) as db,
        pytest.raises(autoops.ConnectError) as caught,
    ):
        db.query("SELECT 1")
    assert PASSWORD not in str(caught.value)


def test_redis_cache_uses_tls_on_a_server_with_no_plaintext_port(tls_redis: TlsRedis) -> None:
    cache = autoops.CacheClient.from_url(tls_redis.url(), namespace="tls-client")
    try:
        cache.set("user:1", {"name": "Zoë"})
        assert cache.get("user:1") == {"name": "Zoë"}
        assert cache.ping() > 0
    finally:
        cache.delete("user:1")
        cache.close()
    plain = autoops.CacheClient.from_url(
        f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{tls_redis.port}/0",
        retry=autoops.RetryPolicy.none(),
    )
    try:
        with pytest.raises(autoops.ConnectError):
            plain.get("user:1")
    finally:
        plain.close()


def test_cache_sync_runs_a_pass_between_tls_servers(
    tls_mariadb: TlsMariaDb, tls_database: str, clean_tls_redis: TlsRedis
) -> None:
    db = autoops.DbClient.from_url(tls_mariadb.url(tls_database))
    cache = autoops.CacheClient.from_url(clean_tls_redis.url(), namespace="tls-sync")
    try:
        create_users(db, 250)
        report = make_sync(db, cache).run_once()
        assert report.ok
        assert report.keys_written >= 250
        assert cached_rows(cache) == expected_cache(db)
    finally:
        db.close()
        cache.close()


# MySQL backups -----------------------------------------------------------------------------


def test_mysql_backup_restore_and_verify_work_against_a_tls_only_server(
    tls_mariadb: TlsMariaDb, tls_database: str, tmp_path: Path
) -> None:
    db = autoops.DbClient.from_url(tls_mariadb.url(tls_database))
    _fill_mysql(db)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path), progress=False)
    try:
        backup = backuper.backup_mysql(tls_mariadb.url(tls_database))
        assert backup.tables["order_items"].rows == 200
        # The scratch database of the test restore is reached with the client's TLS settings.
        verified = backuper.verify(backup, restore_test=tls_mariadb.url(tls_database))
        assert verified.verified_at is not None
        target = f"{tls_database}-copy"
        db.execute(f"CREATE DATABASE `{target}` CHARACTER SET utf8mb4")
        try:
            backuper.restore_mysql(backup, tls_mariadb.url(target))
            with autoops.DbClient.from_url(tls_mariadb.url(target)) as copy:
                row = copy.query_one("SELECT COUNT(*) AS n, MAX(amount) AS top FROM order_items")
                assert row == {"n": 200, "top": 2**53 + 200}
        finally:
            db.execute(f"DROP DATABASE IF EXISTS `{target}`")
    finally:
        db.close()


def test_mysql_dump_and_restore_cross_a_relay_encrypted(
    tls_mariadb: TlsMariaDb, tls_database: str, tmp_path: Path, relay: list[TcpProxy]
) -> None:
    with autoops.DbClient.from_url(tls_mariadb.url(tls_database)) as db:
        _fill_mysql(db)
    proxy = _recording_relay(relay, tls_mariadb.server.port)
    through = tls_mariadb.url(tls_database, port=proxy.port)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path), progress=False)
    backup = backuper.backup_mysql(through)
    with autoops.DbClient.from_url(through) as db:
        db.execute("DROP TABLE order_items")
    backuper.restore_mysql(backup, through)
    with autoops.DbClient.from_url(through) as db:
        assert db.query_one("SELECT COUNT(*) AS n FROM order_items") == {"n": 200}
    assert len(proxy.traffic) > 10_000
    assert MARKER.encode() not in proxy.traffic
    assert PASSWORD.encode() not in proxy.traffic


# Redis backups -----------------------------------------------------------------------------


def test_the_recording_relay_does_see_a_password_sent_in_the_clear(
    tmp_path: Path, relay: list[TcpProxy]
) -> None:
    """The control for the tests below: without TLS, AUTH carries the password as it is."""
    require_program("/usr/bin/redis-server", "redis-server")
    with redis_server(tmp_path, password=PASSWORD) as port:
        proxy = _recording_relay(relay, port)
        cache = autoops.CacheClient.from_url(
            f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{proxy.port}/0"
        )
        try:
            cache.ping()
        finally:
            cache.close()
    assert PASSWORD.encode() in proxy.traffic


def test_redis_rdb_backup_over_tls_sends_no_password_in_the_clear(
    clean_tls_redis: TlsRedis, tmp_path: Path, relay: list[TcpProxy]
) -> None:
    raw = clean_tls_redis.raw()
    _fill_redis(raw, "rdb")
    proxy = _recording_relay(relay, clean_tls_redis.port)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path), progress=False)
    backup = backuper.backup_redis(clean_tls_redis.url(port=proxy.port), mode="rdb")
    assert backup.key_count == 4
    assert backup.source == f"redis://127.0.0.1:{proxy.port}"
    assert backuper.verify(backup, restore_test=True).verified_at is not None
    assert len(proxy.traffic) > 1_000
    assert PASSWORD.encode() not in proxy.traffic
    assert MARKER.encode() not in proxy.traffic


@pytest.mark.parametrize("hiredis", [True, False], ids=["hiredis", "redis-py-replies"])
def test_redis_logical_dump_restore_and_verify_over_tls_send_no_password_in_the_clear(
    clean_tls_redis: TlsRedis,
    tmp_path: Path,
    relay: list[TcpProxy],
    monkeypatch: pytest.MonkeyPatch,
    hiredis: bool,
) -> None:
    if not hiredis:
        # The path taken where hiredis is not installed: replies read through redis-py.
        monkeypatch.setattr(backup_redis, "_has_hiredis", lambda: False)
    raw = clean_tls_redis.raw()
    _fill_redis(raw, "app")
    proxy = _recording_relay(relay, clean_tls_redis.port)
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path), progress=False)
    source = autoops.CacheClient.from_url(clean_tls_redis.url(port=proxy.port), namespace="app")
    try:
        backup = backuper.backup_redis(source, mode="logical")
    finally:
        source.close()
    assert backup.key_count == 4
    verified = backuper.verify(backup, restore_test=clean_tls_redis.url(2, port=proxy.port))
    assert verified.verified_at is not None
    assert backuper.restore_redis(backup, clean_tls_redis.url(1, port=proxy.port)) == 4
    restored = clean_tls_redis.raw(1)
    assert restored.get("app:plain") == MARKER.encode()
    assert restored.hgetall("app:hash") == {b"field": MARKER.encode()}
    assert 0 < restored.pttl("app:expiring") <= 600_000
    assert clean_tls_redis.raw(2).dbsize() == 0
    assert len(proxy.traffic) > 1_000
    assert PASSWORD.encode() not in proxy.traffic
    assert MARKER.encode() not in proxy.traffic


def test_redis_backups_authenticate_as_an_acl_user_over_tls(
    clean_tls_redis: TlsRedis, tmp_path: Path, relay: list[TcpProxy]
) -> None:
    raw = clean_tls_redis.raw()
    raw.acl_setuser(
        "backup.user", enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"], commands=["+@all"]
    )
    _fill_redis(raw, "acl")
    proxy = _recording_relay(relay, clean_tls_redis.port)
    url = clean_tls_redis.url(port=proxy.port).replace("rediss://:", "rediss://backup.user:")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path), progress=False)
    try:
        assert backuper.backup_redis(url, mode="rdb").key_count == 4
        assert backuper.backup_redis(url, mode="logical").key_count == 4
    finally:
        raw.acl_deluser("backup.user")
    assert PASSWORD.encode() not in proxy.traffic


def test_a_wrong_redis_password_is_a_clear_backup_error(
    tls_redis: TlsRedis, tmp_path: Path
) -> None:
    url = tls_redis.url().replace(quote(PASSWORD, safe=""), "wrong-password")
    backuper = autoops.Backuper(autoops.LocalStorage(tmp_path), progress=False)
    with pytest.raises(autoops.AutoOpsError) as caught:
        backuper.backup_redis(url, mode="rdb")
    assert "wrong-password" not in str(caught.value)


# monitor -----------------------------------------------------------------------------------


def test_monitor_checks_reach_tls_only_servers(
    tls_mariadb: TlsMariaDb, tls_database: str, tls_redis: TlsRedis
) -> None:
    mysql = autoops.MySQLCheck("db", tls_mariadb.url(tls_database)).run()
    cache = autoops.RedisCheck("cache", tls_redis.url()).run()
    for result in (mysql, cache):
        assert result.status in {autoops.CheckStatus.OK, autoops.CheckStatus.WARNING}, result
        assert PASSWORD not in result.summary


def test_monitor_checks_connect_with_a_clients_settings(
    tls_mariadb: TlsMariaDb, tls_database: str, tls_redis: TlsRedis
) -> None:
    with autoops.DbClient.from_url(tls_mariadb.url(tls_database)) as db:
        mysql = autoops.MySQLCheck("db", db.connection_settings, timeout=5).run()
    cache_client = autoops.CacheClient.from_url(tls_redis.url())
    try:
        cache = autoops.RedisCheck("cache", cache_client.connection_settings, timeout=5).run()
    finally:
        cache_client.close()
    for result in (mysql, cache):
        assert result.status in {autoops.CheckStatus.OK, autoops.CheckStatus.WARNING}, result


def test_the_tls_server_refuses_a_connection_without_tls(tls_mariadb: TlsMariaDb) -> None:
    """The fixture's server really is TLS-only on TCP: the credentials that work over TLS are
    refused without it."""
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(
            host="127.0.0.1",
            port=tls_mariadb.server.port,
            user=MYSQL_USER,
            password=PASSWORD,
            ssl_disabled=True,
        )
