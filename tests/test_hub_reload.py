"""Keys and config without a restart, hashed keys and JSON logs, through the hub process.

SIGHUP re-reads the config and its keys file: a new key gets in and nobody is dropped; a
removed key's connections close (4003); a broken file is refused with file:line errors and
the hub keeps its old keys; changes that need a restart are named.
"""

from __future__ import annotations

import hashlib
import signal
import textwrap
from pathlib import Path
from typing import Any, Dict, List

import orjson
import websockets

from .helpers_api import recv_until
from .test_hub_process import (
    HubProcess,
    close_code,
    expect_refusal,
    hub_factory,  # noqa: F401
    std,
    until,
)

KEY_A = "napcat-key-aaaaaaaaaaaaaaaa"
KEY_B = "telegram-key-bbbbbbbbbbbbbbbb"
CORE_KEY = "core-key-cccccccccccccccccc"
CORE_SHA256 = hashlib.sha256(CORE_KEY.encode()).hexdigest()
CONFIG = f"""
    [hub]
    status_interval = 0
    keys_file = "keys.toml"

    [[keys]]
    key_sha256 = "{CORE_SHA256}"   # the bot core's key, stored only as its hash
    user = "maibot"
"""


def keys_file(*entries: str) -> str:
    return "\n".join(textwrap.dedent(e) for e in entries)


def key_entry(key: str, user: str) -> str:
    return f'[[keys]]\nkey = "{key}"\nuser = "{user}"\nforward_to = "maibot"\n'


def connect(hub: HubProcess, key: str, platform: str = "qq") -> Any:
    return websockets.connect(hub.ws_url, additional_headers={"x-apikey": key,
                                                              "x-platform": platform})


async def keys_count(hub: HubProcess, n: int) -> bool:
    return len(await hub.admin("/api/admin/keys")) == n


async def start(hub_factory: Any, keys: str) -> HubProcess:  # noqa: F811
    hub: HubProcess = hub_factory()
    (hub.workdir / "keys.toml").write_text(keys, encoding="utf-8")
    return await hub.start(CONFIG)


def sighup(hub: HubProcess) -> None:
    assert hub.proc is not None
    hub.proc.send_signal(signal.SIGHUP)  # the PID we started


async def test_sighup_adds_a_key_without_dropping_anyone(hub_factory: Any) -> None:  # noqa: F811
    hub = await start(hub_factory, key_entry(KEY_A, "napcat"))
    assert CORE_KEY not in (hub.workdir / "hub.toml").read_text()  # only its hash
    async with connect(hub, KEY_A) as adapter, connect(hub, CORE_KEY) as core:
        await until(lambda: _connections(hub, 2), what="2 connections")
        assert await expect_refusal(hub.ws_url, {"x-apikey": KEY_B}) == 403
        (hub.workdir / "keys.toml").write_text(
            keys_file(key_entry(KEY_A, "napcat"), key_entry(KEY_B, "tg")), encoding="utf-8")
        sighup(hub)
        await until(lambda: keys_count(hub, 3), what="the reloaded keys file")
        async with connect(hub, KEY_B, "telegram") as newcomer:
            await until(lambda: _connections(hub, 3), what="3 connections")
            # nobody was dropped: the adapter's message still reaches the (hashed-key) core
            await adapter.send(std("a1", "after reload", KEY_A, "qq"))
            frame = await recv_until(core, "sys_std")
            assert frame["payload"]["message_segment"]["data"] == "after reload"
            await newcomer.send(std("b1", "hi", KEY_B, "telegram"))
            assert (await recv_until(newcomer, "sys_ack"))["meta"]["acked_msg_id"] == "b1"
        assert "configuration reloaded: keys (2 -> 3)" in hub.stderr()

        # a key removed from the file: its connection closes (4003), it cannot come back
        (hub.workdir / "keys.toml").write_text(key_entry(KEY_B, "tg"), encoding="utf-8")
        sighup(hub)
        assert await close_code(adapter) == 4003
        assert await expect_refusal(hub.ws_url, {"x-apikey": KEY_A}) == 403
        await core.send(std("c1", "core stays", CORE_KEY, "qq"))
        assert (await recv_until(core, "sys_ack"))["meta"]["acked_msg_id"] == "c1"
    logs = hub.logs()
    assert KEY_A not in logs and KEY_B not in logs and CORE_KEY not in logs
    assert await hub.terminate() == 0


async def _connections(hub: HubProcess, n: int) -> bool:
    return len(await hub.admin("/api/admin/connections")) == n


async def test_broken_keys_file_keeps_the_running_keys(hub_factory: Any) -> None:  # noqa: F811
    hub = await start(hub_factory, key_entry(KEY_A, "napcat"))
    keys_path = hub.workdir / "keys.toml"
    async with connect(hub, KEY_A) as adapter:
        await until(lambda: _connections(hub, 1), what="1 connection")
        # line 6: a key with an empty user; line 9: a platform list that is not a list
        keys_path.write_text(
            key_entry(KEY_A, "napcat")
            + f'\n[[keys]]\nkey = "{KEY_B}"\nuser = ""\n\n[[keys]]\nkey = "x-key-0000000000"\n'
            'user = "x"\nplatforms = 7\n', encoding="utf-8")
        sighup(hub)
        await until(lambda: "reload refused (" in hub.stderr(), what="the refusal in the log")
        err = hub.stderr()
        assert f"reload refused: {keys_path}:8: keys[1].user: must be a non-empty" in err, err
        assert f"reload refused: {keys_path}:13: keys[2].platforms" in err, err
        assert hub.proc is not None and hub.proc.poll() is None  # still running
        # the running keys: A still works (and its connection was kept), B is not in
        await adapter.send(std("a1", "x", KEY_A, "qq"))
        assert (await recv_until(adapter, "sys_ack"))["meta"]["acked_msg_id"] == "a1"
        assert await expect_refusal(hub.ws_url, {"x-apikey": KEY_B}) == 403
        # a TOML syntax error names its line too; the admin call answers 422 with it
        keys_path.write_text('[[keys]]\nkey = "k"\nuser = \n', encoding="utf-8")
        status, _, body = await hub.request("POST", "/api/admin/reload", {})
        assert status == 422 and f"{keys_path}:3: TOML syntax error".encode() in body, body
        assert len(await hub.admin("/api/admin/connections")) == 1
    assert await hub.terminate() == 0


async def test_reload_names_what_needs_a_restart(hub_factory: Any) -> None:  # noqa: F811
    hub = await start(hub_factory, key_entry(KEY_A, "napcat"))
    config = hub.workdir / "hub.toml"
    config.write_text(config.read_text() + "\n[limits]\nmax_message_size = 65536\n"
                      "rate_limit_per_second = 100\n", encoding="utf-8")
    answer = await hub.admin("/api/admin/reload", {})
    assert answer["ok"] is True
    assert answer["restart_needed"] == ["limits.max_message_size (104857600 -> 65536)"]
    assert answer["applied"] == ["limits.rate_limit_per_second (5000.0 -> 100.0)"]
    assert "limits.max_message_size (104857600 -> 65536) needs a restart" in hub.stderr()
    assert await hub.terminate() == 0


async def test_json_logs_one_object_per_line_never_a_key(hub_factory: Any) -> None:  # noqa: F811
    hub: HubProcess = hub_factory()
    (hub.workdir / "keys.toml").write_text(key_entry(KEY_A, "napcat"), encoding="utf-8")
    await hub.start(CONFIG, args=["--log-format", "json"])
    async with connect(hub, KEY_A) as adapter:
        await until(lambda: _connections(hub, 1), what="1 connection")
        await adapter.send(std("j1", "x", KEY_A, "qq"))
        await recv_until(adapter, "sys_ack")
    await until(lambda: _connections(hub, 0), what="the disconnect")
    assert await expect_refusal(hub.ws_url, {"x-apikey": KEY_B, "x-platform": "qq"}) == 403
    assert await hub.terminate() == 0
    err = hub.stderr()
    records: List[Dict[str, Any]] = [orjson.loads(line) for line in err.splitlines() if line]
    assert records and all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    opened = [r for r in records if r["msg"].startswith("connected ")]
    assert opened and opened[0]["user"] == "napcat" and opened[0]["platform"] == "qq"
    assert opened[0]["uuid"] and opened[0]["key_fingerprint"].startswith("key#")
    closed = [r for r in records if r["msg"].startswith("disconnected ")]
    assert closed and closed[0]["close_code"] == 1000 and closed[0]["uuid"] == opened[0]["uuid"]
    for secret in (KEY_A, KEY_B, CORE_KEY):
        assert secret not in err and secret not in hub.stdout()


def test_keygen_hash_prints_a_matching_digest(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "maim_message", "keygen", "--hash"],
                         capture_output=True, text=True, timeout=60, check=True)
    key, line = out.stdout.strip().splitlines()
    assert line == f'key_sha256 = "{hashlib.sha256(key.encode()).hexdigest()}"'
