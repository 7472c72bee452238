"""``send_message(..., ack_timeout=...)`` when the receiver's node dies (real redis-server,
the receiver's node a ``python -m maim_message serve`` process killed with SIGKILL).

The receiver got the message on node B and had not acked it when B died; it reconnects
to node C, which reads the message from the pair's stream (a takeover) and delivers it;
the receiver acks on C. The sender on node A must hear of that ack. Before, A waited out
its whole ack_timeout and reported the message as not acked.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Dict

import websockets

from maim_message.server import WebSocketServer

from .helpers_api import make_message, recv_until
from .test_cluster import node, redis_url, started  # noqa: F401  (redis_url: fixture)
from .test_hub_process import HubProcess, ack

BOB = "bob-receiver-key-0123456789"
HEADERS = {"x-apikey": BOB, "x-platform": "qq", "x-uuid": "bob-connection-1"}


async def registered(server: WebSocketServer, timeout: float = 10.0) -> None:
    """Wait (bounded) until the cluster's presence shows a connection on another node."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await server.cluster.refresh()  # type: ignore[attr-defined]
        if any(info.get("node") not in (None, server.cluster.node_id)
               for info in server.get_connections().values()):
            return
        assert asyncio.get_running_loop().time() < deadline, "never registered"
        await asyncio.sleep(0.05)


def hub_config(url: str) -> str:
    # node() maps an api_key to the user of the same name: so does this key table
    return f"""
    [hub]
    status_interval = 0

    [cluster]
    backend = "redis"
    redis_url = "{url}"

    [[keys]]
    key = "{BOB}"
    user = "{BOB}"
    """


async def test_the_sender_hears_the_ack_the_receiver_gave_after_a_takeover(
        tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    a, c = await started(node(redis_url, "a"), node(redis_url, "c"))
    b = await HubProcess(tmp_path).start(hub_config(redis_url))
    try:
        async with websockets.connect(b.ws_url, additional_headers=HEADERS) as on_b:
            await registered(a)  # bob's connection on b is in Redis
            sending = asyncio.ensure_future(a.send_message(
                make_message("for bob", BOB, "qq"), ack_timeout=20.0))
            frame: Dict[str, Any] = await recv_until(on_b, "sys_std", 10)  # not acked
            b.kill()  # SIGKILL, by its PID
        async with websockets.connect(f"ws://127.0.0.1:{c.port}/ws",
                                      additional_headers=HEADERS) as on_c:
            again = await recv_until(on_c, "sys_std", 10)  # from the stream
            assert again["msg_id"] == frame["msg_id"]
            await on_c.send(ack(again))
            result = await asyncio.wait_for(sending, 25)
        assert result == {"bob-connection-1": True}, result
        assert c.cluster.stats()["takeovers"] == 1  # type: ignore[attr-defined]
    finally:
        b.kill()
        await a.stop()
        await c.stop()
