"""Startup, configuration and shutdown behaviour of the daemon binary."""
import os
import subprocess

from conftest import BIN, Daemon


def run(args, env=None, timeout=30):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("KVCONNECTD_", "DENO_KV_"))}
    e.update(env or {})
    return subprocess.run([BIN, *args], capture_output=True, text=True, env=e, timeout=timeout)


def test_refuses_short_token_with_exit_2(tmp_path):
    r = run(["serve", "--database", str(tmp_path / "db"), "--listen", "127.0.0.1:0"],
            env={"DENO_KV_ACCESS_TOKEN": "short"})
    assert r.returncode == 2
    assert "too short" in r.stderr and "short" not in r.stderr.replace("too short", "")
    assert len(r.stderr.strip().splitlines()) == 1


def test_refuses_missing_token(tmp_path):
    r = run(["serve", "--database", str(tmp_path / "db")])
    assert r.returncode == 2 and "no access token" in r.stderr


def test_bad_settings_fail_fast(tmp_path):
    env = {"DENO_KV_ACCESS_TOKEN": "a-long-enough-token"}
    for args, needle in [(["--listen", "nonsense"], "invalid listen address"),
                         (["--synchronous", "maybe"], "invalid synchronous mode"),
                         (["--log-level", "loud"], "invalid log level"),
                         (["--config", str(tmp_path / "missing.yaml")], "config file not found")]:
        r = run(["serve", "--database", str(tmp_path / "db"), *args], env=env)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr


def test_precedence_flags_over_env_over_file_and_masking(tmp_path):
    cfg = tmp_path / "k.yaml"
    cfg.write_text("listen: 127.0.0.1:7001\ndatabase: /from/file.sqlite3\nio_threads: 3\nlog_level: debug\n")
    secret = "a-secret-token-value-xyz"
    r = run(["check-config", "--config", str(cfg), "--listen", "127.0.0.1:7003"],
            env={"KVCONNECTD_LISTEN": "127.0.0.1:7002", "KVCONNECTD_DATABASE": "/from/env.sqlite3",
                 "DENO_KV_ACCESS_TOKEN": secret})
    assert r.returncode == 0, r.stderr
    settings = dict(line.split(" = ", 1) for line in r.stdout.strip().splitlines())
    assert settings["listen"] == "127.0.0.1:7003"          # flag wins
    assert settings["database"] == "/from/env.sqlite3"     # env over file
    assert settings["io_threads"] == "3"                    # file over default
    assert settings["log_level"] == "debug"
    assert secret not in r.stdout and "********" in settings["access_token"]


def test_example_config_is_valid():
    from conftest import ROOT
    r = run(["check-config", "--config", str(ROOT / "config/kvconnectd.yaml")],
            env={"DENO_KV_ACCESS_TOKEN": "a-long-enough-token"})
    assert r.returncode == 0, r.stderr


def test_startup_line_and_token_never_logged(tmp_path):
    d = Daemon(tmp_path / "d", extra_args=["--log-level", "debug"]).start()
    try:
        assert d.metadata()["version"] == 3
    finally:
        assert d.stop() == 0
    log = d.log()
    assert "listening" in log and "database=" in log and "protocol_versions=1,2,3" in log
    assert d.token not in log


def test_port_in_use_fails_fast(tmp_path):
    d = Daemon(tmp_path / "a").start()
    try:
        r = run(["serve", "--listen", f"127.0.0.1:{d.port}", "--database", str(tmp_path / "b.sqlite3")],
                env={"DENO_KV_ACCESS_TOKEN": "a-long-enough-token"})
        assert r.returncode == 2 and r.stderr.strip()
    finally:
        d.stop()


def test_help_lists_every_setting_of_the_reference():
    """docs/settings.md is generated from the settings table (a unit test keeps
    it so); the binary's --help and flag parser come from the same table."""
    from conftest import ROOT
    rows = [line.split(" | ") for line in (ROOT / "docs/settings.md").read_text().splitlines()
            if line.startswith("| ") and "`KVCONNECTD_" in line]
    assert len(rows) >= 36
    for command in ("serve", "check-config"):
        r = run([command, "--help"])
        assert r.returncode == 0, r.stderr
        words = " ".join(r.stdout.split())
        for row in rows:
            flag, env = row[1].strip("`").split(" ")[0], row[2].strip("`")
            assert env in words, (command, env)
            if flag != "(none)":
                assert flag + " " in words, (command, flag)
    r = run(["check-config", "--no-such-setting", "1"])
    assert r.returncode == 64 and "Unknown option '--no-such-setting'" in r.stderr
