"""WebSocketMultiClient against a real WebSocketServer: registration, connect results,
on_message with connection_name, custom handlers, smart routing, config-driven start."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Dict, List, Tuple

import pytest

from maim_message.client import (
    ClientConfig,
    WebSocketMultiClient,
    create_client_config,
    create_multi_client,
)
from maim_message.multi_client import match_connection
from maim_message.server import WebSocketServer, create_server_config
from maim_message.ws_config import (
    ConnectionEntry,
    MultiClientConfig,
    create_multi_client_config,
    create_multi_client_config_with_connections,
)

from .helpers_api import Inbox, make_message

KEYS = {"kq": "user_q", "kw": "user_w", "kt": "user_t"}


@pytest.fixture
async def hub() -> AsyncIterator[Any]:
    inbox = Inbox()
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0,
        on_auth=lambda meta: meta["api_key"] in KEYS,
        on_auth_extract_user=lambda meta: KEYS.get(meta["api_key"]),
        on_message=inbox,
    ))
    await server.start()
    server.inbox = inbox  # type: ignore[attr-defined]
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


async def test_connect_send_receive_with_connection_name(hub: Any) -> None:
    inbox = Inbox()
    client = WebSocketMultiClient(MultiClientConfig(on_message=inbox))
    await client.start()
    try:
        assert client.register_connection("qq", hub.url, "kq", "qq")
        assert client.register_connection("wechat", hub.url, "kw", "wechat")
        assert client.register_connection("bad", hub.url, "nope", "qq",
                                          max_reconnect_attempts=1)
        results = await client.connect()
        assert results == {"qq": True, "wechat": True, "bad": False}
        assert sorted(client.get_active_connections()) == ["qq", "wechat"]
        assert sorted(client.list_connections()) == ["bad", "qq", "wechat"]
        assert client.get_last_error("bad") == "server rejected WebSocket connection: HTTP 403"
        info = client.get_connection_info("qq")
        assert info is not None and info["connected"] and info["platform"] == "qq"
        assert info["connection_uuid"].startswith("multi_qq_")
        assert client.is_connected() and client.is_connected("qq")
        assert not client.is_connected("bad") and not client.is_connected("ghost")

        # client -> server on a named connection
        assert await client.send_message("wechat", make_message("to hub", "kw", "wechat"))
        message, meta = await hub.inbox.next()
        assert message.message_segment.data == "to hub"
        assert meta["user_id"] == "user_w" and meta["platform"] == "wechat"

        # server -> client: on_message gets connection_name and sender_user
        await wait_for(lambda: hub.get_connection_count() == 2)
        sent = await hub.send_message(make_message("for qq", "kq", "qq"))
        assert list(sent.values()) == [True]
        message, meta = await inbox.next()
        assert message.message_segment.data == "for qq"
        assert meta["connection_name"] == "qq"
        assert meta["sender_user"] == "server"
        assert meta["routed_connection"] == "qq"

        stats = client.get_stats()
        assert stats["connections_registered"] == 3 and stats["connections_active"] == 2
        assert stats["connection_names"] == ["qq", "wechat", "bad"]
        assert stats["messages_sent"] >= 1 and stats["network"]["current_connections"] == 2
        status = client.get_coroutine_status()
        assert status["client_running"] and status["connections"]["qq"] is True

        # unknown / not connected names
        assert await client.send_message("ghost", make_message("x", "kq", "qq")) is False
        assert await client.send_custom_message("bad", "x", {}) is False
        assert await client.connect("ghost") == {"ghost": False}

        assert await client.disconnect("wechat") == {"wechat": True}
        assert await client.disconnect("wechat") == {"wechat": False}
        assert sorted(client.get_active_connections()) == ["qq"]
        await wait_for(lambda: hub.get_connection_count() == 1)
        # reconnect creates a fresh connection uuid
        old_uuid = client.get_connection_info("wechat")["connection_uuid"]  # type: ignore[index]
        assert await client.connect("wechat") == {"wechat": True}
        assert client.get_connection_info("wechat")["connection_uuid"] != old_uuid  # type: ignore[index]
    finally:
        await client.stop()
    assert not client.is_running() and not client.is_connected()
    await wait_for(lambda: hub.get_connection_count() == 0)


async def test_custom_messages_and_handler_arity(hub: Any) -> None:
    got: asyncio.Queue[Tuple[str, Any, Any]] = asyncio.Queue()
    client = WebSocketMultiClient()
    client.register_custom_handler("one", lambda data: got.put_nowait(("one", data, None)))

    async def two(data: Dict[str, Any], metadata: Dict[str, Any]) -> None:
        got.put_nowait(("two", data, metadata))

    client.register_custom_handler("custom_two", two)
    server_got: asyncio.Queue[Tuple[Dict[str, Any], Dict[str, Any]]] = asyncio.Queue()
    hub.register_custom_handler("ping", lambda env, meta: server_got.put_nowait((env, meta)))
    client.register_connection("t", hub.url, "kt", "telegram")
    assert await client.connect("t") == {"t": True}
    try:
        await wait_for(lambda: hub.get_connection_count() == 1)
        assert await client.send_custom_message("t", "ping", {"n": 1})
        env, meta = await asyncio.wait_for(server_got.get(), 5)
        assert env["type"] == "custom_ping" and env["payload"] == {"n": 1}
        assert meta["platform"] == "telegram"

        await hub.send_custom_message("one", {"a": 1}, target_user="user_t")
        await hub.send_custom_message("custom_two", {"b": 2}, target_platform="telegram")
        seen = {}
        for _ in range(2):
            kind, data, metadata = await asyncio.wait_for(got.get(), 5)
            seen[kind] = (data, metadata)
        assert seen["one"] == ({"a": 1}, None)
        assert seen["two"][0] == {"b": 2}
        assert seen["two"][1]["connection_name"] == "t"

        client.unregister_custom_handler("one")
        await hub.send_custom_message("one", {"a": 2}, target_user="user_t")
        await hub.send_custom_message("two", {"b": 3}, target_user="user_t")
        kind, data, _ = await asyncio.wait_for(got.get(), 5)
        assert (kind, data) == ("two", {"b": 3})  # "one" is no longer handled
    finally:
        await client.stop()


async def test_default_config_supplies_callbacks_and_settings(hub: Any) -> None:
    inbox = Inbox()
    connects: List[str] = []
    custom: asyncio.Queue[Any] = asyncio.Queue()
    default = create_client_config(
        "ws://unused.invalid/ws", "default_key", platform="default_platform",
        on_message=inbox, on_connect=lambda uuid, cfg: connects.append(uuid),
        ping_interval=5, reconnect_delay=0.05,
    )
    default.register_custom_handler("note", lambda data: custom.put_nowait(data))
    client = WebSocketMultiClient(default_config=default)
    client.register_connection("qq", hub.url, "kq", "qq")
    async with client:
        assert await client.connect() == {"qq": True}
        await wait_for(lambda: hub.get_connection_count() == 1)
        await hub.send_message(make_message("hi", "kq", "qq"))
        message, meta = await inbox.next()
        assert message.message_segment.data == "hi" and meta["connection_name"] == "qq"
        await hub.send_custom_message("note", {"z": 1}, target_user="user_q")
        assert await asyncio.wait_for(custom.get(), 5) == {"z": 1}
        await wait_for(lambda: len(connects) == 1)
        assert connects[0].startswith("multi_qq_")
        conn_config = client._named["qq"].conn.config  # type: ignore[union-attr]
        assert conn_config.ping_interval == 5 and conn_config.reconnect_delay == 0.05
        assert conn_config.api_key == "kq" and conn_config.platform == "qq"
    assert not client.is_running()


async def test_smart_routing_send_without_name(hub: Any) -> None:
    client = WebSocketMultiClient()
    client.register_connection("a", hub.url, "kq", "qq")
    client.register_connection("b", hub.url, "kw", "wechat")
    await client.connect()
    try:
        await wait_for(lambda: hub.get_connection_count() == 2)
        assert client.route("kw", "wechat") == "b"        # exact
        assert client.route("kw", "telegram") == "b"      # api_key only
        assert client.route("other", "qq") == "a"         # platform only
        assert client.route("other", "none") is None
        assert await client.send_message(make_message("routed", "kw", "wechat"))
        message, meta = await hub.inbox.next()
        assert message.message_segment.data == "routed" and meta["user_id"] == "user_w"
        assert await client.send_message(None, make_message("x", "zz", "zz")) is False
    finally:
        await client.stop()


def test_match_connection_priorities() -> None:
    cands = [("p", "k2", "qq"), ("k", "k1", "wx"), ("e", "k1", "qq")]
    assert match_connection(cands, "k1", "qq") == "e"
    assert match_connection(cands, "k1", "tg") == "k"
    assert match_connection(cands, "k9", "qq") == "p"
    assert match_connection(cands, None, None) is None
    assert match_connection([], "k1", "qq") is None


async def test_multi_client_config_start_and_auto_connect(hub: Any) -> None:
    inbox = Inbox()
    config = create_multi_client_config_with_connections(
        {"qq": {"url": hub.url, "api_key": "kq", "platform": "qq"},
         "wx": {"url": hub.url, "api_key": "kw", "platform": "wechat",
                "max_reconnect_attempts": 2}},
        auto_connect_on_start=True, on_message=inbox,
    )
    assert isinstance(config.connections["wx"], ConnectionEntry)
    assert config.connections["wx"].max_reconnect_attempts == 2
    client = WebSocketMultiClient(config)
    await client.start()
    try:
        assert sorted(client.get_active_connections()) == ["qq", "wx"]
        await wait_for(lambda: hub.get_connection_count() == 2)
        await hub.send_message(make_message("cfg", "kw", "wechat"))
        _, meta = await inbox.next()
        assert meta["connection_name"] == "wx"
        assert client.update_connection("wx", platform="telegram")
        assert not client.update_connection("ghost", platform="x")
        assert config.connections["wx"].platform == "telegram"
        assert await client.connect("wx") == {"wx": True}
        await wait_for(lambda: hub.get_platform_connections("user_w", "telegram") != set())
        assert client.unregister_connection("qq")
        assert not client.unregister_connection("qq")
        assert "qq" not in config.connections
        await wait_for(lambda: hub.get_user_connections("user_q") == {})
    finally:
        await client.stop()


def test_config_objects_and_validation() -> None:
    cfg = create_multi_client_config()
    assert cfg.on_message is not None and not cfg.has_user_message_handler()
    cfg.register_ssl_connection("s", "ws://h:1/ws", "k", "qq", ssl_ca_certs="/ca.pem")
    entry = cfg.get_connection("s")
    assert entry is not None and entry.url == "wss://h:1/ws" and entry.ssl_enabled
    assert entry.to_kwargs()["ssl_ca_certs"] == "/ca.pem"
    cfg.add_connection("bad", "http://h/ws", "k")
    assert cfg.validate() is False
    assert cfg.remove_connection("bad") and not cfg.remove_connection("bad")
    assert cfg.validate() is True and cfg.get_missing_fields() == set()
    assert set(cfg.list_connections()) == {"s"}
    cfg.register_custom_handler("x", print)
    assert "custom_x" in cfg.custom_handlers
    with pytest.raises(TypeError):
        cfg.register_connection("n", "ws://h/ws", "k", bogus=1)

    client = WebSocketMultiClient()
    with pytest.raises(TypeError, match="bogus"):
        client.register_connection("n", "ws://h/ws", "k", bogus=1)
    with pytest.raises(ValueError):
        client.register_connection("n", "http://h/ws", "k")
    # a ClientConfig given positionally is taken as default_config
    default = ClientConfig(url="ws://h/ws", api_key="k")
    assert WebSocketMultiClient(default).default_config is default


async def test_create_multi_client_factory(hub: Any) -> None:
    inbox = Inbox()
    client = create_multi_client({"qq": {"url": hub.url, "api_key": "kq", "platform": "qq"}},
                                 on_message=inbox)
    async with client:
        assert await client.connect() == {"qq": True}
        await wait_for(lambda: hub.get_connection_count() == 1)
        await hub.send_message(make_message("f", "kq", "qq"))
        message, meta = await inbox.next()
        assert message.message_segment.data == "f" and meta["connection_name"] == "qq"
