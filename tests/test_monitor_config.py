"""The [monitor] table: what it builds, and a clear ConfigError for each kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoops import ConfigError, HostCheck, HttpCheck, Monitor, load_settings, monitor_from_settings


def build(tmp_path: Path, text: str) -> Monitor:
    path = tmp_path / "autoops.toml"
    path.write_text(text)
    return monitor_from_settings(load_settings(path))


def test_a_full_config_builds_checks_notifiers_and_remediations(tmp_path: Path) -> None:
    monitor = build(
        tmp_path,
        f"""
[monitor]
deadline = 15
state_file = "{tmp_path / "state.json"}"

[monitor.checks.web]
type = "http"
url = "https://example.org/health"
expect_status = [200, 204]
contains = "ok"
timeout = 3
warning = {{ latency = "0.5", certificate_days = "30:" }}
critical = {{ latency = "2" }}

[monitor.checks.web.remediate]
host = "deploy@web1:22"
command = "sudo systemctl restart nginx"
min_interval = 600

[monitor.checks.box]
type = "host"
host = "ops@db1"
mounts = ["/", "/var"]
services = ["mariadb"]

[[monitor.notify]]
type = "webhook"
url = "https://hooks.example.org/autoops"

[[monitor.notify]]
type = "email"
host = "smtp.example.org"
sender = "monitor@example.org"
to = ["ops@example.org"]
""",
    )
    web = monitor.checks["web"]
    assert isinstance(web, HttpCheck)
    assert web.timeout == 3
    assert str(web.thresholds["latency"].warning) == "0.5"
    assert str(web.thresholds["certificate_days"].critical) == "14:"  # the default stays
    assert isinstance(monitor.checks["box"], HostCheck)
    assert monitor.remediations["web"].min_interval == 600
    assert len(monitor.notifiers) == 2
    assert monitor.deadline == 15


TCP = '[monitor.checks.x]\ntype = "tcp"\nhost = "h"\nport = 1\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[monitor]\n", "no checks configured"),
        ('[monitor.checks.x]\ntype = "ftp"\n', "type must be one of"),
        ('[monitor.checks.x]\ntype = "tcp"\nhost = "h"\n', "port is required"),
        ('[monitor.checks.x]\ntype = "tcp"\nhost = "h"\nport = 1\ncolour = 1\n', "unknown key"),
        ('[monitor.checks.x]\ntype = "host"\nhost = "h"\nmounts = "/"\n', "must be a list"),
        ('[monitor.checks.x]\ntype = "tcp"\nhost = "h"\nport = 1\nwarning = "5"\n', "table"),
        (
            '[monitor.checks.x]\ntype = "tcp"\nhost = "h"\nport = 1\n'
            'critical = { latency = "fast" }\n',
            "malformed threshold 'fast'",
        ),
        (
            '[monitor]\nspeed = 1\n[monitor.checks.x]\ntype = "tcp"\nhost = "h"\nport = 1\n',
            "unknown key",
        ),
        (
            '[monitor.checks.x]\ntype = "tcp"\nhost = "h"\nport = 1\n'
            '[[monitor.notify]]\ntype = "pager"\n',
            "webhook or email",
        ),
        (
            '[monitor.checks.x]\ntype = "tcp"\nhost = "h"\nport = 1\n'
            '[monitor.checks.x.remediate]\nhost = "h"\n',
            "command is required",
        ),
        ('[monitor.checks.x]\ntype = "mysql"\nurl = "redis://h/0"\n', "unknown database URL"),
        (f"[monitor]\ndeadline = nan\n{TCP}", r"\[monitor\]: deadline must be a number"),
        (f"[monitor]\ndeadline = inf\n{TCP}", r"\[monitor\]: deadline must be a number"),
        (f"[monitor]\ndeadline = -1\n{TCP}", r"\[monitor\]: deadline must be a number"),
        (f'[monitor]\ndeadline = "60"\n{TCP}', r"\[monitor\]: deadline must be a number"),
        (f"[monitor]\nmax_parallel = 0\n{TCP}", "max_parallel must be a whole number"),
        (f"[monitor]\nmax_parallel = 2.5\n{TCP}", "max_parallel must be a whole number"),
        (f"[monitor]\nflap_window = true\n{TCP}", "flap_window must be a whole number"),
        (f"{TCP}timeout = nan\n", r"\[monitor.checks.x\]: timeout must be a number"),
        (
            f'{TCP}[monitor.checks.x.remediate]\nhost = "h"\ncommand = "c"\nmin_interval = inf\n',
            "min_interval must be a number",
        ),
    ],
)
def test_each_mistake_is_a_config_error_naming_it(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(tmp_path, text)


def test_an_empty_threshold_removes_a_default_and_an_absent_one_keeps_it() -> None:
    from autoops import TcpCheck

    check = TcpCheck("port", "h", 1, thresholds={"latency": ("", None)})
    assert check.thresholds["latency"].warning is None
    assert str(check.thresholds["latency"].critical) == "5"


def test_the_ssh_key_is_key_filename_on_a_check_and_above_them(tmp_path: Path) -> None:
    default, own = tmp_path / "id_ed25519", tmp_path / "db2 ed25519"
    default.touch()
    own.touch()
    monitor = build(
        tmp_path,
        f"""
[monitor]
key_filename = "{default}"

[monitor.checks.box]
type = "host"
host = "ops@db1"

[monitor.checks.other]
type = "host"
host = "ops@db2"
key_filename = "{own}"
""",
    )
    box, other = monitor.checks["box"], monitor.checks["other"]
    assert isinstance(box, HostCheck)
    assert isinstance(other, HostCheck)
    assert (box.ssh.key_filename, other.ssh.key_filename) == (str(default), str(own))


def test_the_old_ssh_key_setting_still_works_with_a_warning_to_rename_it(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.touch()
    text = f'[monitor.checks.box]\ntype = "host"\nhost = "ops@db1"\nssh_key = "{key}"\n'
    with pytest.warns(
        FutureWarning, match=r"\[monitor.checks.box\]: .*ssh_key is now .*key_filename"
    ):
        monitor = build(tmp_path, text)
    box = monitor.checks["box"]
    assert isinstance(box, HostCheck)
    assert box.ssh.key_filename == str(key)


def test_both_names_of_the_ssh_key_setting_is_a_config_error(tmp_path: Path) -> None:
    text = (
        '[monitor]\nssh_key = "/a"\nkey_filename = "/b"\n'
        '[monitor.checks.box]\ntype = "host"\nhost = "h"\n'
    )
    with pytest.raises(ConfigError, match="ssh_key and key_filename are the same setting"):
        build(tmp_path, text)
