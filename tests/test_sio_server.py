"""The hub's Socket.IO dialect on the wire, with hand-written clients (no Socket.IO library):
raw HTTP long-polling and a bare WebSocket, against a real ``WebSocketServer``.

What 0.7.x clients rely on (wire-0.7.md §8.1) and what we do differently from 0.7.5 on
purpose: refusal as ``44`` before anything is read, a graceful stop without ``41``,
Engine.IO heartbeat, bad versions and sessions answered with 400.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List, Optional, Tuple

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from maim_message.server import WebSocketServer, create_server_config

from .conftest import free_port

pytestmark = pytest.mark.timeout(30)

KEY = "good-key"


def envelope(msg_id: str, platform: str = "raw") -> Dict[str, Any]:
    return {"ver": 1, "msg_id": msg_id, "type": "sys_std", "meta": {}, "payload": {
        "message_info": {"platform": platform, "message_id": msg_id, "time": 1.0},
        "message_segment": {"type": "text", "data": "hi"},
        "message_dim": {"api_key": KEY, "platform": platform}}}


class Hub:
    def __init__(self, **extra: Any) -> None:
        self.received: List[Tuple[Any, Dict[str, Any]]] = []
        self.closed: List[str] = []

        async def on_message(message: Any, meta: Dict[str, Any]) -> None:
            self.received.append((message, meta))

        async def on_disconnect(uuid: str, meta: Dict[str, Any]) -> None:
            self.closed.append(uuid)

        self.port = free_port()
        self.server = WebSocketServer(create_server_config(
            host="127.0.0.1", port=self.port, on_auth=lambda m: m["api_key"] == KEY,
            on_auth_extract_user=lambda m: "user", on_message=on_message,
            on_disconnect=on_disconnect, **extra))


@pytest.fixture
async def hub() -> Any:
    h = Hub()
    await h.server.start()
    yield h
    await h.server.stop()


async def http(port: int, method: str, target: str, body: bytes = b"",
               headers: Optional[Dict[str, str]] = None) -> Tuple[int, bytes]:
    """One HTTP/1.1 request on its own connection: (status, body)."""
    status, _, rest = await http_full(port, method, target, body, headers)
    return status, rest


async def http_full(port: int, method: str, target: str, body: bytes = b"",
                    headers: Optional[Dict[str, str]] = None) -> Tuple[int, str, bytes]:
    """(status, lower-cased head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {target} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}",
             "Connection: close"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    try:
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.decode("latin-1").lower(), rest


def auth(key: str = KEY) -> Dict[str, str]:
    return {"x-apikey": key, "x-platform": "raw", "x-uuid": f"raw-{key}"}


async def polling_session(port: int, key: str = KEY) -> str:
    status, body = await http(port, "GET", "/ws/?EIO=4&transport=polling", headers=auth(key))
    assert status == 200 and body[:1] == b"0"
    opened = json.loads(body[1:])
    assert opened["upgrades"] == ["websocket"] and opened["maxPayload"] == 104_857_600
    assert opened["pingInterval"] == 20000 and opened["pingTimeout"] == 20000
    return str(opened["sid"])


async def test_polling_only_exchange(hub: Hub) -> None:
    sid = await polling_session(hub.port)
    q = f"/ws/?EIO=4&transport=polling&sid={sid}"
    assert await http(hub.port, "POST", q, b"40") == (200, b"ok")
    status, body = await http(hub.port, "GET", q)
    assert status == 200 and body.startswith(b'40{"sid":')
    two = b"\x1e".join(b'42["message",' + json.dumps(envelope(i)).encode() + b"]"
                       for i in ("p-1", "p-2"))
    assert await http(hub.port, "POST", q, two) == (200, b"ok")
    status, body = await http(hub.port, "GET", q)
    acks = [json.loads(p[2:])[1] for p in body.split(b"\x1e")]
    assert [a["meta"]["acked_msg_id"] for a in acks] == ["p-1", "p-2"]
    assert {m.message_info.message_id for m, _ in hub.received} == {"p-1", "p-2"}
    # a held GET is answered as soon as the hub sends something
    poll = asyncio.ensure_future(http(hub.port, "GET", q))
    await asyncio.sleep(0.2)
    assert not poll.done()
    from maim_message.message import APIMessageBase

    msg = APIMessageBase.from_dict(envelope("s-1")["payload"])
    assert await hub.server.send_message(msg) == {"raw-good-key": True}
    status, body = await poll
    sent = json.loads(body[2:])
    assert sent[0] == "message" and sent[1]["payload"]["message_info"]["message_id"] == "s-1"


async def test_refused_key_gets_44_and_nothing_is_read(hub: Hub) -> None:
    sid = await polling_session(hub.port, key="bad")
    q = f"/ws/?EIO=4&transport=polling&sid={sid}"
    early = b'42["message",' + json.dumps(envelope("early")).encode() + b"]"
    assert await http(hub.port, "POST", q, early + b"\x1e40\x1e" + early) == (200, b"ok")
    status, body = await http(hub.port, "GET", q)
    assert status == 200 and body.startswith(b'44{"message":"Authentication failed')
    await asyncio.sleep(0.1)
    assert hub.received == [] and hub.server.connection_uuids() == []
    assert hub.server.get_stats()["failed_auths"] == 1


async def test_direct_websocket_and_graceful_stop_without_41() -> None:
    h = Hub()
    await h.server.start()
    url = f"ws://127.0.0.1:{h.port}/ws/?EIO=4&transport=websocket"
    async with ws_connect(url, additional_headers=auth()) as ws:
        opened = await ws.recv()
        assert opened[:1] == "0" and json.loads(opened[1:])["upgrades"] == []
        await ws.send("40")
        assert (await ws.recv()).startswith('40{"sid":')
        await ws.send("4217" + json.dumps(["message", envelope("d-1")]))
        frames = {await ws.recv(), await ws.recv()}
        assert "4317[]" in frames  # the Socket.IO ack id is answered
        assert any(f.startswith('42["message",{') and '"sys_ack"' in f for f in frames)
        await h.server.stop()
        rest: List[str] = []
        with pytest.raises(ConnectionClosed):
            while True:
                rest.append(str(await ws.recv()))
        assert "41" not in rest and "1" not in rest  # 0.7.5 clients would never come back
        assert ws.close_code == 1001
    assert [m.message_info.message_id for m, _ in h.received] == ["d-1"]


async def test_heartbeat_drops_a_silent_client() -> None:
    h = Hub(ping_interval=0.2, ping_timeout=0.3)
    await h.server.start()
    try:
        url = f"ws://127.0.0.1:{h.port}/ws/?EIO=4&transport=websocket"
        async with ws_connect(url, additional_headers=auth(), ping_interval=None) as ws:
            await ws.recv()
            await ws.send("40")
            await ws.recv()
            assert await asyncio.wait_for(ws.recv(), 2) == "2"
            await ws.send("3")  # answered once: still there after the next interval
            assert await asyncio.wait_for(ws.recv(), 2) == "2"
            assert h.server.connection_uuids() == ["raw-good-key"]
            with pytest.raises(ConnectionClosed):  # not answered: dropped
                await asyncio.wait_for(ws.recv(), 3)
        await asyncio.wait_for(_until(lambda: h.closed == ["raw-good-key"]), 5)
    finally:
        await h.server.stop()


async def _until(cond: Any) -> None:
    while not cond():
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("target,status", [
    ("/ws/?EIO=3&transport=polling", 400),
    ("/ws/?EIO=4&transport=polling&sid=nope", 400),
    ("/ws/?EIO=4&transport=carrier-pigeon", 400),
    ("/socket.io/?EIO=4&transport=polling", 404),
])
async def test_bad_engineio_requests(hub: Hub, target: str, status: int) -> None:
    assert (await http(hub.port, "GET", target, headers=auth()))[0] == status


async def test_cors_preflight_and_origin(hub: Hub) -> None:
    status, head, _ = await http_full(
        hub.port, "OPTIONS", "/ws/?EIO=4&transport=polling",
        headers={"Origin": "http://app.example", "Access-Control-Request-Headers": "x-apikey"})
    assert status == 204
    assert "access-control-allow-origin: http://app.example" in head
    assert "access-control-allow-headers: x-apikey" in head
    status, head, body = await http_full(hub.port, "GET", "/ws/?EIO=4&transport=polling",
                                         headers={"Origin": "http://app.example", **auth()})
    assert status == 200 and body[:1] == b"0"
    assert "access-control-allow-credentials: true" in head


async def test_socketio_can_be_turned_off() -> None:
    h = Hub(enable_socketio=False)
    await h.server.start()
    try:
        status, _ = await http(h.port, "GET", "/ws/?EIO=4&transport=polling", headers=auth())
        assert status == 404
    finally:
        await h.server.stop()


async def test_sessions_waiting_for_connect_are_bounded(hub: Hub) -> None:
    """Accepted and refused pending sessions are bounded apart: key-less handshakes never
    lock valid clients out."""
    endpoint = hub.server.socketio_endpoint()
    assert endpoint is not None
    endpoint.max_pending = 2
    await polling_session(hub.port, key="bad")
    await polling_session(hub.port, key="")
    status, _ = await http(hub.port, "GET", "/ws/?EIO=4&transport=polling", headers=auth("x"))
    assert status == 503  # a third refused one
    await polling_session(hub.port)  # valid clients still get in
    await polling_session(hub.port)
    status, _ = await http(hub.port, "GET", "/ws/?EIO=4&transport=polling", headers=auth())
    assert status == 503


async def test_pending_sessions_are_bounded_per_address_and_a_refused_one_ends_with_44(
        hub: Hub) -> None:
    endpoint = hub.server.socketio_endpoint()
    assert endpoint is not None
    endpoint.max_pending_per_ip = 2
    refused = await polling_session(hub.port, key="bad")
    await polling_session(hub.port)
    status, _ = await http(hub.port, "GET", "/ws/?EIO=4&transport=polling", headers=auth())
    assert status == 503  # this address has 2 sessions waiting for their CONNECT
    q = f"/ws/?EIO=4&transport=polling&sid={refused}"
    assert await http(hub.port, "POST", q, b"40") == (200, b"ok")
    status, body = await http(hub.port, "GET", q)
    assert status == 200 and body.startswith(b'44{"message":')
    assert (await http(hub.port, "GET", q))[0] == 400  # its 44 went out: session over
    sid = await polling_session(hub.port)  # and its slot is free again
    assert sid in endpoint.sessions and refused not in endpoint.sessions


async def test_on_auth_runs_once_per_socketio_connection() -> None:
    """The credentials are the handshake's headers (the CONNECT carries none the 0.7 wire
    uses): the user's on_auth is asked once, not again at the CONNECT."""
    calls: List[str] = []

    def on_auth(metadata: Dict[str, Any]) -> bool:
        calls.append(metadata["api_key"])
        return metadata["api_key"] == KEY

    port = free_port()
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=port, on_auth=on_auth,
        on_auth_extract_user=lambda m: "user"))
    await server.start()
    try:
        sid = await polling_session(port)
        q = f"/ws/?EIO=4&transport=polling&sid={sid}"
        assert await http(port, "POST", q, b"40") == (200, b"ok")
        assert (await http(port, "GET", q))[1].startswith(b'40{"sid":')
        assert server.connection_uuids() == ["raw-good-key"]
        assert calls == [KEY]
        stats = server.get_stats()
        assert (stats["total_auth_requests"], stats["successful_auths"]) == (1, 1)
    finally:
        await server.stop()


async def test_connect_is_refused_when_auth_changed_since_the_handshake() -> None:
    """The check runs again at CONNECT once the server was told that decisions taken may
    be stale (``invalidate_auth``: the hub calls it on a revoke, a reload, a stop): a key
    withdrawn after the Engine.IO handshake does not connect."""
    allowed = {KEY}
    received: List[Any] = []

    async def on_message(message: Any, meta: Dict[str, Any]) -> None:
        received.append(message)

    port = free_port()
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=port, on_auth=lambda m: m["api_key"] in allowed,
        on_auth_extract_user=lambda m: "user", on_message=on_message))
    await server.start()
    try:
        kept = await polling_session(port)
        withdrawn = await polling_session(port)
        allowed.clear()
        server.invalidate_auth()
        q = f"/ws/?EIO=4&transport=polling&sid={withdrawn}"
        assert await http(port, "POST", q, b"40") == (200, b"ok")
        status, body = await http(port, "GET", q)
        assert status == 200 and body.startswith(b'44{"message":"Authentication failed')
        assert server.connection_uuids() == []
        allowed.add(KEY)
        q = f"/ws/?EIO=4&transport=polling&sid={kept}"
        assert await http(port, "POST", q, b"40") == (200, b"ok")
        assert (await http(port, "GET", q))[1].startswith(b'40{"sid":')
        assert server.connection_uuids() == ["raw-good-key"]
        stats = server.get_stats()
        assert (stats["total_auth_requests"], stats["successful_auths"],
                stats["failed_auths"]) == (2, 1, 1)  # one request per client
    finally:
        await server.stop()


async def test_frames_right_after_connect_on_a_websocket_are_kept_in_order(hub: Hub) -> None:
    url = f"ws://127.0.0.1:{hub.port}/ws/?EIO=4&transport=websocket"
    async with ws_connect(url, additional_headers=auth()) as ws:
        await ws.recv()
        await ws.send("40")  # no wait for the answer: the next frames follow at once
        for i in range(3):
            await ws.send('42["message",' + json.dumps(envelope(f"w-{i}")) + "]")
        assert (await ws.recv()).startswith('40{"sid":')
        await asyncio.wait_for(_until(lambda: len(hub.received) == 3), 5)
    assert [m.message_info.message_id for m, _ in hub.received] == ["w-0", "w-1", "w-2"]


async def test_our_client_on_the_socketio_wire_of_our_server(hub: Hub) -> None:
    """``ClientConfig.protocol="socketio"``: our client and our hub on the 0.7 wire."""
    from maim_message.client import WebSocketClient, create_client_config
    from maim_message.message import APIMessageBase

    got: List[Any] = []
    url = f"ws://127.0.0.1:{hub.port}/ws"
    client = WebSocketClient(create_client_config(
        url, KEY, platform="raw", protocol="socketio", on_message=lambda m, meta: got.append(m)))
    bad = WebSocketClient(create_client_config(url, "bad", platform="raw", protocol="socketio"))
    try:
        assert await client.connect()
        assert client._conn is not None and client._conn.generation == "socketio"
        assert await client.send_message(APIMessageBase.from_dict(envelope("o-1")["payload"]))
        await asyncio.wait_for(_until(lambda: len(hub.received) == 1), 5)
        assert hub.received[0][1]["uuid"] == client._uuid
        await asyncio.wait_for(_until(lambda: client.get_stats()["pending_messages"] == 0), 5)
        msg = APIMessageBase.from_dict(envelope("o-2")["payload"])
        assert await hub.server.send_message(msg) == {client._uuid: True}
        await asyncio.wait_for(_until(lambda: len(got) == 1), 5)
        assert got[0].message_info.message_id == "o-2"

        assert await bad.connect() is False
        assert bad._conn is not None and "Authentication failed" in (bad._conn.last_error or "")
        assert len(hub.received) == 1
    finally:
        await bad.stop()
        await client.stop()


async def test_messages_over_the_aiohttp_client_limit_are_held_back(hub: Hub) -> None:
    """A python-engineio client (aiohttp) drops its WebSocket on messages over 4 MiB and
    would get them resent forever: the hub keeps them in the outbox instead."""
    from maim_message.message import APIMessageBase

    url = f"ws://127.0.0.1:{hub.port}/ws/?EIO=4&transport=websocket"
    headers = {**auth(), "User-Agent": "Python/3.11 aiohttp/3.14.5"}
    async with ws_connect(url, additional_headers=headers, user_agent_header=None,
                          max_size=None) as ws:
        await ws.recv()
        await ws.send("40")
        await ws.recv()
        big = envelope("big")
        big["payload"]["message_segment"]["data"] = "x" * (5 * 1024 * 1024)
        assert await hub.server.send_message(APIMessageBase.from_dict(big["payload"])) == {
            "raw-good-key": True}  # accepted into the outbox
        small = APIMessageBase.from_dict(envelope("small")["payload"])
        assert await hub.server.send_message(small) == {"raw-good-key": True}
        frame = await asyncio.wait_for(ws.recv(), 5)
        assert '"small"' in frame and len(frame) < 10_000  # the big one was not written
        assert hub.server.connection_uuids() == ["raw-good-key"]
        assert hub.server.get_stats()["delivery"]["outbox_depth"] >= 1


def test_client_protocol_is_validated() -> None:
    from maim_message.client import WebSocketClient, create_client_config

    with pytest.raises(ValueError):
        WebSocketClient(create_client_config("ws://127.0.0.1:1/ws", "k", protocol="carrier"))
    for ok in ("auto", "websocket", "socketio", "SocketIO"):
        WebSocketClient(create_client_config("ws://127.0.0.1:1/ws", "k", protocol=ok))


async def test_overlong_ack_id_closes_the_session_without_a_loop_error(hub: Hub) -> None:
    """An ack id int() refuses is a protocol error of that session only: it is closed
    cleanly, nothing escapes into the event loop, other clients carry on."""
    loop_errors: List[Dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    url = f"ws://127.0.0.1:{hub.port}/ws/?EIO=4&transport=websocket"
    try:
        async with ws_connect(url, additional_headers=auth()) as ws:
            await ws.recv()
            await ws.send("40")
            assert (await ws.recv()).startswith('40{"sid":')
            await ws.send("42" + "1" * 5000 + json.dumps(["message", envelope("long-ack")]))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        sid = await polling_session(hub.port)  # the hub still serves
        q = f"/ws/?EIO=4&transport=polling&sid={sid}"
        assert await http(hub.port, "POST", q, b"40") == (200, b"ok")
        assert (await http(hub.port, "GET", q))[1].startswith(b'40{"sid":')
    finally:
        loop.set_exception_handler(None)
    assert loop_errors == []
    assert hub.received == []


def _messages_with_acks(first: int, count: int) -> bytes:
    return b"\x1e".join(f"42{first + i}".encode() + json.dumps(
        ["message", envelope(f"q-{first + i}")]).encode() for i in range(count))


async def test_polling_client_that_never_reads_is_dropped_by_the_heartbeat() -> None:
    """Messages and bare pongs without a GET: the PING was never read, so the pong does not
    count and the session times out."""
    h = Hub(ping_interval=0.2, ping_timeout=0.3)
    await h.server.start()
    try:
        status, body = await http(h.port, "GET", "/ws/?EIO=4&transport=polling", headers=auth())
        assert status == 200 and json.loads(body[1:])["pingInterval"] == 200
        q = f"/ws/?EIO=4&transport=polling&sid={json.loads(body[1:])['sid']}"
        assert await http(h.port, "POST", q, b"40") == (200, b"ok")
        for round_ in range(40):
            status, _ = await http(h.port, "POST", q, _messages_with_acks(round_ * 5, 5)
                                   + b"\x1e3")
            if status != 200:
                break
            await asyncio.sleep(0.05)
        assert status == 400  # "Invalid session": it was dropped
        await asyncio.wait_for(_until(lambda: h.closed == ["raw-good-key"]), 5)
    finally:
        await h.server.stop()


async def test_polling_send_queue_is_capped_at_max_write_buffer(caplog: Any) -> None:
    """Acks queued for a polling client that never GETs stop at max_write_buffer: the
    session is dropped as a slow consumer (1008), as a 0.6 connection would be."""
    h = Hub(max_write_buffer=64 * 1024)
    await h.server.start()
    try:
        sid = await polling_session(h.port)
        q = f"/ws/?EIO=4&transport=polling&sid={sid}"
        assert await http(h.port, "POST", q, b"40") == (200, b"ok")
        sock = h.server.socketio_endpoint().sessions[sid]  # type: ignore[union-attr]
        status = 200
        for round_ in range(100):
            status, _ = await http(h.port, "POST", q, _messages_with_acks(round_ * 50, 50))
            if status != 200:
                break
            assert sock.session.queued_bytes <= 64 * 1024 + 8192
        assert status == 400
        await asyncio.wait_for(_until(lambda: h.closed == ["raw-good-key"]), 5)
        assert sock.close_code == 1008
        assert "send queue over limit" in caplog.text
    finally:
        await h.server.stop()


async def test_a_request_for_a_session_not_on_this_node_is_refused_and_explained(
        caplog: pytest.LogCaptureFixture) -> None:
    """Several nodes on one port (or a non-sticky load balancer) send a 0.7 client's
    requests to a node that does not have its session: 400, and the log says why (once,
    then at DEBUG)."""
    import logging

    h = Hub()
    await h.server.start()
    try:
        q = "/ws/?EIO=4&transport=polling&sid=elsewhere0123456789"
        with caplog.at_level(logging.DEBUG, logger="maim_message.sio"):
            assert (await http(h.port, "POST", q, b"40"))[0] == 400
            assert (await http(h.port, "GET", q))[0] == 400
        said = [r for r in caplog.records if "session this node does not have" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG]
        assert "sticky sessions" in said[0].getMessage()
    finally:
        await h.server.stop()
