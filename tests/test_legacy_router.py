"""Router / RouteConfig / TargetConfig against real servers (ws and tcp)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, Callable, List

import pytest

from maim_message import MessageBase, MessageServer, RouteConfig, Router, TargetConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import free_port

T = 10.0


async def until(cond: Callable[[], bool], timeout: float = T) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def msg(platform: str, text: str) -> MessageBase:
    return MessageBase.from_dict({
        "message_info": {"platform": platform, "message_id": "1", "time": 1.0},
        "message_segment": {"type": "text", "data": text},
    })


def test_config_dicts() -> None:
    data = {"route_config": {"qq": {"url": "ws://h/ws", "token": "t"},
                             "tg": TargetConfig("tcp://h:1")}}
    cfg = RouteConfig.from_dict(data)
    assert cfg.route_config["qq"] == TargetConfig("ws://h/ws", "t", None)
    assert cfg.to_dict() == {"route_config": {
        "qq": {"url": "ws://h/ws", "token": "t", "ssl_verify": None},
        "tg": {"url": "tcp://h:1", "token": None, "ssl_verify": None}}}
    assert TargetConfig.from_dict({"url": "u"}).to_dict() == {"url": "u", "token": None,
                                                              "ssl_verify": None}


async def test_router_routes_by_platform_and_reloads() -> None:
    ws_port, tcp_port, ws2_port = free_port(), free_port(), free_port()
    servers = [MessageServer(host="127.0.0.1", port=ws_port, enable_token=True),
               MessageServer(host="127.0.0.1", port=tcp_port, mode="tcp"),
               MessageServer(host="127.0.0.1", port=ws2_port)]
    servers[0].add_valid_token("t")
    inbox: List[List[Any]] = [[], [], []]
    for server, box in zip(servers, inbox):
        server.register_message_handler(box.append)
        server.register_custom_message_handler("cust", box.append)
        await server.start()
    config = RouteConfig({"qq": TargetConfig(f"ws://127.0.0.1:{ws_port}/ws", token="t"),
                          "tg": TargetConfig(f"tcp://127.0.0.1:{tcp_port}")})
    router = Router(config)
    got: List[Any] = []
    customs: List[Any] = []
    router.register_class_handler(got.append)
    router.register_custom_message_handler("cust", customs.append)
    task = asyncio.ensure_future(router.run())
    try:
        await until(lambda: router.check_connection("qq") and router.check_connection("tg"))
        await until(lambda: servers[0].connected_platforms() == ["qq"]
                    and servers[1].connected_platforms() == ["tg"])
        assert await router.send_message(msg("qq", "to qq"))
        assert await router.send_message(msg("tg", "to tg"))
        await until(lambda: len(inbox[0]) == 1 and len(inbox[1]) == 1)
        assert inbox[0][0]["message_segment"]["data"] == "to qq"
        assert inbox[1][0]["message_segment"]["data"] == "to tg"
        with pytest.raises(ValueError):
            await router.send_message(msg("nowhere", "x"))
        with pytest.raises(ValueError):
            await router.send_custom_message("nowhere", "cust", {})
        assert router.get_target_url(msg("tg", "")) == f"tcp://127.0.0.1:{tcp_port}"

        # server -> router: generic and custom handlers reach the router's handlers
        assert await servers[1].send_message(msg("tg", "down"))
        assert await servers[0].send_custom_message("qq", "cust", {"c": 1})
        await until(lambda: len(got) == 1 and len(customs) == 1)
        assert got[0]["message_segment"]["data"] == "down"
        assert customs[0]["content"] == {"c": 1}
        assert await router.send_custom_message("tg", "cust", {"up": 1})
        await until(lambda: len(inbox[1]) == 2)

        # reload: qq moves to another server, tg removed
        await router.update_config({"route_config": {
            "qq": {"url": f"ws://127.0.0.1:{ws2_port}/ws"}}})
        await until(lambda: servers[2].connected_platforms() == ["qq"])
        await until(lambda: servers[1].connected_platforms() == []
                    and servers[0].connected_platforms() == [])
        assert set(router.clients) == {"qq"}
        assert await router.send_message(msg("qq", "moved"))
        await until(lambda: len(inbox[2]) == 1)

        await router.add_platform("tg", TargetConfig(f"tcp://127.0.0.1:{tcp_port}"))
        await until(lambda: router.check_connection("tg"))
        await router.remove_platform("tg")
        assert not router.check_connection("tg") and "tg" not in router.config.route_config
    finally:
        await router.stop()
        await asyncio.wait_for(task, T)
        for server in servers:
            await server.stop()
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()
                and not t.done()]


async def test_monitor_restarts_a_dead_client() -> None:
    port = free_port()
    server = MessageServer(host="127.0.0.1", port=port)
    await server.start()
    router = Router(RouteConfig({"qq": TargetConfig(f"ws://127.0.0.1:{port}/ws")}))
    router.monitor_interval = 0.05
    task = asyncio.ensure_future(router.run())
    try:
        await until(lambda: router.check_connection("qq"))
        first = router.clients["qq"]
        router._client_tasks["qq"].cancel()  # simulate a crashed client task
        await until(lambda: router.clients.get("qq") is not first
                    and router.check_connection("qq"))
    finally:
        await router.stop()
        await asyncio.wait_for(task, T)
        await server.stop()


def test_unregister_and_handle_message() -> None:
    router = Router(RouteConfig({}))
    calls: List[Any] = []
    router.register_custom_message_handler("x", calls.append)
    router.unregister_message_handler("x", calls.append)
    assert router.custom_message_handlers == {}
    router.handle_message(msg("qq", "no message_type attribute"))  # no AttributeError
