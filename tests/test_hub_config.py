"""Hub configuration, key table and auth callbacks, without sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest

from maim_message.hub.auth import (
    MISSING_KEY,
    PLATFORM_NOT_ALLOWED,
    SHUTTING_DOWN,
    UNKNOWN_KEY,
    HubAuth,
    KeyTable,
)
from maim_message.hub.config import (
    HubConfigError,
    KeyEntry,
    line_index,
    load_config,
    parse_keys_spec,
)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hub.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def problems_of(path: str, **kw: Any) -> str:
    with pytest.raises(HubConfigError) as info:
        load_config(path, **kw)
    return "\n".join(info.value.problems)


def test_embedded_defaults() -> None:
    config = load_config(None, env={})
    assert (config.host, config.port, config.path) == ("127.0.0.1", 18040, "/ws")
    assert config.keys == [] and config.outbox.backend == "memory"
    assert config.cluster.backend == "local" and not config.tls.enabled
    assert config.cluster.frame_claims is False
    assert config.url == "ws://127.0.0.1:18040/ws"


def test_full_file(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    path = write(tmp_path, f"""
# a comment
[hub]
host = "0.0.0.0"
port = 18444
path = "/hub"
log_level = "debug"

[tls]
certfile = "{cert}"
keyfile = "{cert}"

[limits]
max_message_size = 1_048_576
ping_interval = 0

[outbox]
backend = "sqlite"
path = "{tmp_path / 'outbox.sqlite3'}"

[cluster]
backend = "redis"
redis_url = "redis://127.0.0.1:6379/0"
frame_claims = true

[http]
dashboard = false

[[keys]]
key = "k1"
user = "maibot"
platforms = ["qq", "telegram"]

[[keys]]
key_env = "MY_SECRET"
user = "astrbot"
forward_to = "maibot"
""")
    config = load_config(path, env={"MY_SECRET": "from-env",
                                    "MAIM_HUB_ADMIN_TOKEN": "a-cluster-wide-token"})
    assert (config.host, config.port, config.path, config.log_level) == (
        "0.0.0.0", 18444, "/hub", "DEBUG")
    assert config.tls.enabled and config.url == "wss://0.0.0.0:18444/hub"
    assert config.limits.max_message_size == 1_048_576 and config.limits.ping_interval == 0
    assert config.outbox.backend == "sqlite" and config.cluster.backend == "redis"
    assert config.cluster.frame_claims is True
    assert config.http.dashboard is False and config.http.metrics is True
    assert [(k.key, k.user, k.platforms) for k in config.keys] == [
        ("k1", "maibot", ("qq", "telegram")), ("from-env", "astrbot", ())]
    assert config.keys[0].source == f"{path}:29"
    assert config.keys[1].forward_to == "maibot" and config.keys[0].forward_to is None


def test_errors_name_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, """[hub]
port = "eighty"
colour = "blue"

[limits]
ping_timeout = -1

[tls]
certfile = "/nonexistent/cert.pem"

[outbox]
backend = "sqlite"

[cluster]
backend = "redis"
redis_url = "http://x"

[[keys]]
key = "a"
user = "u"

[[keys]]
key = "a"
user = ""
platform = "qq"
forward_to = "nobody"

[mystery]
x = 1
""")
    text = problems_of(path, env={})
    assert f'{path}:2: hub.port: must be an integer (got "eighty")' in text
    assert f"{path}:3: unknown key 'hub.colour'" in text
    assert f"{path}:6: limits.ping_timeout: must be >= 0 (got -1)" in text
    assert f"{path}:9: tls.certfile: file not found" in text
    assert "TLS needs both tls.certfile and tls.keyfile" in text
    assert f"{path}:12: outbox.path: the sqlite outbox needs a file path" in text
    assert f"{path}:16: cluster.redis_url: must start with redis://" in text
    assert f"{path}:24: keys[1].user: must be a non-empty string" in text
    assert f"{path}:25: unknown key 'keys[1].platform'" in text
    assert f"{path}:28: unknown section or key 'mystery'" in text
    assert f"{path}:18: forward_to: no key maps to user 'nobody'" not in text  # entry invalid


def test_duplicate_keys_are_reported_without_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[[keys]]\nkey = "same-secret"\nuser = "a"\n'
                           '[[keys]]\nkey = "same-secret"\nuser = "b"\n')
    text = problems_of(path, env={})
    assert "listed twice" in text and f"{path}:4" in text and f"{path}:1" in text
    assert "same-secret" not in text


def test_toml_syntax_error_has_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[hub]\nport = 1\nhost = "unterminated\n')
    text = problems_of(path, env={})
    assert "TOML syntax error" in text and "line 3" in text


def test_missing_file() -> None:
    assert "cannot read config file" in problems_of("/nonexistent/hub.toml", env={})


def test_environment_overrides_file_and_command_line_overrides_environment(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, '[hub]\nport = 1000\nhost = "10.0.0.1"\n'
                           '[[keys]]\nkey = "file-key"\nuser = "f"\n')
    env: Dict[str, str] = {
        "MAIM_HUB_PORT": "2000", "MAIM_HUB_KEYS": "k1=user1,k2=user2:qq|tg",
        "MAIM_HUB_LIMITS_PING_INTERVAL": "5.5", "MAIM_HUB_HTTP_METRICS": "off",
        "MAIM_HUB_OUTBOX_BACKEND": "SQLITE", "MAIM_HUB_OUTBOX_PATH": str(tmp_path / "o.db"),
    }
    config = load_config(path, env=env)
    assert config.port == 2000 and config.host == "10.0.0.1"
    assert [(k.key, k.user, k.platforms) for k in config.keys] == [
        ("k1", "user1", ()), ("k2", "user2", ("qq", "tg"))]
    assert config.keys[0].source == "env MAIM_HUB_KEYS"
    assert config.limits.ping_interval == 5.5 and config.http.metrics is False
    assert config.outbox.backend == "sqlite"
    config = load_config(path, env=env, overrides={"hub.port": 3000, "keys": "c=cli"})
    assert config.port == 3000 and [(k.key, k.user) for k in config.keys] == [("c", "cli")]
    text = problems_of(path, env={"MAIM_HUB_PORT": "x"})
    assert 'env MAIM_HUB_PORT: hub.port: must be an integer (got "x")' in text
    text = problems_of(path, env={}, overrides={"hub.port": 70000})
    assert "--port: hub.port: must be between 0 and 65535" in text


def test_keys_spec() -> None:
    assert parse_keys_spec("a=b, c=d:qq|tg ,") == [
        ("a", "b", (), None), ("c", "d", ("qq", "tg"), None)]
    assert parse_keys_spec("x=y=z") == [("x=y", "z", (), None)]  # the last '=' splits
    assert parse_keys_spec("k=napcat>maibot:qq") == [("k", "napcat", ("qq",), "maibot")]
    with pytest.raises(ValueError):
        parse_keys_spec("novalue")
    with pytest.raises(ValueError):
        parse_keys_spec("=user")


def test_reserved_ws_path_and_key_env_missing(tmp_path: Path) -> None:
    path = write(tmp_path, '[hub]\npath = "/metrics"\n[[keys]]\nkey_env = "NOPE"\nuser = "u"\n')
    text = problems_of(path, env={})
    assert "/metrics is used by the hub's HTTP endpoints" in text
    assert f"{path}:4: keys[0].key_env: environment variable NOPE is not set" in text


def test_line_index() -> None:
    lines = line_index('a = 1\n[t]\nb = 2\n"c.d" = 3\n[[arr]]\nx = 1\n[[arr]]\nx = 2\n'
                       's = """\nfake = 1\n"""\n')
    assert lines["a"] == 1 and lines["t"] == 2 and lines["t.b"] == 3 and lines["t.c.d"] == 4
    assert lines["arr[0].x"] == 6 and lines["arr[1]"] == 7 and lines["arr[1].x"] == 8
    assert "arr[1].fake" not in lines


def test_key_table_lookup() -> None:
    table = KeyTable([KeyEntry("alpha", "u1"), KeyEntry("beta", "u2", ("qq",))])
    entry = table.lookup("alpha")
    assert entry is not None and entry.user == "u1"
    assert table.lookup("alph") is None and table.lookup("alphaa") is None
    assert table.lookup("") is None and table.lookup(None) is None
    assert table.users() == ["u1", "u2"] and len(table) == 2
    assert "alpha" not in repr(table.entries[0])  # the key is not in the repr
    assert table.entries[0].label.startswith("key#")


def test_hub_auth_callbacks_and_reasons() -> None:
    reasons = []
    auth = HubAuth(KeyTable([KeyEntry("alpha", "u1"), KeyEntry("beta", "u2", ("qq",))]),
                   on_reject=reasons.append)
    assert auth.on_auth({"api_key": "alpha", "platform": "any"}) is True
    assert auth.on_auth({"api_key": "beta", "platform": "qq"}) is True
    assert auth.on_auth({"api_key": "beta", "platform": "tg"}) is False
    assert auth.on_auth({"api_key": "", "platform": "qq"}) is False
    assert auth.on_auth({"api_key": "gamma", "platform": "qq"}) is False
    auth.accepting = False
    assert auth.on_auth({"api_key": "alpha", "platform": "qq"}) is False
    assert reasons == [PLATFORM_NOT_ALLOWED, MISSING_KEY, UNKNOWN_KEY, SHUTTING_DOWN]
    assert auth.on_auth_extract_user({"api_key": "beta"}) == "u2"
    assert auth.on_auth_extract_user({"api_key": "nope", "message_type": "outgoing"}) is None


def test_the_example_config_is_valid() -> None:
    from .conftest import ROOT

    config = load_config(str(ROOT / "examples" / "hub.toml"),
                         env={"NAPCAT_HUB_KEY": "k1", "MAIBOT_HUB_KEY": "k2"})
    assert [(k.user, k.forward_to) for k in config.keys] == [
        ("napcat", "maibot"), ("maibot", None)]


def test_forward_to_must_name_a_known_user(tmp_path: Path) -> None:
    path = write(tmp_path, '[[keys]]\nkey = "k"\nuser = "a"\nforward_to = "b"\n')
    assert f"{path}:1: forward_to: no key maps to user 'b'" in problems_of(path, env={})


def test_without_tomli_before_python_3_11_the_error_names_the_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setattr(sys, "version_info", (3, 10, 0))
    monkeypatch.setitem(sys.modules, "tomli", None)  # import tomli -> ImportError
    text = problems_of(write(tmp_path, "[hub]\nport = 1\n"))
    assert "tomli" in text and "maim_message[hub]" in text


def test_cluster_shard_urls_are_each_checked_and_shown_without_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, """
[cluster]
backend = "redis"
redis_url = "redis://127.0.0.1:6379/0,admin:s3cret@10.0.0.2:6379"
""")
    text = problems_of(path, env={})
    assert "cluster.redis_url: must start with redis://" in text
    assert "***@10.0.0.2:6379" in text and "s3cret" not in text


@pytest.mark.parametrize("url, problem", [
    ("redis://127.0.0.1:abc/0", "Port could not be cast to integer"),
    ("redis://127.0.0.1:99999/0", "Port out of range"),
    ("redis://:s3cret@127.0.0.1:6379/0?foo=bar", "unknown option ?foo="),
    ("redis://127.0.0.1:6379/0?socket_timeout=abc", "Invalid value for 'socket_timeout'"),
    ("redis://127.0.0.1:6379/zz", 'the database must be a number'),
    ("redis://127.0.0.1:6379/0,", "shard 2 is empty (a stray comma?)"),
    ("redis://:s3cr/et@127.0.0.1:6379/0", "percent-encode / ? # @ :"),  # redis-py: "s3cr"
    ("redis://:s3cret@127.0.0.1:abc/0", "Port could not be cast to integer"),
    ("redis://[::1:6379/0", "Invalid IPv6 URL"),
    ("rediss://127.0.0.1:6379/0?ssl_cert_reqs=false", "Invalid SSL Certificate"),
])
def test_a_redis_url_redis_py_would_refuse_at_start_is_a_config_problem(
        tmp_path: Path, url: str, problem: str) -> None:
    """Found by `--check-config` (exit 2, file:line), not by `serve` with a traceback."""
    path = write(tmp_path, f"""
[cluster]
backend = "redis"
redis_url = "{url}"
""")
    text = problems_of(path, env={})
    assert f"{path}:4: cluster.redis_url: " in text and problem in text
    assert "s3cr" not in text and text.count("cluster.redis_url") == 1


def test_a_missing_redis_url_is_one_problem(tmp_path: Path) -> None:
    text = problems_of(write(tmp_path, '\n[cluster]\nbackend = "redis"\n'), env={})
    assert "needs redis_url" in text and "must start with" not in text


def test_the_redis_backend_without_redis_py_is_a_config_problem(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve --check-config` says so, instead of `serve` failing with a traceback."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "redis" else real(name, *a))
    path = write(tmp_path, """
[cluster]
backend = "redis"
redis_url = "redis://127.0.0.1:6379/0"
""")
    text = problems_of(path, env={})
    assert f"{path}:3: cluster.backend: the redis backend needs redis-py: " \
           "pip install 'maim_message[cluster]'" in text


def test_check_config_names_every_shard_without_its_password(tmp_path: Path) -> None:
    import io

    from maim_message.hub.console import print_check

    path = write(tmp_path, """
[cluster]
backend = "redis"
redis_url = "redis://:s3cret@127.0.0.1:6379/0, redis://127.0.0.1:6380/0"
""")
    out = io.StringIO()
    print_check(load_config(path, env={"MAIM_HUB_KEYS": "k1aaaaaaaaaaaaaaaa=bot",
                                       "MAIM_HUB_ADMIN_TOKEN": "a-cluster-wide-token"}), out)
    text = out.getvalue()
    assert "redis://***@127.0.0.1:6379/0, redis://127.0.0.1:6380/0" in text
    assert "s3cret" not in text
    assert "outbox       the cluster's Redis streams" in text


def test_a_cluster_needs_its_keys_and_admin_token_configured(tmp_path: Path) -> None:
    """Each node would generate its own key and token: a client's key, an operator's
    token, would work on one node and be refused by the others."""
    path = write(tmp_path, """
[cluster]
backend = "redis"
redis_url = "redis://127.0.0.1:6379/0"
""")
    with pytest.raises(HubConfigError) as info:
        load_config(path, env={})
    text = str(info.value)
    assert "keys: a cluster needs its API keys configured" in text
    assert "admin.token: a cluster needs its admin token configured" in text
    config = load_config(path, env={"MAIM_HUB_KEYS": "k1aaaaaaaaaaaaaaaa=bot",
                                    "MAIM_HUB_ADMIN_TOKEN": "a-cluster-wide-token"})
    assert config.cluster.backend == "redis" and config.admin.configured
