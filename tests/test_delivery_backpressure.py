"""Backpressure and the offline queue: bounded hub memory, spill to outbox, then close."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

from maim_message.client import WebSocketClient, create_client_config
from maim_message.server import WebSocketServer, create_server_config

from .helpers_api import make_message


async def raw_handshake(port: int, key: str) -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /ws?api_key={key}&platform=qq HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


async def test_slow_consumer_spills_to_outbox_then_is_closed_1008() -> None:
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, on_auth_extract_user=lambda m: m["api_key"],
        send_buffer_high=64 * 1024, outbox_max_per_pair=50, slow_consumer_timeout=0.5,
        ping_interval=0.2, ping_timeout=30, close_timeout=0.5))
    await server.start()
    try:
        _reader, writer = await raw_handshake(server.port or 0, "slow")
        writer.transport.pause_reading()  # a peer that stops reading
        big = "x" * 20_000
        peak_buffer = 0
        for n in range(400):
            await server.send_message(make_message(big, "slow", "qq", str(n)))
            peer = next(iter(server.peers.values()), None)
            if peer is not None and peer.conn is not None:
                peak_buffer = max(peak_buffer, peer.conn.write_buffer_size())
            await asyncio.sleep(0)
        delivery = server.get_stats()["delivery"]
        assert delivery["outbox_depth"] <= 50
        assert delivery["evicted"] >= 300
        # the kernel socket buffers absorb some; the hub's own buffer stays near the mark
        assert peak_buffer < 64 * 1024 + 2 * 21_000
        for _ in range(100):
            if server.get_connection_count() == 0:
                break
            await asyncio.sleep(0.05)
        assert server.get_connection_count() == 0
        writer.close()
    finally:
        await server.stop()


async def test_offline_user_gets_queued_messages_in_order_on_connect() -> None:
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, on_auth_extract_user=lambda m: m["api_key"]))
    await server.start()
    got: List[str] = []
    done = asyncio.Event()

    def record(message: Any, meta: Dict[str, Any]) -> None:
        got.append(message.message_segment.data)
        if len(got) == 20:
            done.set()

    try:
        for n in range(20):
            assert await server.send_message(make_message(str(n), "late", "qq")) == {}
        assert server.get_stats()["delivery"]["outbox_depth"] == 20
        client = WebSocketClient(create_client_config(
            f"ws://127.0.0.1:{server.port}/ws", "late", platform="qq", on_message=record))
        assert await client.connect()
        await asyncio.wait_for(done.wait(), 5)
        assert got == [str(n) for n in range(20)]
        for _ in range(100):
            if server.get_stats()["delivery"]["outbox_depth"] == 0:
                break
            await asyncio.sleep(0.02)
        assert server.get_stats()["delivery"]["outbox_depth"] == 0
        acked = await server.send_message(make_message("ack me", "late", "qq"), ack_timeout=5)
        assert list(acked.values()) == [True]
        await client.stop()
    finally:
        await server.stop()


async def test_client_queues_while_reconnecting_and_resends() -> None:
    got: List[str] = []
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, on_message=lambda m, meta: got.append(m.message_segment.data)))
    await server.start()
    port = server.port
    client = WebSocketClient(create_client_config(
        f"ws://127.0.0.1:{port}/ws", "k", reconnect_delay=0.05, max_reconnect_delay=0.1,
        max_reconnect_attempts=0))
    try:
        assert await client.connect()
        await server.stop()
        for _ in range(100):
            if not client.is_connected():
                break
            await asyncio.sleep(0.02)
        for n in range(10):
            assert await client.send_message(make_message(str(n), "srv", "qq"))
        server = WebSocketServer(create_server_config(
            host="127.0.0.1", port=port or 0,
            on_message=lambda m, meta: got.append(m.message_segment.data)))
        await server.start()
        for _ in range(200):
            if len(got) >= 10:
                break
            await asyncio.sleep(0.02)
        assert got == [str(n) for n in range(10)]
    finally:
        await client.stop()
        await server.stop()
