"""The admin plane's logic without sockets: tokens, hashed keys, revocation, reload diffs,
JSON log lines, outbox previews."""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path

import orjson
import pytest

from maim_message.core.identity import fingerprint
from maim_message.core.redact import Redactor
from maim_message.hub.admin import preview
from maim_message.hub.admin_auth import TokenCheck, presented_token
from maim_message.hub.auth import KeyTable
from maim_message.hub.config import HubConfigError, load_config
from maim_message.hub.jsonlog import JsonFormatter
from maim_message.hub.reload import apply_reloadable, compare
from maim_message.hub.settings import HubConfig, KeyEntry

TOKEN = "admin-token-0123456789abcdef"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_presented_token_bearer_and_basic_password() -> None:
    assert presented_token({"authorization": f"Bearer {TOKEN}"}) == TOKEN
    assert presented_token({"authorization": f"bearer   {TOKEN} "}) == TOKEN
    assert presented_token({"authorization": basic("prometheus", TOKEN)}) == TOKEN
    assert presented_token({"authorization": "Basic !!!not-base64"}) is None
    assert presented_token({"authorization": basic("only-user", "")}) is None
    assert presented_token({"authorization": f"Token {TOKEN}"}) is None
    assert presented_token({}) is None


def test_token_check_plain_and_hashed() -> None:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    for check in (TokenCheck([TOKEN]), TokenCheck([], [digest]), TokenCheck([None, TOKEN])):
        assert check.allows({"authorization": f"Bearer {TOKEN}"})
        assert not check.allows({"authorization": f"Bearer {TOKEN}x"})
        assert not check.allows({})
    empty = TokenCheck([None], [None])
    assert not empty and not empty.allows({"authorization": "Bearer "})


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hub.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_hashed_keys_load_and_look_up_like_plain_ones(tmp_path: Path) -> None:
    key = "a-key-that-is-only-hashed"
    digest = hashlib.sha256(key.encode()).hexdigest().upper()  # hex case does not matter
    config = load_config(write(tmp_path, f'[[keys]]\nkey_sha256 = "{digest}"\nuser = "u"\n'),
                         env={})
    (entry,) = config.keys
    assert entry.key == "" and entry.label == fingerprint(key)
    table = KeyTable(config.keys)
    assert table.lookup(key) is entry and table.lookup(key + "x") is None
    assert table.by_label(fingerprint(key)) == [entry]


def test_hashed_key_problems_name_their_line(tmp_path: Path) -> None:
    text = ('[[keys]]\nkey_sha256 = "abc"\nuser = "u"\n\n'
            '[[keys]]\nkey = "k1"\nkey_sha256 = "' + "0" * 64 + '"\nuser = "v"\n')
    path = write(tmp_path, text)
    with pytest.raises(HubConfigError) as info:
        load_config(path, env={})
    problems = "\n".join(info.value.problems)
    assert f"{path}:2: keys[0].key_sha256: must be 64 hex digits" in problems
    assert f"{path}:5: keys[1]: give one of key, key_env or key_sha256, not key and key_sha256" \
        in problems


def test_admin_section_from_file_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[admin]\nprotect_metrics = true\n")
    config = load_config(path, env={"MAIM_HUB_ADMIN_TOKEN": TOKEN})
    assert config.admin.token == TOKEN and config.admin.metrics_protected
    with pytest.raises(HubConfigError) as info:
        load_config(path, env={"MAIM_HUB_ADMIN_TOKEN": "short"})
    assert "env MAIM_HUB_ADMIN_TOKEN: admin.token: must be at least 16" in str(info.value)
    assert TOKEN not in repr(config.admin)


def test_revoked_keys_are_refused_and_known_as_revoked() -> None:
    entry = KeyEntry("revoke-me-please", "u")
    revoked: set = set()
    table = KeyTable([entry], revoked)
    assert table.lookup("revoke-me-please") is entry
    revoked.add(entry.digest)
    assert table.lookup("revoke-me-please") is None
    assert table.is_revoked("revoke-me-please") and not table.is_revoked("other")


def test_compare_splits_reloadable_from_restart_needed() -> None:
    old = HubConfig(keys=[KeyEntry("k1", "a")])
    new = HubConfig(keys=[KeyEntry("k1", "a"), KeyEntry("k2", "b")], port=1, log_level="DEBUG")
    new.limits.rate_limit_per_second = 10.0
    new.limits.max_message_size = 2048
    new.admin.token = TOKEN
    new.tls.certfile = "/c.pem"
    applied, restart = compare(old, new)
    assert applied == ["hub.log_level ('INFO' -> 'DEBUG')", "keys (1 -> 2)",
                       "limits.rate_limit_per_second (5000.0 -> 10.0)", "admin.token"]
    assert restart == ["hub.port (18040 -> 1)", "tls.certfile (None -> '/c.pem')",
                       "limits.max_message_size (104857600 -> 2048)"]
    assert all(TOKEN not in line for line in applied + restart)
    apply_reloadable(old, new)
    assert len(old.keys) == 2 and old.log_level == "DEBUG" and old.admin.token == TOKEN
    assert old.port == 18040 and old.limits.max_message_size == 104857600  # kept
    assert compare(old, old) == ([], [])


def test_json_formatter_fields_and_redaction() -> None:
    secret = "a-secret-key-0123456789"
    formatter = JsonFormatter(Redactor([secret]))
    record = logging.LogRecord("maim_message.x", logging.INFO, __file__, 1,
                               "closed %s with %s", ("uuid-1", secret), None)
    record.__dict__.update({"uuid": "uuid-1", "user": "napcat", "platform": "qq",
                            "close_code": 4003})
    line = formatter.format(record)
    obj = orjson.loads(line)
    assert "\n" not in line and secret not in line
    assert obj["msg"] == f"closed uuid-1 with {fingerprint(secret)}"
    assert (obj["uuid"], obj["user"], obj["platform"], obj["close_code"]) == (
        "uuid-1", "napcat", "qq", 4003)
    assert obj["level"] == "INFO" and obj["logger"] == "maim_message.x"
    assert obj["ts"].endswith("Z")


def test_outbox_preview_shows_the_text_or_the_type() -> None:
    std = {"type": "sys_std", "payload": {"message_segment": {"type": "seglist", "data": [
        {"type": "text", "data": "hello"}, {"type": "image", "data": "..."}]}}}
    assert preview(orjson.dumps(std)) == "hello [image]"
    custom = {"type": "custom_note", "payload": {"x": 1}}
    assert preview(orjson.dumps(custom)) == 'custom_note: {"x":1}'
    assert preview(b"not json \xff") == "not json \ufffd"
