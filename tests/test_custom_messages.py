"""Custom messages both ways (every server target combination), broadcast, target_platform."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Dict, List, Tuple

import orjson
import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from maim_message.client import WebSocketClient, create_client_config
from maim_message.server import WebSocketServer, create_server_config

from .helpers_api import Inbox, make_message, recv_until

KEYS = {"k1": "user1", "k2": "user2"}


@pytest.fixture
async def hub() -> AsyncIterator[Any]:
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0,
        on_auth=lambda meta: meta["api_key"] in KEYS,
        on_auth_extract_user=lambda meta: KEYS.get(meta["api_key"]),
        on_message=Inbox(),
    ))
    await server.start()
    server.url = f"ws://127.0.0.1:{server.port}/ws"  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        await server.stop()


async def wait_for(cond: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class Raw:
    """Raw websockets peers keyed by label, connected as (api_key, platform)."""

    def __init__(self) -> None:
        self.ws: Dict[str, Any] = {}

    async def open(self, url: str, label: str, key: str, platform: str) -> Any:
        ws = await websockets.connect(f"{url}?api_key={key}&platform={platform}",
                                      additional_headers={"x-uuid": label})
        self.ws[label] = ws
        return ws

    async def close(self) -> None:
        await asyncio.gather(*(ws.close() for ws in self.ws.values()))


async def nothing_arrives(ws: Any, timeout: float = 0.2) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        return True
    return False


async def test_server_custom_message_every_target_combination(hub: Any) -> None:
    raw = Raw()
    try:
        await raw.open(hub.url, "a-qq", "k1", "qq")
        await raw.open(hub.url, "a-wx", "k1", "wechat")
        await raw.open(hub.url, "b-qq", "k2", "qq")
        await wait_for(lambda: hub.get_connection_count() == 3)

        async def expect(results: Dict[str, bool], labels: List[str], name: str) -> None:
            assert results == dict.fromkeys(labels, True)
            for label in labels:
                frame = await recv_until(raw.ws[label], name)
                assert frame["payload"] == {"n": name}
                assert frame["meta"]["sender_user"] == "server"
            for label in set(raw.ws) - set(labels):
                assert await nothing_arrives(raw.ws[label])

        # connection_uuid wins over everything else
        r = await hub.send_custom_message("one", {"n": "custom_one"}, connection_uuid="a-wx")
        await expect(r, ["a-wx"], "custom_one")
        # target_user alone: all the user's connections
        r = await hub.send_custom_message("two", {"n": "custom_two"}, target_user="user1")
        await expect(r, ["a-qq", "a-wx"], "custom_two")
        # target_user + target_platform
        r = await hub.send_custom_message("three", {"n": "custom_three"}, target_user="user1",
                                          target_platform="qq")
        await expect(r, ["a-qq"], "custom_three")
        # target_platform alone: every user on that platform; meta carries the targets
        r = await hub.send_custom_message("custom_four", {"n": "custom_four"},
                                          target_platform="qq")
        await expect(r, ["a-qq", "b-qq"], "custom_four")
        # no target: nothing sent
        assert await hub.send_custom_message("five", {"n": 5}) == {}
        # unknown targets
        assert await hub.send_custom_message("six", {}, target_user="nobody") == {}
        assert await hub.send_custom_message("six", {}, connection_uuid="gone") == {"gone": False}
        r = await hub.send_custom_message("meta", {"n": "custom_meta"}, target_user="user2",
                                          target_platform="qq")
        assert list(r.values()) == [True]
        frame_meta = (await recv_until(raw.ws["b-qq"], "custom_meta"))["meta"]
        assert frame_meta["target_user"] == "user2" and frame_meta["platform"] == "qq"
    finally:
        await raw.close()


async def test_client_custom_to_server_handler_gets_envelope_and_metadata(hub: Any) -> None:
    got: asyncio.Queue[Tuple[Dict[str, Any], Dict[str, Any]]] = asyncio.Queue()

    async def handler(envelope: Dict[str, Any], metadata: Dict[str, Any]) -> None:
        got.put_nowait((envelope, metadata))

    hub.register_custom_handler("heartbeat", handler)
    client = WebSocketClient(create_client_config(hub.url, "k2", platform="wechat"))
    await client.start()
    try:
        assert await client.connect()
        assert await client.send_custom_message("heartbeat", {"status": "active"})
        assert await client.send_custom_message("custom_heartbeat", {"status": "again"})
        for status in ("active", "again"):
            env, meta = await asyncio.wait_for(got.get(), 5)
            assert env["type"] == "custom_heartbeat" and env["payload"] == {"status": status}
            assert {"ver", "msg_id", "meta"} <= set(env)
            assert meta["user_id"] == "user2" and meta["platform"] == "wechat"
        assert hub.get_stats()["custom_messages_processed"] == 2
        hub.unregister_custom_handler("custom_heartbeat")
        assert "custom_heartbeat" not in hub.config.custom_handlers
    finally:
        await client.stop()


async def test_client_handlers_by_arity_sync_and_async(hub: Any) -> None:
    calls: asyncio.Queue[Tuple[str, Any, Any]] = asyncio.Queue()
    config = create_client_config(hub.url, "k1", platform="qq")
    config.register_custom_handler("sync1", lambda data: calls.put_nowait(("sync1", data, None)))
    config.register_custom_handler(
        "sync2", lambda data, meta: calls.put_nowait(("sync2", data, meta)))

    async def async1(data: Any) -> None:
        calls.put_nowait(("async1", data, None))

    async def async2(data: Any, metadata: Any) -> None:
        calls.put_nowait(("async2", data, metadata))

    config.register_custom_handler("async1", async1)
    client = WebSocketClient(config)
    client.register_custom_handler("custom_async2", async2)
    await client.start()
    try:
        assert await client.connect()
        await wait_for(lambda: hub.get_connection_count() == 1)
        for name in ("sync1", "sync2", "custom_async1", "async2"):
            r = await hub.send_custom_message(name, {"from": name}, target_user="user1")
            assert list(r.values()) == [True]
        seen = {}
        for _ in range(4):
            kind, data, meta = await asyncio.wait_for(calls.get(), 5)
            seen[kind] = (data, meta)
        assert seen["sync1"] == ({"from": "sync1"}, None)
        assert seen["async1"] == ({"from": "custom_async1"}, None)
        for two in ("sync2", "async2"):
            data, meta = seen[two]
            assert data == {"from": two}
            assert meta["sender_user"] == "server" and meta["target_user"] == "user1"
    finally:
        await client.stop()


async def test_client_accepts_unprefixed_custom_type_from_a_0_6_8_server() -> None:
    """0.6.8 servers send the type verbatim ("notification"); our client still dispatches."""
    got: asyncio.Queue[Any] = asyncio.Queue()
    acks: asyncio.Queue[Dict[str, Any]] = asyncio.Queue()

    async def old_server(ws: ServerConnection) -> None:
        await ws.send(orjson.dumps({"ver": 1, "msg_id": "n1", "type": "notification",
                                    "meta": {"sender_user": "server"},
                                    "payload": {"title": "t"}}).decode())
        async for raw in ws:
            acks.put_nowait(orjson.loads(raw))

    async with serve(old_server, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        config = create_client_config(f"ws://127.0.0.1:{port}/ws", "k", platform="p")
        config.register_custom_handler("notification", lambda data, meta: got.put_nowait(data))
        client = WebSocketClient(config)
        await client.start()
        try:
            assert await client.connect()
            assert await asyncio.wait_for(got.get(), 5) == {"title": "t"}
            ack = await asyncio.wait_for(acks.get(), 5)
            assert ack["type"] == "sys_ack" and ack["meta"]["acked_msg_id"] == "n1"
        finally:
            await client.stop()


async def test_broadcast_with_and_without_platform_and_target_platform(hub: Any) -> None:
    inboxes = {name: Inbox() for name in ("a-qq", "a-wx", "b-qq")}
    specs = {"a-qq": ("k1", "qq"), "a-wx": ("k1", "wechat"), "b-qq": ("k2", "qq")}
    clients = {}
    for name, (key, platform) in specs.items():
        clients[name] = WebSocketClient(create_client_config(
            hub.url, key, platform=platform, on_message=inboxes[name]))
    try:
        for c in clients.values():
            assert await c.connect()
        await wait_for(lambda: hub.get_connection_count() == 3)

        results = await hub.broadcast_message(make_message("all", "server", "server"))
        assert len(results) == 3 and sum(results.values()) == 3
        for inbox in inboxes.values():
            message, _ = await inbox.next()
            assert message.message_segment.data == "all"

        results = await hub.broadcast_message(make_message("qq only", "server", "server"),
                                              platform="qq")
        assert len(results) == 2 and all(results.values())
        for name in ("a-qq", "b-qq"):
            message, _ = await inboxes[name].next()
            assert message.message_segment.data == "qq only"
        assert await hub.broadcast_message(make_message("x", "s", "s"), platform="none") == {}

        # message_dim says wechat; target_platform overrides the routing platform
        results = await hub.send_message(make_message("over", "k1", "wechat"),
                                         target_platform="qq")
        assert len(results) == 1 and all(results.values())
        message, meta = await inboxes["a-qq"].next()
        assert message.message_segment.data == "over" and meta["platform"] == "qq"
        results = await hub.send_message(make_message("plain", "k1", "wechat"))
        assert len(results) == 1
        message, _ = await inboxes["a-wx"].next()
        assert message.message_segment.data == "plain"
        # nothing else arrived anywhere
        await asyncio.sleep(0.1)
        assert [len(i.items) for i in inboxes.values()] == [3, 2, 2]
    finally:
        await asyncio.gather(*(c.stop() for c in clients.values()))
