"""WebSocketServer driven by raw WebSocket clients: identity, auth, acks, routing, bad frames."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Dict

import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from maim_message.server import WebSocketServer, create_server_config

from .helpers_api import Inbox, envelope, make_message, recv_json, recv_until

KEYS = {"k1": "user1", "k2": "user2"}


def payload(text: str, key: str = "k1", platform: str = "qq") -> Dict[str, Any]:
    return make_message(text, key, platform).to_dict()


@pytest.fixture
async def hub() -> AsyncIterator[Any]:
    inbox = Inbox()
    config = create_server_config(
        host="127.0.0.1", port=0,
        on_auth=lambda meta: meta["api_key"] in KEYS,          # sync, as the spec shows
        on_auth_extract_user=lambda meta: KEYS.get(meta["api_key"]),
        on_message=inbox,
    )
    server = WebSocketServer(config)
    await server.start()
    server.inbox = inbox  # type: ignore[attr-defined]
    server.url = f"ws://127.0.0.1:{server.port}/ws"  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        await server.stop()


async def test_query_auth_ack_and_on_message(hub: Any) -> None:
    async with websockets.connect(f"{hub.url}?api_key=k1&platform=qq") as ws:
        await ws.send(envelope("m-1", payload("hello")))
        ack = await recv_json(ws)
        assert ack["type"] == "sys_ack" and ack["meta"]["acked_msg_id"] == "m-1"
        message, meta = await hub.inbox.next()
        assert message.message_segment.data == "hello"
        assert meta["api_key"] == "k1" and meta["platform"] == "qq"
        assert meta["user_id"] == "user1" and meta["client_ip"] == "127.0.0.1"
        assert ack["meta"]["uuid"] == meta["uuid"]


async def test_header_auth_and_query_wins(hub: Any) -> None:
    headers = {"x-apikey": "k2", "x-platform": "wx", "x-uuid": "conn-fixed"}
    async with websockets.connect(hub.url, additional_headers=headers):
        await asyncio.sleep(0)
    async with websockets.connect(f"{hub.url}?api_key=k1&platform=qq",
                                  additional_headers=headers) as ws:
        await ws.send(envelope("m-2", payload("q")))
        _, meta = await hub.inbox.next()
        assert (meta["api_key"], meta["platform"], meta["uuid"]) == ("k1", "qq", "conn-fixed")
        assert hub.get_connection_info("conn-fixed") == {"user_id": "user1", "platform": "qq"}


async def test_refused_key_gets_403_and_missing_key_401_before_upgrade(hub: Any) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(f"{hub.url}?api_key=bad&platform=qq"):
            pass
    assert info.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(f"{hub.url}?platform=qq"):
            pass
    assert info.value.response.status_code == 401
    stats = hub.get_stats()
    assert stats["failed_auths"] == 2 and stats["current_connections"] == 0


async def test_frames_sent_before_refusal_never_reach_on_message(hub: Any) -> None:
    port = hub.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        b"GET /ws?api_key=bad&platform=qq HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    frame_payload = envelope("early", payload("sneaky")).encode()
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(frame_payload))
    frame = bytes([0x81, 0x80 | 126]) + len(masked).to_bytes(2, "big") + mask + masked
    writer.write(request + frame)
    head = await asyncio.wait_for(reader.read(1024), 5)
    assert head.startswith(b"HTTP/1.1 403")
    writer.close()
    await asyncio.sleep(0.05)
    assert hub.inbox.items == []


async def test_routing_by_message_dim_to_user_and_platform(hub: Any) -> None:
    async with websockets.connect(f"{hub.url}?api_key=k1&platform=qq") as a_qq, \
            websockets.connect(f"{hub.url}?api_key=k1&platform=wx") as a_wx, \
            websockets.connect(f"{hub.url}?api_key=k2&platform=qq") as b_qq:
        assert hub.get_user_count() == 2 and hub.get_connection_count() == 3
        result = await hub.send_message(make_message("to k1 on qq", "k1", "qq"))
        assert list(result.values()) == [True]
        frame = await recv_until(a_qq, "sys_std")
        assert frame["payload"]["message_segment"]["data"] == "to k1 on qq"
        assert frame["meta"]["sender_user"] == "server"
        assert frame["meta"]["target_user"] == "user1" and frame["meta"]["platform"] == "qq"
        result = await hub.send_message(make_message("override", "k1", "qq"),
                                        target_platform="wx")
        assert len(result) == 1
        frame = await recv_until(a_wx, "sys_std")
        assert frame["payload"]["message_segment"]["data"] == "override"
        assert await hub.send_message(make_message("nobody", "k2", "tg")) == {}
        results = await hub.broadcast_message(make_message("all", "x", "x"))
        assert len(results) == 3 and all(results.values())
        for ws in (a_qq, a_wx, b_qq):
            assert (await recv_until(ws, "sys_std"))["payload"]["message_segment"]["data"] in (
                "all",)
        results = await hub.broadcast_message(make_message("qq only", "x", "x"), platform="qq")
        assert len(results) == 2


async def test_malformed_frame_gets_sys_error_and_other_clients_unaffected(hub: Any) -> None:
    async with websockets.connect(f"{hub.url}?api_key=k1&platform=qq") as bad, \
            websockets.connect(f"{hub.url}?api_key=k2&platform=qq") as good:
        await bad.send("{not json")
        error = await recv_json(bad)
        assert error["type"] == "sys_error" and "not valid JSON" in error["payload"]["reason"]
        bad_message = {"message_info": {"platform": "qq"}, "message_segment": {}}
        await bad.send(envelope("m-bad", bad_message))
        error = await recv_json(bad)  # refused, never acked (issue 14: no ack for a drop)
        assert error["type"] == "sys_error" and error["meta"]["ref_msg_id"] == "m-bad"
        assert "message_dim" in error["payload"]["reason"]
        await good.send(envelope("m-good", payload("fine", "k2")))
        message, _ = await hub.inbox.next()
        assert message.message_segment.data == "fine"
        await bad.send(envelope("m-3", payload("still open")))
        message, _ = await hub.inbox.next()
        assert message.message_segment.data == "still open"
        assert hub.get_stats()["invalid_frames"] == 2


async def test_binary_frame_closes_1003_and_bad_utf8_1007(hub: Any) -> None:
    async with websockets.connect(f"{hub.url}?api_key=k1&platform=qq") as ws:
        await ws.send(b"\x00\x01")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1003 and "binary" in (ws.close_reason or "")
    async with websockets.connect(f"{hub.url}?api_key=k1&platform=qq") as ws:
        await ws.send(b'{"type": "sys_std", "x": "\xff"}', text=True)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1007


async def test_duplicate_msg_id_acked_but_delivered_once(hub: Any) -> None:
    async with websockets.connect(f"{hub.url}?api_key=k1&platform=qq") as ws:
        for _ in range(3):
            await ws.send(envelope("dup-1", payload("once")))
            assert (await recv_json(ws))["meta"]["acked_msg_id"] == "dup-1"
        await ws.send(envelope("dup-2", payload("second")))
        await recv_json(ws)
        first, _ = await hub.inbox.next()
        second, _ = await hub.inbox.next()
        assert (first.message_segment.data, second.message_segment.data) == ("once", "second")
        assert hub.get_stats()["duplicate_messages_ignored"] == 2


async def test_bare_payload_and_wrapped_payload(hub: Any) -> None:
    async with websockets.connect(f"{hub.url}?api_key=k1&platform=qq") as ws:
        await ws.send(orjson.dumps(payload("bare")).decode())
        message, _ = await hub.inbox.next()
        assert message.message_segment.data == "bare"
        await ws.send(envelope("w-1", {"foo": "bar"}))
        message, _ = await hub.inbox.next()
        assert message.message_segment.data == "{'foo': 'bar'}"
        assert message.message_dim.api_key == "k1" and message.message_dim.platform == "qq"


async def test_wrong_path_and_plain_http(hub: Any) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(f"ws://127.0.0.1:{hub.port}/other?api_key=k1"):
            pass
    assert info.value.response.status_code == 404
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")  # a browser on the ws path
    reply = await asyncio.wait_for(reader.read(200), 5)
    assert reply.startswith(b"HTTP/1.1 426") and b"Upgrade: websocket" in reply
    writer.close()


async def test_same_uuid_reconnect_replaces_old_without_hurting_new(hub: Any) -> None:
    headers = {"x-apikey": "k1", "x-platform": "qq", "x-uuid": "same"}
    old = await websockets.connect(hub.url, additional_headers=headers)
    written = hub.messages_written()
    assert await hub.send_message(make_message("to old", "k1", "qq")) == {"same": True}
    assert (await recv_until(old, "sys_std"))["payload"]["message_segment"]["data"] == "to old"
    new = await websockets.connect(hub.url, additional_headers=headers)
    # the replaced one's write stays counted; the new one got it again (never acked)
    assert hub.messages_written() == written + 2
    assert (await recv_until(new, "sys_std"))["payload"]["message_segment"]["data"] == "to old"
    with pytest.raises(ConnectionClosed):
        while True:  # (anything still unread, then the close)
            await asyncio.wait_for(old.recv(), 5)
    assert old.close_code == 4000
    assert hub.get_connection_count() == 1
    result = await hub.send_message(make_message("to new", "k1", "qq"))
    assert result == {"same": True}
    assert (await recv_until(new, "sys_std"))["payload"]["message_segment"]["data"] == "to new"
    assert hub.messages_written() == written + 3  # the old one's close added nothing twice
    await new.close()


async def test_handler_tasks_are_counted_and_isolated() -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    calls = []

    async def slow(message: Any, meta: Dict[str, Any]) -> None:
        calls.append(message.message_segment.data)
        if message.message_segment.data == "boom":
            raise RuntimeError("handler failure is isolated")
        started.set()
        await release.wait()

    server = WebSocketServer(create_server_config(host="127.0.0.1", port=0, on_message=slow))
    await server.start()
    try:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws?api_key=a") as ws:
            await ws.send(envelope("b", payload("boom")))
            await ws.send(envelope("s", payload("slow")))
            await asyncio.wait_for(started.wait(), 5)
            assert server.get_stats()["active_handler_tasks"] == 1
            release.set()
            for _ in range(100):
                if server.get_stats()["active_handler_tasks"] == 0:
                    break
                await asyncio.sleep(0.01)
            stats = server.get_stats()
            assert stats["active_handler_tasks"] == 0 and stats["handler_errors"] == 1
            assert calls == ["boom", "slow"]
            assert server.get_user_connections("sys_default") == {"unknown": {
                next(iter(server.get_connections()))}}
    finally:
        await server.stop()


async def test_stats_keys_of_the_spec(hub: Any) -> None:
    stats = hub.get_stats()
    for key in ("total_auth_requests", "successful_auths", "failed_auths", "messages_processed",
                "custom_messages_processed", "current_users", "current_connections",
                "active_handler_tasks", "duplicate_messages_ignored", "network"):
        assert key in stats
    assert set(stats["network"]) >= {"total_connections", "current_connections",
                                     "messages_received", "messages_sent", "bytes_received",
                                     "bytes_sent"}
    status = hub.get_coroutine_status()
    assert status["server_running"] is True


async def test_port_in_use_raises_clear_error(hub: Any) -> None:
    from maim_message.errors import ServerStartError

    clash = WebSocketServer(create_server_config(host="127.0.0.1", port=hub.port))
    with pytest.raises(ServerStartError, match="cannot listen"):
        await clash.start()
