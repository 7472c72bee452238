"""Edge cases of connection identity and targeting found in review."""

from __future__ import annotations

import asyncio
from typing import Any, List

import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from maim_message.server import WebSocketServer, create_server_config

from .helpers_api import make_message
from .test_delivery_backpressure import raw_handshake


def hub(**kw: Any) -> WebSocketServer:
    return WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, on_auth_extract_user=lambda m: m["api_key"], **kw))


async def test_another_user_cannot_take_over_a_connection_uuid() -> None:
    server = hub()
    await server.start()
    url = f"ws://127.0.0.1:{server.port}/ws"
    try:
        async with websockets.connect(url, additional_headers={
                "x-apikey": "victim", "x-platform": "qq", "x-uuid": "u-1"}) as victim:
            with pytest.raises(InvalidStatus) as info:
                async with websockets.connect(url, additional_headers={
                        "x-apikey": "attacker", "x-platform": "qq", "x-uuid": "u-1"}):
                    pass
            assert info.value.response.status_code == 409
            assert server.get_connection_info("u-1") == {"user_id": "victim", "platform": "qq"}
            await server.send_custom_message("note", {"n": 1}, connection_uuid="u-1")
            frame = orjson.loads(await asyncio.wait_for(victim.recv(), 5))
            assert frame["type"] == "custom_note"
    finally:
        await server.stop()


async def test_replaced_connection_does_not_report_a_disconnect() -> None:
    events: List[Any] = []
    server = hub(on_connect=lambda uuid, meta: events.append(("connect", uuid)),
                 on_disconnect=lambda uuid, meta: events.append(("disconnect", uuid)))
    await server.start()
    url = f"ws://127.0.0.1:{server.port}/ws"
    headers = {"x-apikey": "k", "x-platform": "qq", "x-uuid": "same"}
    try:
        old = await websockets.connect(url, additional_headers=headers)
        new = await websockets.connect(url, additional_headers=headers)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(old.recv(), 5)
        await asyncio.sleep(0.1)
        assert events == [("connect", "same"), ("connect", "same")]
        await new.close()
        for _ in range(100):
            if len(events) == 3:
                break
            await asyncio.sleep(0.02)
        assert events[-1] == ("disconnect", "same")
    finally:
        await server.stop()


async def test_message_for_one_connection_does_not_leak_to_its_siblings() -> None:
    server = hub()
    await server.start()
    url = f"ws://127.0.0.1:{server.port}/ws"
    try:
        async with websockets.connect(url, additional_headers={
                "x-apikey": "k", "x-platform": "qq", "x-uuid": "A"}) as a, \
                websockets.connect(url, additional_headers={
                    "x-apikey": "k", "x-platform": "qq", "x-uuid": "B"}) as b:
            await server.send_custom_message("only_a", {"x": 1}, connection_uuid="A")
            await server.send_message(make_message("both", "k", "qq"))
            got_b = []
            while len(got_b) < 1:
                frame = orjson.loads(await asyncio.wait_for(b.recv(), 5))
                got_b.append(frame["type"])
            assert got_b == ["sys_std"]
            first = orjson.loads(await asyncio.wait_for(a.recv(), 5))
            assert first["type"] == "custom_only_a"
    finally:
        await server.stop()


async def test_reconnect_backlog_respects_the_send_buffer_mark() -> None:
    server = hub(send_buffer_high=64 * 1024)
    await server.start()
    try:
        for n in range(3000):
            await server.send_message(make_message("x" * 10_000 + str(n), "slow", "qq"))
        reader, writer = await raw_handshake(server.port or 0, "slow")
        writer.transport.pause_reading()
        await asyncio.sleep(0.2)
        peer = next(iter(server.peers.values()))
        # only about the high-water mark (plus kernel buffers) was written; the rest waits
        assert peer.cursor < 3000
        assert peer.conn is not None and peer.conn.write_buffer_size() < 2 * 64 * 1024 + 2 * 10_100
        writer.transport.resume_reading()
        got = 0
        while got < 3000:
            head = await asyncio.wait_for(reader.readexactly(4), 5)
            length = int.from_bytes(head[2:4], "big")
            await reader.readexactly(length)
            got += 1
        writer.close()
    finally:
        await server.stop()
