"""0.7.x (Socket.IO) peers and our hub and client: the published maim-message 0.7.5 and a
plain python-socketio client, each in a subprocess of the 0.7.5 virtualenv.

Cells:
- 0.7.5 ``WebSocketClient`` -> our ``WebSocketServer`` (polling handshake, upgrade):
  messages and custom messages both ways, acks, and a graceful server restart that the
  0.7.5 client survives (0.7.5's own server would have sent it ``41``: it never returns);
- our ``WebSocketClient`` (plain ``ws://host:port/ws`` config) -> 0.7.5 ``WebSocketServer``:
  the generation is detected, messages and custom messages flow both ways, the client
  comes back after the 0.7.5 server's graceful stop (``41``), a bad key stops the client
  without retrying;
- a 0.6.8 client and a 0.7.5 client on one of our servers at once, messages relayed by
  a server handler in both directions;
- a plain python-socketio client (no maim_message) as the external-client guide of
  wire-0.7.md §8.2 describes, over WebSocket and over long-polling only;
- a 0.7.5 client with a bad key: refused at CONNECT, nothing of it reaches a handler;
- the legacy family both ways, hubs mounted in an ASGI app, the standalone hub, TLS.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from maim_message.client import WebSocketClient, create_client_config
from maim_message.message import APIMessageBase
from maim_message.server import WebSocketServer, create_server_config

from .test_interop_api import Inbox, Upstream, free_port, has_id, make_message, until

pytestmark = pytest.mark.timeout(120)

KEYS = {"key-06": "user-06", "key-07": "user-07", "key-alpha": "user-alpha"}
T = 15.0


@pytest.fixture
async def spawn07(upstream07_python: str, tmp_path: Path):
    """Start scripts under the 0.7.5 interpreter; each is killed by its PID at teardown."""
    started: List[Upstream] = []
    workdir = tmp_path / "upstream07-cwd"
    workdir.mkdir()

    async def _spawn(script: str, opts: Dict[str, Any], name: str,
                     python: str = upstream07_python) -> Upstream:
        proc = await Upstream.spawn(python, script, opts, workdir, name)
        started.append(proc)
        return proc

    try:
        yield _spawn
    finally:
        for proc in started:
            await proc.kill()


def our_server(port: int, inbox: Inbox, **extra: Any) -> WebSocketServer:
    async def on_message(message: APIMessageBase, metadata: Dict[str, Any]) -> None:
        inbox.put((message, metadata))

    async def on_note(envelope: Dict[str, Any], metadata: Dict[str, Any]) -> None:
        inbox.put(("custom", envelope, metadata))

    config = create_server_config(
        host="127.0.0.1", port=port, on_auth=lambda m: m["api_key"] in KEYS,
        on_auth_extract_user=lambda m: KEYS[m["api_key"]], on_message=on_message, **extra)
    config.register_custom_handler("ping", on_note)
    return WebSocketServer(config)


async def client07(spawn07: Any, port: int, key: str, platform: str = "qq") -> Upstream:
    up = await spawn07("api_client.py", {"url": f"ws://127.0.0.1:{port}/ws", "api_key": key,
                                         "platform": platform, "reconnect_delay": 0.5},
                       f"client07-{key}")
    hello = await up.ready()
    assert "0.7.5" in hello["maim_message"] or "upstream-0.7.5" in hello["maim_message"]
    return up


async def test_07_client_to_our_server(spawn07: Any) -> None:
    inbox = Inbox("our server")
    port = free_port()
    server = our_server(port, inbox)
    await server.start()
    try:
        up = await client07(spawn07, port, "key-alpha")
        reply = await up.call("connect")
        assert reply["connected"] is True, reply
        uuid = reply["uuid"]
        await until(lambda: uuid in server.connection_uuids(), what="0.7.5 client registered")

        sent = await up.call("send_message", message=make_message("from 0.7.5", "c-1").to_dict())
        message, metadata = await inbox.get(has_id("c-1"), what="0.7.5 message")
        assert message.message_segment.data[0].data == "from 0.7.5"
        assert metadata["uuid"] == uuid and metadata["api_key"] == "key-alpha"
        assert metadata["platform"] == "qq" and metadata["user_id"] == "user-alpha"
        # our sys_ack reached the 0.7.5 client: the frame left its resend cache
        await up.poll("cache", lambda r: sent["msg_id"] not in r["ids"])

        result = await server.send_message(make_message("to 0.7.5", "s-1"))
        assert result == {uuid: True}
        event = await up.events.get(has_id("s-1"), what="server message at 0.7.5")
        assert event["meta"]["target_user"] == "user-alpha"
        # the 0.7.5 client acked it: the outbox is empty again
        await until(lambda: server.get_stats()["delivery"]["outbox_depth"] == 0, what="ack")

        await up.call("send_custom", type="ping", payload={"n": 1})
        custom = await inbox.get(lambda i: i[0] == "custom", what="custom from 0.7.5")
        assert custom[1]["type"] == "custom_ping" and custom[1]["payload"] == {"n": 1}
        await server.send_custom_message("note", {"hello": 7}, connection_uuid=uuid)
        note = await up.events.get(lambda e: e.get("event") == "custom", what="custom to 0.7.5")
        assert note["payload"] == {"hello": 7}

        # A graceful restart: no 41 is sent, so the 0.7.5 client comes back by itself.
        await server.stop()
        await up.call("wait_inactive")
        server = our_server(port, inbox)
        await server.start()
        await until(lambda: uuid in server.connection_uuids(), timeout=30,
                    what="0.7.5 client back after a graceful restart")
        assert await server.send_message(make_message("after restart", "s-2")) == {uuid: True}
        await up.events.get(has_id("s-2"), what="message after the restart")
    finally:
        await server.stop()


async def test_our_client_to_07_server(spawn07: Any) -> None:
    port = free_port()
    up = await spawn07("api_server.py", {"port": port, "keys": {"key-alpha": "user-alpha"}},
                       "server07")
    await up.ready()
    got: Inbox = Inbox("our client")
    client = WebSocketClient(create_client_config(
        f"ws://127.0.0.1:{port}/ws", "key-alpha", platform="qq", reconnect_delay=0.2,
        on_message=lambda m, meta: got.put((m, meta))))
    client.register_custom_handler("note", lambda payload: got.put(("custom", payload)))
    bad = WebSocketClient(create_client_config(f"ws://127.0.0.1:{port}/ws", "wrong",
                                               platform="qq", reconnect_delay=0.2))
    try:
        assert await client.connect()
        assert client._conn is not None and client._conn.generation == "socketio"
        assert await client.send_message(make_message("to 0.7.5 server", "c-7"))
        event = await up.events.get(has_id("c-7"), what="our message at 0.7.5")
        assert event["metadata"]["api_key"] == "key-alpha"
        assert event["metadata"]["uuid"] == client._uuid
        await until(lambda: client.get_stats()["pending_messages"] == 0, what="0.7.5 ack")

        reply = await up.call("send_message", message=make_message("back", "s-7").to_dict())
        assert list(reply["result"].values()) == [True]
        message, meta = await got.get(has_id("s-7"), what="0.7.5 message at our client")
        assert message.message_segment.data[0].data == "back"
        assert meta["target_user"] == "user-alpha"

        assert await client.send_custom_message("ping", {"k": "v"})
        custom = await up.events.get(lambda e: e.get("event") == "custom", what="custom")
        assert custom["envelope"]["type"] == "custom_ping"
        await up.call("send_custom", type="custom_note", payload={"x": 1},
                      connection_uuid=client._uuid)
        assert await got.get(lambda i: i[0] == "custom", what="custom at our client") == (
            "custom", {"x": 1})

        # 0.7.5's graceful stop sends 41 (its own clients never come back): ours does
        connects = client._conn.stats["successful_connects"]
        await up.call("restart")
        await until(lambda: client._conn is not None
                    and client._conn.stats["successful_connects"] > connects
                    and client._conn.connected, what="our client back after the 0.7.5 stop")
        await up.call("wait_connections", n=1)
        reply = await up.call("send_message", message=make_message("again", "s-8").to_dict())
        assert list(reply["result"].values()) == [True]
        await got.get(has_id("s-8"), what="message after the 0.7.5 restart")

        # a refused key: reported once, not retried (0.7.5 refuses with 41 after CONNECT)
        await bad.connect()
        await until(lambda: bad._conn is not None and not bad._conn._wanted,
                    what="bad key given up")
        assert "refused" in (bad._conn.last_error or "")
        attempts = bad._conn.stats["connect_attempts"]
        await asyncio.sleep(0.5)
        assert bad._conn.stats["connect_attempts"] == attempts
    finally:
        await bad.stop()
        await client.stop()


async def test_06_and_07_clients_exchange_through_our_server(
    spawn07: Any, upstream_python: str
) -> None:
    """A 0.6.8 adapter and a 0.7.5 adapter on one hub; a handler relays between them."""
    inbox = Inbox("relay")
    port = free_port()
    peer_of = {"key-06": ("key-07", "tg"), "key-07": ("key-06", "qq")}
    holder: Dict[str, WebSocketServer] = {}

    async def relay(message: APIMessageBase, metadata: Dict[str, Any]) -> None:
        inbox.put((message, metadata))
        key, platform = peer_of[metadata["api_key"]]
        message.message_dim.api_key, message.message_dim.platform = key, platform
        await holder["server"].send_message(message)

    config = create_server_config(
        host="127.0.0.1", port=port, on_auth=lambda m: m["api_key"] in KEYS,
        on_auth_extract_user=lambda m: KEYS[m["api_key"]], on_message=relay)
    server = holder["server"] = WebSocketServer(config)
    await server.start()
    try:
        up06 = await spawn07("api_client.py", {"url": f"ws://127.0.0.1:{port}/ws",
                                               "api_key": "key-06", "platform": "qq"},
                             "client06", python=upstream_python)
        await up06.ready()
        up07 = await client07(spawn07, port, "key-07", platform="tg")
        assert (await up06.call("connect"))["connected"] is True
        assert (await up07.call("connect"))["connected"] is True
        await until(lambda: server.get_user_count() == 2, what="both clients registered")

        await up06.call("send_message",
                        message=make_message("06 to 07", "m-6", "key-06", "qq").to_dict())
        event = await up07.events.get(has_id("m-6"), what="0.6.8 message at 0.7.5")
        assert event["message"]["message_segment"]["data"][0]["data"] == "06 to 07"

        await up07.call("send_message",
                        message=make_message("07 to 06", "m-7", "key-07", "tg").to_dict())
        event = await up06.events.get(has_id("m-7"), what="0.7.5 message at 0.6.8")
        assert event["message"]["message_segment"]["data"][0]["data"] == "07 to 06"
        relayed: List[Tuple[Any, Dict[str, Any]]] = [inbox.seen[0], inbox.seen[1]]
        assert {meta["api_key"] for _, meta in relayed} == {"key-06", "key-07"}
    finally:
        await server.stop()


def _envelope(msg_id: str, key: str, platform: str) -> Dict[str, Any]:
    return {"ver": 1, "msg_id": msg_id, "type": "sys_std",
            "meta": {"sender_user": key, "platform": platform, "timestamp": 1.0},
            "payload": make_message("plain", msg_id, key, platform).to_dict()}


@pytest.mark.parametrize("transports", [["polling", "websocket"], ["polling"], ["websocket"]])
async def test_plain_socketio_client(spawn07: Any, transports: List[str]) -> None:
    inbox = Inbox("our server")
    port = free_port()
    server = our_server(port, inbox)
    await server.start()
    try:
        up = await spawn07("sio_plain_client.py", {
            "url": f"http://127.0.0.1:{port}", "api_key": "key-alpha", "platform": "plain",
            "transports": transports}, "plain")
        await up.events.get(lambda e: e["event"] == "READY", what="READY")
        reply = await up.call("connect")
        assert reply["connected"] is True, reply
        assert reply["transport"] == transports[-1]
        uuid = reply["uuid"]
        await up.call("emit", envelope=_envelope("p-1", "key-alpha", "plain"))
        message, metadata = await inbox.get(has_id("p-1"), what="plain client message")
        assert message.message_dim.platform == "plain"
        assert metadata["uuid"] == uuid and metadata["platform"] == "plain"
        ack = await up.events.get(lambda e: e.get("event") == "received", what="sys_ack")
        assert ack["envelope"]["type"] == "sys_ack"
        assert ack["envelope"]["meta"]["acked_msg_id"] == "p-1"

        result = await server.send_message(make_message("to plain", "s-p", "key-alpha", "plain"))
        assert result == {uuid: True}
        got = await up.events.get(
            lambda e: e.get("event") == "received" and e["envelope"]["type"] == "sys_std",
            what="server message at the plain client")
        assert got["envelope"]["payload"]["message_info"]["message_id"] == "s-p"
        await until(lambda: server.get_stats()["delivery"]["outbox_depth"] == 0,
                    what="plain client's ack")
        await up.call("disconnect")
        await until(lambda: uuid not in server.connection_uuids(), what="disconnect seen")
    finally:
        await server.stop()


async def test_07_client_with_bad_key_is_refused(spawn07: Any) -> None:
    inbox = Inbox("our server")
    port = free_port()
    server = our_server(port, inbox)
    await server.start()
    try:
        up = await client07(spawn07, port, "not-a-key")
        reply = await up.call("connect", timeout=30)
        assert reply["connected"] is False
        assert reply["last_error"], reply  # 0.7.5 reports the CONNECT_ERROR and gives up
        sent = await up.call("send_message", message=make_message("x", "bad-1").to_dict())
        assert sent["ok"] is False
        await asyncio.sleep(0.3)
        assert inbox.seen == []
        assert server.connection_uuids() == []
        assert server.get_stats()["failed_auths"] >= 1
        assert server.get_stats()["network"]["messages_received"] == 0
    finally:
        await server.stop()


async def test_our_multi_client_to_07_server(spawn07: Any) -> None:
    from maim_message.client import MultiClientConfig, WebSocketMultiClient

    port = free_port()
    keys = {"key-a": "user-a", "key-b": "user-b"}
    up = await spawn07("api_server.py", {"port": port, "keys": keys}, "server07-multi")
    await up.ready()
    got = Inbox("multi client")
    client = WebSocketMultiClient(MultiClientConfig(
        on_message=lambda m, meta: got.put((m, meta))))
    url = f"ws://127.0.0.1:{port}/ws"
    assert client.register_connection("a", url, "key-a", "qq")
    assert client.register_connection("b", url, "key-b", "tg")
    try:
        assert await client.connect() == {"a": True, "b": True}
        assert await client.send_message("b", make_message("from b", "mb-1", "key-b", "tg"))
        event = await up.events.get(has_id("mb-1"), what="multi client message at 0.7.5")
        assert event["metadata"]["api_key"] == "key-b" and event["metadata"]["platform"] == "tg"
        await up.call("send_message", message=make_message("to a", "ma-1", "key-a").to_dict())
        _, meta = await got.get(has_id("ma-1"), what="0.7.5 message at connection a")
        assert meta["connection_name"] == "a"
    finally:
        await client.stop()


# -- the legacy family (MessageServer / MessageClient) -------------------------------------


async def test_07_legacy_client_to_our_message_server(upstream07_python: str,
                                                      tmp_path: Path) -> None:
    """A 0.7.5 ``MessageClient`` (Socket.IO, ``platform``/``Authorization`` headers) on our
    ``MessageServer``: messages and custom messages both ways, and back after a graceful
    restart; a wrong token is refused at CONNECT and nothing of it reaches a handler."""
    from .test_legacy_interop import PLATFORM, TOKEN, OurServer, UpClient, canon, sample_message

    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    server = OurServer("ws", port)
    client = UpClient(upstream07_python, url, tmp_path)
    intruder = UpClient(upstream07_python, url, tmp_path)
    intruder.peer.args[-1] = "wrong-token"
    try:
        await server.start()
        await client.start()
        await client.wait_connected()
        await server.wait_connected()
        up = sample_message("0.7.5 legacy ü")
        assert await client.send(canon(up))
        assert await server.next_message(0) == canon(up)
        down = sample_message("from our legacy server")
        assert await server.send(canon(down))
        assert await client.next_message(0) == canon(down)
        assert await client.custom({"a": 1})
        got = await server.next_custom(0)
        assert (got["platform"], got["message_type_name"], got["content"]) == (
            PLATFORM, "cust", {"a": 1})
        assert await server.custom({"b": 2})
        assert (await client.next_custom(0))["content"] == {"b": 2}

        await intruder.start()
        # our refusal, 44{"message":"invalid token"}, as the 0.7.5 client logs it
        await until(lambda: any("invalid token" in line for line in intruder.peer.stderr),
                    what="refusal logged")
        assert server.server.connected_platforms() == [PLATFORM]

        await server.stop()  # graceful: no 41, so the 0.7.5 client comes back
        await client.wait_disconnected()
        server = OurServer("ws", port)
        await server.start()
        await client.wait_connected()
        await server.wait_connected()
        again = sample_message("after the restart")
        assert await client.send(canon(again))
        assert await server.next_message(0) == canon(again)
        assert TOKEN not in json.dumps(server.messages)
    finally:
        await intruder.stop()
        await client.stop()
        await server.stop()


# -- mounted in a host ASGI application (served by uvicorn) ---------------------------------


async def test_07_clients_on_servers_mounted_in_an_asgi_app(spawn07: Any, upstream07_python: str,
                                                          tmp_path: Path) -> None:
    """A Starlette app hosting both families (``mount_websocket_server`` and
    ``MessageServer(app=...)``, MaiBot's way): a 0.7.5 API client and a 0.7.5 legacy client
    reach them through the app's own port, next to the app's other routes."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from maim_message import MessageServer
    from maim_message.server.asgi import mount_websocket_server

    from .test_asgi import Served
    from .test_legacy_interop import PLATFORM, TOKEN, UpClient, canon, sample_message

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("app route")

    inbox = Inbox("mounted hub")
    hub = our_server(0, inbox)
    app = Starlette(routes=[Route("/hello", hello)])
    endpoint = mount_websocket_server(app, hub, path="/api")
    app.router.lifespan_context = endpoint.lifespan
    legacy = MessageServer(app=app, path="/ws", enable_token=True)
    legacy.add_valid_token(TOKEN)
    legacy_got: List[Any] = []
    legacy.register_message_handler(legacy_got.append)
    async with Served(app) as served:
        await legacy.run()
        api07 = await spawn07("api_client.py", {
            "url": f"ws://127.0.0.1:{served.port}/api", "api_key": "key-alpha",
            "platform": "qq"}, "client07-mounted")
        await api07.ready()
        reply = await api07.call("connect")
        assert reply["connected"] is True, reply
        await api07.call("send_message", message=make_message("mounted", "mt-1").to_dict())
        _, metadata = await inbox.get(has_id("mt-1"), what="0.7.5 message on the mount")
        assert metadata["uuid"] == reply["uuid"]
        assert await hub.send_message(make_message("back", "mt-2")) == {reply["uuid"]: True}
        await api07.events.get(has_id("mt-2"), what="mounted hub message at 0.7.5")

        client = UpClient(upstream07_python, f"ws://127.0.0.1:{served.port}/ws", tmp_path)
        try:
            await client.start()
            await client.wait_connected()
            await until(lambda: PLATFORM in legacy.connected_platforms(), what="legacy peer")
            up = sample_message("legacy on the mount")
            assert await client.send(canon(up))
            await until(lambda: len(legacy_got) == 1, what="legacy message")
            assert legacy_got[0] == canon(up)
            down = sample_message("legacy back")
            assert await legacy.send_message(__import__("maim_message").MessageBase.from_dict(
                canon(down)))
            assert await client.next_message(0) == canon(down)
        finally:
            await client.stop()
            await legacy.stop()


async def test_our_legacy_client_to_07_message_server(upstream07_python: str,
                                                      tmp_path: Path) -> None:
    """Our ``MessageClient`` with its 0.6 config (``ws://host:port/ws``) reaches a 0.7.5
    ``MessageServer``: the generation is detected, messages and custom messages flow both
    ways (0.7.5 adds ``_platform``/``_sid`` to what its handlers get, wire-0.7.md §3.2)."""
    from .test_legacy_interop import PLATFORM, OurClient, UpServer, canon, sample_message

    port = free_port()
    server = UpServer(upstream07_python, "ws", port, tmp_path)
    client = OurClient(f"ws://127.0.0.1:{port}/ws")
    try:
        await server.start()
        await client.start()
        await client.wait_connected()
        await server.wait_connected()
        assert client.client.connection.socketio is True
        up = sample_message("our legacy client ✓")
        assert await client.send(canon(up))
        got = await server.next_message(0)
        assert {k: v for k, v in got.items() if k not in ("_platform", "_sid")} == canon(up)
        assert got["_platform"] == PLATFORM
        down = sample_message("0.7.5 legacy server")
        assert await server.send(canon(down))
        assert await client.next_message(0) == canon(down)
        assert await client.custom({"a": 1})
        got = await server.next_custom(0)
        assert (got["platform"], got["message_type_name"], got["content"]) == (
            PLATFORM, "cust", {"a": 1})
        assert await server.custom({"b": 2})
        assert (await client.next_custom(0))["content"] == {"b": 2}
    finally:
        await client.stop()
        await server.stop()


# -- the standalone hub (python -m maim_message serve) ---------------------------------------


async def test_hub_process_serves_a_06_and_a_07_adapter(spawn07: Any, upstream_python: str,
                                                        tmp_path: Path) -> None:
    """The README's hub: a 0.7.5 adapter (forward_to the bot core) and a 0.6.8 bot core on
    one port exchange messages through the hub's routing."""
    from .test_hub_process import ADAPTER_KEY, CONFIG, CORE_KEY, HubProcess

    workdir = tmp_path / "hub"
    workdir.mkdir()
    hub = HubProcess(workdir)
    try:
        await hub.start(CONFIG)
        adapter = await client07(spawn07, hub.port, ADAPTER_KEY, platform="qq")
        core = await spawn07("api_client.py", {"url": hub.ws_url, "api_key": CORE_KEY,
                                               "platform": "qq"}, "core06",
                             python=upstream_python)
        await core.ready()
        assert (await adapter.call("connect"))["connected"] is True
        assert (await core.call("connect"))["connected"] is True

        await adapter.call("send_message", message=make_message(
            "adapter 0.7.5 -> core 0.6.8", "h-1", ADAPTER_KEY, "qq").to_dict())
        event = await core.events.get(has_id("h-1"), what="0.7.5 adapter message at the core")
        assert event["meta"]["target_user"] == "maibot"
        await core.call("send_message", message=make_message(
            "core 0.6.8 -> adapter 0.7.5", "h-2", ADAPTER_KEY, "qq").to_dict())
        event = await adapter.events.get(has_id("h-2"), what="core reply at the 0.7.5 adapter")
        assert event["meta"]["target_user"] == "napcat"
        assert await hub.terminate() == 0
    finally:
        hub.kill()


async def test_07_client_to_our_tls_server(spawn07: Any, tmp_path_factory: Any) -> None:
    """wss:// with the 0.7.5 client verifying our certificate (trustme CA)."""
    import trustme

    from maim_message.server import create_ssl_server_config

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    d = tmp_path_factory.mktemp("tls07")
    ca_path, cert_path, key_path = d / "ca.pem", d / "server.pem", d / "server.key"
    ca.cert_pem.write_to_path(str(ca_path))
    issued.private_key_pem.write_to_path(str(key_path))
    with open(cert_path, "wb") as fh:
        for blob in issued.cert_chain_pems:
            fh.write(blob.bytes())
    inbox = Inbox("tls server")

    async def on_message(message: APIMessageBase, metadata: Dict[str, Any]) -> None:
        inbox.put((message, metadata))

    port = free_port()
    server = WebSocketServer(create_ssl_server_config(
        host="127.0.0.1", port=port, ssl_certfile=str(cert_path), ssl_keyfile=str(key_path),
        on_auth=lambda m: m["api_key"] in KEYS, on_auth_extract_user=lambda m: KEYS[m["api_key"]],
        on_message=on_message))
    await server.start()
    try:
        up = await spawn07("api_client.py", {"url": f"wss://127.0.0.1:{port}/ws",
                                             "api_key": "key-alpha", "platform": "qq",
                                             "ca": str(ca_path)}, "client07-tls")
        await up.ready()
        reply = await up.call("connect")
        assert reply["connected"] is True, reply
        await up.call("send_message", message=make_message("over TLS", "t-1").to_dict())
        await inbox.get(has_id("t-1"), what="0.7.5 message over TLS")
        assert await server.send_message(make_message("back over TLS", "t-2")) == {
            reply["uuid"]: True}
        await up.events.get(has_id("t-2"), what="TLS message at 0.7.5")
    finally:
        await server.stop()
