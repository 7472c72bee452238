"""Durable hub: SIGTERM with messages in flight, restart, and nothing is lost or doubled."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Dict, List

from maim_message.client import WebSocketClient, create_client_config

from .helpers_api import make_message
from .test_hub_process import HubProcess

ADAPTER_KEY = "adapter-secret-0123456789"
CORE_KEY = "core-secret-9876543210"
TOTAL = 300


def durable_config(db: Path) -> str:
    return f"""
    [hub]
    status_interval = 0

    [limits]
    shutdown_grace = 5.0

    [outbox]
    backend = "sqlite"
    path = "{db}"

    [[keys]]
    key = "{ADAPTER_KEY}"
    user = "napcat"
    forward_to = "maibot"

    [[keys]]
    key = "{CORE_KEY}"
    user = "maibot"
    """


async def test_sigterm_mid_stream_then_restart_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = await HubProcess(tmp_path / "a").start(durable_config(db))
    port = first.port
    adapter = WebSocketClient(create_client_config(
        first.ws_url, ADAPTER_KEY, platform="qq", reconnect_delay=0.05,
        max_reconnect_delay=0.2, max_reconnect_attempts=0))
    got: List[int] = []
    done = asyncio.Event()

    def record(message: Any, meta: Dict[str, Any]) -> None:
        got.append(int(message.message_segment.data))
        if len(set(got)) >= TOTAL:
            done.set()

    core = None
    second = None
    try:
        assert await adapter.connect()
        # the bot core is offline: everything the adapter sends waits in the hub's outbox
        for n in range(TOTAL):
            assert await adapter.send_message(make_message(str(n), ADAPTER_KEY, "qq"))
        assert await first.terminate() == 0  # SIGTERM right away, messages still in flight
        second = HubProcess(tmp_path / "b")
        second.port = port
        await second.start(durable_config(db))
        core = WebSocketClient(create_client_config(
            second.ws_url, CORE_KEY, platform="qq", on_message=record))
        assert await core.connect()
        await asyncio.wait_for(done.wait(), 30)
        await asyncio.sleep(0.2)  # a duplicate would arrive right behind
        assert sorted(set(got)) == list(range(TOTAL))
        assert len(got) == len(set(got)), "a message reached the bot core twice"
        assert got == sorted(got), "order was not kept"
    finally:
        await adapter.stop()
        if core is not None:
            await core.stop()
        first.kill()
        if second is not None:
            assert await second.terminate() == 0
