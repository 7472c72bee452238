"""In-process hub: its frame/byte counters and the generated admin token across a reload.

Same-pair traffic (one connection of a pair to the pair's others) is counted once in
``frames_out`` / ``bytes_out``: Delivery counts every frame it writes, the hub must not add
it again. The admin token generated (and printed) at start-up stops working once the
operator configures one and reloads.
"""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import websockets

from maim_message.hub.config import load_config
from maim_message.hub.runner import Hub
from maim_message.hub.settings import AdminSettings, HubConfig

from .conftest import free_port
from .helpers_api import envelope, make_message, recv_json

KEY = "pair-key-counts-0001"


def hub_config(tmp_path: Path) -> HubConfig:
    path = tmp_path / "hub.toml"
    path.write_text(textwrap.dedent(f"""
        [hub]
        host = "127.0.0.1"
        port = {free_port()}
        status_interval = 0
        [limits]
        rate_limit_per_second = 0
        [[keys]]
        key = "{KEY}"
        user = "u"
    """), encoding="utf-8")
    return load_config(path, env={})


async def test_same_pair_forwards_are_counted_once_in_frames_and_bytes(tmp_path: Path) -> None:
    hub = Hub(hub_config(tmp_path))
    await hub.start()
    url = f"ws://127.0.0.1:{hub.port}/ws?api_key={KEY}&platform=qq"
    try:
        async with websockets.connect(url, additional_headers={"x-uuid": "receiver"}) as rx, \
                websockets.connect(url, additional_headers={"x-uuid": "sender"}) as tx:
            before = hub.snapshot()
            sent_bytes = 0
            for n in range(5):
                await tx.send(envelope(f"m{n}", make_message(f"hi {n}", KEY, "qq").to_dict()))
                assert (await recv_json(tx, 10))["type"] == "sys_ack"
                raw = await rx.recv()
                frame = raw.encode() if isinstance(raw, str) else raw
                assert b'"sys_std"' in frame
                sent_bytes += len(frame)
            after = hub.snapshot()
        # 5 forwards + 5 acks to the sender, each frame once
        assert after["messages_out"] - before["messages_out"] == 5
        assert after["frames_out"] - before["frames_out"] == 10
        forwarded = after["bytes_out"] - before["bytes_out"]
        assert sent_bytes < forwarded < 2 * sent_bytes  # the forwards once, plus the acks
    finally:
        await hub.shutdown()


OTHER = "pair-key-counts-0002"


async def test_a_message_held_for_an_offline_receiver_counts_out_when_written(
        tmp_path: Path) -> None:
    """`send` to a user who is away, then the user connects: one message in, one out."""
    hub_config(tmp_path)  # writes hub.toml; a second key is added below
    path = tmp_path / "hub.toml"
    path.write_text(path.read_text() + textwrap.dedent(f"""
        [[keys]]
        key = "{OTHER}"
        user = "v"
        """))
    hub = Hub(load_config(path, env={}))
    await hub.start()
    base = f"ws://127.0.0.1:{hub.port}/ws?platform=qq&api_key="
    try:
        async with websockets.connect(base + KEY) as tx:
            await tx.send(envelope("held", make_message("for v", OTHER, "qq").to_dict()))
            assert (await recv_json(tx, 10))["type"] == "sys_ack"
        held = hub.snapshot()
        assert held["messages_in"] == 1 and held["messages_out"] == 0
        async with websockets.connect(base + OTHER) as rx:
            assert b'"for v"' in (await rx.recv()).encode()
            assert hub.snapshot()["messages_out"] == 1
    finally:
        await hub.shutdown()
    assert hub.messages_out == 1  # closed connections still count


def test_generated_admin_token_stops_working_once_a_token_is_configured() -> None:
    cfg = HubConfig(port=0)
    new = copy.deepcopy(cfg)
    new.admin = AdminSettings(token="operator-chosen-token-0123456789")
    hub = Hub(cfg, loader=lambda: copy.deepcopy(new))
    generated = hub.generated_admin_token
    assert generated and hub.admin_check.allows({"authorization": f"Bearer {generated}"})
    assert hub.reload()["ok"]
    assert hub.generated_admin_token is None
    assert hub.admin_check.allows({"authorization": f"Bearer {new.admin.token}"})
    assert not hub.admin_check.allows({"authorization": f"Bearer {generated}"})


def test_generated_admin_token_is_kept_by_a_reload_that_configures_none() -> None:
    cfg = HubConfig(port=0)
    hub = Hub(cfg, loader=lambda: copy.deepcopy(cfg))
    generated = hub.generated_admin_token
    assert hub.reload()["ok"]
    assert hub.admin_check.allows({"authorization": f"Bearer {generated}"})
