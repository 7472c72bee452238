"""Adapter -> hub (sqlite outbox) -> bot while the hub is SIGKILLed at random points.

Issue 14 item 1: the hub acked frames before their forward was committed, so a kill lost
them in blocks of 16 (one read slice). The hub now acks a frame only once its forward and
the frame's id are committed (one commit per event-loop turn), so every frame is either
acked and durable, or not acked and re-sent by the adapter's client; a re-send of a frame
the dead hub had already forwarded is recognised from the committed ids.

``MAIM_SIGKILL_KILLS`` / ``MAIM_SIGKILL_MESSAGES`` / ``MAIM_SIGKILL_SEED`` change the run.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any, Dict, List

from maim_message.client import WebSocketClient, create_client_config

from .helpers_api import make_message
from .test_hub_durable import ADAPTER_KEY, CORE_KEY, durable_config
from .test_hub_process import HubProcess

KILLS = int(os.environ.get("MAIM_SIGKILL_KILLS", "12"))
TOTAL = int(os.environ.get("MAIM_SIGKILL_MESSAGES", "4000"))
SEED = int(os.environ.get("MAIM_SIGKILL_SEED", "14"))


def client(url: str, key: str, **kwargs: Any) -> WebSocketClient:
    return WebSocketClient(create_client_config(
        url, key, platform="qq", reconnect_delay=0.05, max_reconnect_delay=0.2,
        max_reconnect_attempts=0, **kwargs))


async def wait_while_progressing(
    done: asyncio.Event, got: List[int], quiet: float, limit: float
) -> None:
    """Until ``done``, or ``quiet`` seconds without a new message, at most ``limit`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    seen, last_change = len(got), loop.time()
    while not done.is_set() and loop.time() < deadline:
        try:
            await asyncio.wait_for(done.wait(), 0.5)
        except asyncio.TimeoutError:
            pass
        if len(got) != seen:
            seen, last_change = len(got), loop.time()
        elif loop.time() - last_change > quiet:
            return


async def test_sigkill_at_random_points_loses_nothing_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    db = tmp_path / "outbox.sqlite3"
    config = durable_config(db)
    (tmp_path / "h0").mkdir()
    hub = await HubProcess(tmp_path / "h0").start(config)
    port = hub.port
    got: List[int] = []
    everything = asyncio.Event()

    def record(message: Any, meta: Dict[str, Any]) -> None:
        got.append(int(message.message_segment.data))
        if len(set(got)) >= TOTAL:
            everything.set()

    bot = client(hub.ws_url, CORE_KEY, on_message=record)
    adapter = client(hub.ws_url, ADAPTER_KEY)

    async def produce() -> None:
        for n in range(TOTAL):
            # queued by the client while the hub is down; re-sent until acked
            assert await adapter.send_message(make_message(str(n), ADAPTER_KEY, "qq"))
            if n % 8 == 7:
                await asyncio.sleep(0.01)  # bursts of 8, ~500 messages/s

    hubs = [hub]
    try:
        assert await bot.connect() and await adapter.connect()
        producer = asyncio.ensure_future(produce())
        for kill in range(1, KILLS + 1):
            await asyncio.sleep(rng.uniform(0.05, 0.6))
            hub.kill()  # SIGKILL of the PID we started
            (tmp_path / f"h{kill}").mkdir()
            hub = HubProcess(tmp_path / f"h{kill}")
            hub.port = port
            hubs.append(hub)
            await hub.start(config)
        await asyncio.wait_for(producer, 120)
        await wait_while_progressing(everything, got, quiet=10.0, limit=120.0)
        await asyncio.sleep(0.5)  # a duplicate would arrive right behind
        lost = TOTAL - len(set(got))
        doubled = len(got) - len(set(got))
        figures = f"kills={KILLS} messages={TOTAL} lost={lost} doubled={doubled}"
        print(figures)
        assert lost == 0 and doubled == 0, figures
        assert "Traceback" not in hub.stderr() + hub.stdout(), hub.logs()
    finally:
        await adapter.stop()
        await bot.stop()
        for each in hubs:
            each.kill()
