"""The hub mounted in an ASGI application: Starlette app served by uvicorn, the Starlette
TestClient, lifespan wiring, refusals before accept, and the hub's own port at the same time."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import warnings
from typing import Any, AsyncIterator, Dict, List, Tuple

import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed, InvalidStatus

from maim_message.client import WebSocketClient, create_client_config
from maim_message.server import (
    WebSocketASGI,
    WebSocketServer,
    create_server_config,
    mount_websocket_server,
)

with warnings.catch_warnings():  # starlette's notice about httpx vs httpx2
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient, WebSocketDenialResponse

from .conftest import PACKAGE_DIR, free_port
from .helpers_api import Inbox, envelope, make_message, recv_json, recv_until

KEYS = {"k1": "user1", "k2": "user2"}


def make_hub(**extra: Any) -> Tuple[WebSocketServer, Inbox, List[str]]:
    inbox = Inbox()
    gone: List[str] = []
    hub = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0,
        on_auth=lambda meta: meta["api_key"] in KEYS,
        on_auth_extract_user=lambda meta: KEYS.get(meta["api_key"]),
        on_message=inbox, on_disconnect=lambda uuid, meta: gone.append(uuid), **extra,
    ))
    return hub, inbox, gone


async def wait_for(cond: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class Served:
    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning",
            ws="websockets-sansio", lifespan="on"))
        self.task: Any = None

    async def __aenter__(self) -> Served:
        self.task = asyncio.ensure_future(self.server.serve())
        await wait_for(lambda: self.server.started or self.task.done())
        assert self.server.started
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 10)


async def hello(request: Any) -> PlainTextResponse:
    return PlainTextResponse("app route")


@pytest.fixture
async def mounted() -> AsyncIterator[Any]:
    hub, inbox, gone = make_hub()
    endpoint = WebSocketASGI(hub)
    app = Starlette(routes=[Route("/hello", hello), WebSocketRoute("/ws", endpoint)],
                    lifespan=endpoint.lifespan)
    async with Served(app) as served:
        served.hub, served.inbox, served.gone, served.endpoint = hub, inbox, gone, endpoint
        served.url = f"ws://127.0.0.1:{served.port}/ws"
        yield served
    assert not hub.is_running()  # the lifespan stopped what it started


async def test_mounted_hub_full_round_trip(mounted: Any) -> None:
    client_inbox = Inbox()
    notes: asyncio.Queue[Any] = asyncio.Queue()
    config = create_client_config(mounted.url, "k1", platform="qq", on_message=client_inbox)
    config.register_custom_handler("note", lambda data, meta: notes.put_nowait(data))
    server_custom: asyncio.Queue[Dict[str, Any]] = asyncio.Queue()
    mounted.hub.register_custom_handler("hb", lambda env, meta: server_custom.put_nowait(env))
    client = WebSocketClient(config)
    try:
        assert await client.connect()
        assert mounted.hub.is_running()
        assert await client.send_message(make_message("via asgi", "k1", "qq"))
        message, meta = await mounted.inbox.next()
        assert message.message_segment.data == "via asgi"
        assert meta["user_id"] == "user1" and meta["client_ip"] == "127.0.0.1"
        assert await client.send_custom_message("hb", {"ok": 1})
        assert (await asyncio.wait_for(server_custom.get(), 5))["payload"] == {"ok": 1}

        results = await mounted.hub.send_message(make_message("back", "k1", "qq"))
        assert list(results.values()) == [True]
        message, meta = await client_inbox.next()
        assert message.message_segment.data == "back" and meta["target_user"] == "user1"
        await mounted.hub.send_custom_message("note", {"n": 1}, target_user="user1")
        assert await asyncio.wait_for(notes.get(), 5) == {"n": 1}
        results = await mounted.hub.broadcast_message(make_message("b", "s", "s"), platform="qq")
        assert list(results.values()) == [True]
        assert (await client_inbox.next())[0].message_segment.data == "b"
        stats = mounted.hub.get_stats()
        assert stats["current_connections"] == 1 and stats["current_users"] == 1
    finally:
        await client.stop()
    await wait_for(lambda: mounted.hub.get_connection_count() == 0)
    await wait_for(lambda: len(mounted.gone) == 1)


async def test_mounted_raw_client_acks_and_bad_frames(mounted: Any) -> None:
    async with websockets.connect(f"{mounted.url}?api_key=k2&platform=wx") as ws:
        await ws.send(envelope("m-1", make_message("raw", "k2", "wx").to_dict()))
        ack = await recv_json(ws)
        assert ack["type"] == "sys_ack" and ack["meta"]["acked_msg_id"] == "m-1"
        await ws.send("not json")
        error = await recv_until(ws, "sys_error")
        assert error["payload"]["reason"]
        await ws.send(b"\x00binary")
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1003
    message, meta = await mounted.inbox.next()
    assert message.message_segment.data == "raw" and meta["platform"] == "wx"


async def test_mounted_refusals_are_http_before_accept(mounted: Any) -> None:
    with pytest.raises(InvalidStatus) as missing:
        await websockets.connect(mounted.url)
    assert missing.value.response.status_code == 401
    assert b"missing API key" in missing.value.response.body
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(f"{mounted.url}?api_key=wrong")
    assert refused.value.response.status_code == 403
    client = WebSocketClient(create_client_config(mounted.url, "wrong", max_reconnect_attempts=1,
                                                  reconnect_delay=0.01))
    try:
        assert await client.connect() is False
        assert client.get_last_error() == "server rejected WebSocket connection: HTTP 403"
    finally:
        await client.stop()
    assert mounted.hub.get_stats()["failed_auths"] == 3
    assert mounted.hub.get_connection_count() == 0


async def test_shutdown_closes_mounted_connections_with_1001() -> None:
    hub, _, _ = make_hub()
    endpoint = WebSocketASGI(hub)
    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=endpoint.lifespan)
    async with Served(app) as served:
        ws = await websockets.connect(f"ws://127.0.0.1:{served.port}/ws?api_key=k1")
        await wait_for(lambda: hub.get_connection_count() == 1)
        await endpoint.shutdown()
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        assert not hub.is_running() and hub.get_connection_count() == 0


async def test_own_port_and_mount_share_one_hub() -> None:
    hub, _, _ = make_hub()
    endpoint = WebSocketASGI(hub)
    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=endpoint.lifespan)
    async with hub:  # the hub's own listener (WebSocketServer as an async context manager)
        assert hub.is_running() and hub.port
        async with Served(app) as served:
            inboxes = [Inbox(), Inbox()]
            own = WebSocketClient(create_client_config(
                f"ws://127.0.0.1:{hub.port}/ws", "k1", platform="qq", on_message=inboxes[0]))
            via_asgi = WebSocketClient(create_client_config(
                f"ws://127.0.0.1:{served.port}/ws", "k1", platform="qq",
                on_message=inboxes[1]))
            try:
                assert await own.connect() and await via_asgi.connect()
                await wait_for(lambda: hub.get_connection_count() == 2)
                results = await hub.send_message(make_message("both", "k1", "qq"))
                assert len(results) == 2 and all(results.values())
                for inbox_ in inboxes:
                    assert (await inbox_.next())[0].message_segment.data == "both"
            finally:
                await asyncio.gather(own.stop(), via_asgi.stop())
        assert hub.is_running()  # the mount did not stop a hub it did not start
    assert not hub.is_running()


def test_starlette_testclient_and_framework_websocket_handle() -> None:
    hub, _, _ = make_hub()
    endpoint = WebSocketASGI(hub)

    async def framework_endpoint(websocket: WebSocket) -> None:
        await endpoint.handle(websocket)

    app = Starlette(routes=[WebSocketRoute("/ws", framework_endpoint)])
    mount_websocket_server(app, hub, path="/direct")
    with TestClient(app) as tc:
        for path in ("/ws", "/direct"):
            with tc.websocket_connect(f"{path}?api_key=k1&platform=tc") as ws:
                ws.send_text(envelope("t-1", make_message("tc", "k1", "tc").to_dict()))
                ack = ws.receive_json()
                assert ack["type"] == "sys_ack" and ack["meta"]["acked_msg_id"] == "t-1"
        with pytest.raises(WebSocketDenialResponse) as denied:
            with tc.websocket_connect("/ws?api_key=nope") as ws:
                ws.receive_text()
        assert denied.value.status_code == 403
        assert b"Authentication failed" in denied.value.content
    assert hub.get_stats()["successful_auths"] == 2


async def test_refusal_without_http_response_extension_closes_1008() -> None:
    hub, _, _ = make_hub()
    endpoint = WebSocketASGI(hub)
    incoming = [{"type": "websocket.connect"}]
    sent: List[Dict[str, Any]] = []

    async def receive() -> Dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "query_string": b"api_key=bad",
             "headers": [(b"host", b"x")], "client": ("10.0.0.9", 5555)}
    await endpoint(scope, receive, send)
    assert len(sent) == 1 and sent[0]["type"] == "websocket.close"
    assert sent[0]["code"] == 1008 and "Authentication failed" in sent[0]["reason"]


async def test_top_level_asgi_app_checks_path_and_serves_http_routes() -> None:
    hub, _, _ = make_hub()
    hub.http_routes["/healthz"] = lambda info: __import__(
        "maim_message.transport.base", fromlist=["HttpReply"]).HttpReply(200, b"ok\n")
    async with Served(WebSocketASGI(hub, path="/ws")) as served:
        with pytest.raises(InvalidStatus) as wrong:
            await websockets.connect(f"ws://127.0.0.1:{served.port}/other?api_key=k1")
        assert wrong.value.response.status_code == 404
        async with websockets.connect(f"ws://127.0.0.1:{served.port}/ws?api_key=k1"):
            await wait_for(lambda: hub.get_connection_count() == 1)
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"ok\n")


def test_importing_the_server_does_not_import_starlette() -> None:
    code = ("import sys; import maim_message.server, maim_message.server.asgi; "
            "assert 'starlette' not in sys.modules, 'starlette imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, cwd=str(PACKAGE_DIR.parent))
    assert out.returncode == 0, out.stderr


async def test_send_queue_accounting_counts_bytes_both_ways_for_non_ascii_text() -> None:
    """The queue counts UTF-8 bytes in and the same bytes out: non-ASCII traffic that was
    fully written leaves nothing counted, and the connection turns writable again."""
    from maim_message.transport.asgi import ASGIServerConnection

    class App:
        writable = 0

        def connection_writable(self, conn: Any) -> None:
            App.writable += 1

    sent: List[Dict[str, Any]] = []
    all_written = asyncio.Event()
    payload = ('{"type":"sys_std","payload":"' + "你好" * 500 + '"}').encode()

    async def send(message: Dict[str, Any]) -> None:
        sent.append(message)
        if len(sent) == 100:
            all_written.set()

    conn = ASGIServerConnection(App(), send, "127.0.0.1", None,  # type: ignore[arg-type]
                                high_water=64 * 1024, max_queue=1 << 20)
    try:
        for _ in range(100):  # 300 KB queued at once: over high water, under max_queue
            assert conn.send_text(payload)
        assert not conn.is_writable
        await asyncio.wait_for(all_written.wait(), 5)
        await wait_for(lambda: conn.write_buffer_size() == 0)
        assert conn.is_writable and conn.is_open
        assert App.writable == 1
        for _ in range(300):  # steady traffic never accumulates a phantom count
            conn.send_text(payload)
            await wait_for(lambda: conn.write_buffer_size() == 0)
        assert conn.is_open and conn.is_writable
    finally:
        await conn.finish()


async def test_denial_response_leaves_framing_to_the_asgi_server() -> None:
    """A refusal through ``websocket.http.response`` carries no Content-Length of ours:
    servers frame it themselves (uvicorn's websockets implementation always adds one, and
    two copies make clients fail to parse the 401/403)."""
    from maim_message.transport.asgi import refuse
    from maim_message.transport.base import HttpReply

    sent: List[Dict[str, Any]] = []

    async def send(message: Dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "extensions": {"websocket.http.response": {}}}
    await refuse(scope, send, HttpReply(403, b"Authentication failed: no\n"))
    assert [m["type"] for m in sent] == ["websocket.http.response.start",
                                         "websocket.http.response.body"]
    assert sent[0]["status"] == 403
    names = [name for name, _ in sent[0]["headers"]]
    assert b"content-length" not in names
    assert b"content-type" in names
    assert sent[1]["body"] == b"Authentication failed: no\n"
