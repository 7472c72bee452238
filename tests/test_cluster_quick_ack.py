"""A receiver that acks a message and disconnects at once (a `tail --count 1`) is not
sent it again on its next connection, in cluster mode as on a single node (real Redis).

The node collects acks for a moment before deleting their stream entries, and a message
sent by this node is acked before Redis answered with its entry: the ack must survive
the pair's last connection closing meanwhile."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import orjson
import pytest
import websockets

from .helpers_api import make_message
from .test_cluster import node, presence, redis_url, started  # noqa: F401

pytestmark = pytest.mark.timeout(60)


def headers(key: str, uuid: str) -> Dict[str, str]:
    return {"x-apikey": key, "x-platform": "qq", "x-uuid": uuid}


async def take_one_and_leave(port: int, uuid: str) -> Dict[str, Any]:
    """Read one standard message, ack it, close right away."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws",
                                  additional_headers=headers("bob", uuid)) as ws:
        while True:
            env = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            if env["type"] == "sys_std":
                await ws.send(orjson.dumps({
                    "ver": 1, "msg_id": f"ack-{env['msg_id']}", "type": "sys_ack",
                    "meta": {"uuid": uuid, "acked_msg_id": env["msg_id"]},
                    "payload": {"status": "received"}}).decode())
                return env


async def anything_within(port: int, uuid: str, seconds: float) -> List[Any]:
    got: List[Any] = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws",
                                  additional_headers=headers("bob", uuid)) as ws:
        try:
            while True:
                env = orjson.loads(await asyncio.wait_for(ws.recv(), seconds))
                if env["type"] == "sys_std":
                    got.append(env["payload"])
        except asyncio.TimeoutError:
            pass
    return got


@pytest.mark.parametrize("cross_node", [False, True])
async def test_an_ack_right_before_leaving_is_kept(redis_url: str,  # noqa: F811
                                                   cross_node: bool) -> None:
    sender, holder = node(redis_url, "s"), node(redis_url, "h")
    await started(sender, holder)
    try:
        for n in range(5):
            source = sender if cross_node else holder
            receiving = asyncio.ensure_future(take_one_and_leave(holder.port or 0, f"b{n}"))
            await presence(source, 1)
            await source.send_message(make_message(f"live{n}", "bob", "qq"))
            got = await asyncio.wait_for(receiving, 10)
            assert got["payload"]["message_segment"]["data"] == f"live{n}"
        again = await anything_within(holder.port or 0, "b-last", 1.0)
        assert again == []
    finally:
        for server in (sender, holder):
            await server.stop()
