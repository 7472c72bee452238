"""Raw clients that never ack get no replay flood; ones that ack get unacked messages again."""

from __future__ import annotations

import asyncio
from typing import Any, List

import orjson
import websockets

from maim_message.server import WebSocketServer, create_server_config

from .helpers_api import make_message


async def texts(ws: Any, n: int, timeout: float = 5.0) -> List[str]:
    got: List[str] = []
    while len(got) < n:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
        if frame.get("type") == "sys_std":
            got.append(frame["payload"]["message_segment"]["data"])
    return got


async def nothing_more(ws: Any) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), 0.3)
    except asyncio.TimeoutError:
        return True
    return False


async def test_non_acking_raw_client_is_not_flooded_on_reconnect() -> None:
    await check_not_flooded(WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, on_auth_extract_user=lambda m: m["api_key"])))


async def check_not_flooded(server: WebSocketServer) -> None:
    await server.start()
    url = f"ws://127.0.0.1:{server.port}/ws?api_key=raw&platform=qq"
    try:
        async with websockets.connect(url) as ws:
            for n in range(5):
                await server.send_message(make_message(f"old{n}", "raw", "qq"))
            assert await texts(ws, 5) == [f"old{n}" for n in range(5)]
        for _ in range(100):
            if server.get_connection_count() == 0:
                break
            await asyncio.sleep(0.02)
        for n in range(2):
            await server.send_message(make_message(f"new{n}", "raw", "qq"))
        async with websockets.connect(url) as ws:
            assert await texts(ws, 2) == ["new0", "new1"]  # queued while offline
            assert await nothing_more(ws)  # the five it already got are not replayed
    finally:
        await server.stop()


async def test_acking_raw_client_gets_unacked_messages_again() -> None:
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, on_auth_extract_user=lambda m: m["api_key"]))
    await server.start()
    url = f"ws://127.0.0.1:{server.port}/ws?api_key=acker&platform=qq"
    try:
        async with websockets.connect(url) as ws:
            await server.send_message(make_message("first", "acker", "qq"))
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            await ws.send(orjson.dumps({"type": "sys_ack", "msg_id": "a1",
                                        "meta": {"acked_msg_id": frame["msg_id"]}}).decode())
            for _ in range(100):
                if server.get_stats()["delivery"]["outbox_depth"] == 0:
                    break
                await asyncio.sleep(0.02)
            assert server.get_stats()["delivery"]["outbox_depth"] == 0
            await server.send_message(make_message("unacked", "acker", "qq"))
            assert await texts(ws, 1) == ["unacked"]  # received, but never acked
        async with websockets.connect(url) as ws:
            assert await texts(ws, 1) == ["unacked"]  # so it comes again
    finally:
        await server.stop()
