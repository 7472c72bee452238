"""Legacy API behaviour in-process on real sockets: exports, token auth, TLS, ``app=``
mounting, connection replacement, error paths, logging, clean shutdown."""

from __future__ import annotations

import asyncio
import importlib
import logging
import ssl
import sys
from pathlib import Path
from typing import Any, Callable, List

import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import maim_message
from maim_message import MessageBase, MessageClient, MessageServer
from maim_message.errors import ServerStartError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import free_port

T = 10.0


async def until(cond: Callable[[], bool], timeout: float = T) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def other_tasks() -> List[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def capture_logger(name: str) -> tuple[logging.Logger, Capture]:
    log = logging.getLogger(name)
    log.setLevel(logging.DEBUG)
    cap = Capture()
    log.addHandler(cap)
    log.propagate = False
    return log, cap


def msg(platform: str = "qq", text: str = "hi") -> MessageBase:
    return MessageBase.from_dict({
        "message_info": {"platform": platform, "message_id": "1", "time": 1.0},
        "message_segment": {"type": "text", "data": text},
    })


# -- exports -----------------------------------------------------------------------------
def test_root_exports_match_068() -> None:
    expected = {"MessageClient", "MessageServer", "Router", "RouteConfig", "TargetConfig",
                "MessageBase", "Seg", "GroupInfo", "UserInfo", "FormatInfo", "TemplateInfo",
                "BaseMessageInfo", "InfoBase", "SenderInfo", "ReceiverInfo",
                "MessageConverter"}
    assert set(maim_message.__all__) - {"__version__"} == expected
    for name in expected:
        assert getattr(maim_message, name) is not None
    parsed = [int(x) for x in maim_message.__version__.split(".")]  # as consumers parse it
    assert parsed >= [0, 6, 8]
    assert parsed >= [0, 7, 5]  # adapters gate the 0.7 API mode on this (docs/migration.md)


@pytest.mark.parametrize(("module", "names"), [
    ("api", ["MessageServer", "MessageClient", "BaseMessageHandler"]),
    ("router", ["Router", "RouteConfig", "TargetConfig"]),
    ("converter", ["MessageConverter"]),
    ("crypto", ["CryptoManager", "FrameType"]),
    ("tcp_connection", ["TCPServerConnection", "TCPClientConnection"]),
    ("ws_connection", ["WebSocketServer", "WebSocketClient"]),
    ("connection_interface", ["BaseConnection", "ConnectionInterface",
                              "ServerConnectionInterface", "ClientConnectionInterface"]),
    ("log_queue", ["LogLevel", "LogMessage", "LoggerProxy", "LogQueueProcessor",
                   "create_log_queue"]),
])
def test_068_module_paths(module: str, names: List[str]) -> None:
    mod = importlib.import_module(f"maim_message.{module}")
    for name in names:
        assert hasattr(mod, name), (module, name)
    api = importlib.import_module("maim_message.api")
    assert api.MessageServer is MessageServer and api.MessageClient is MessageClient


def test_library_adds_no_handlers() -> None:
    MessageServer(port=free_port())
    MessageClient()
    assert not logging.getLogger("maim_message").handlers


# -- ws server handshake decisions -----------------------------------------------------------
async def test_ws_token_checked_before_upgrade() -> None:
    port = free_port()
    server = MessageServer(host="127.0.0.1", port=port, enable_token=True)
    server.add_valid_token("good")
    await server.start()
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        for headers, status in (({}, 401), ({"Authorization": "bad"}, 403)):
            with pytest.raises(InvalidStatus) as info:
                await connect(url, additional_headers={"platform": "qq", **headers})
            assert info.value.response.status_code == status
        with pytest.raises(InvalidStatus) as info:
            await connect(f"ws://127.0.0.1:{port}/other")
        assert info.value.response.status_code == 404
        ws = await connect(url, additional_headers={"platform": "qq", "Authorization": "good"})
        await until(lambda: server.connected_platforms() == ["qq"])
        # 0.6.8's names, which bot cores read to list the connected platforms
        conn = server.connection
        assert list(conn.platform_websockets) == ["qq"] == list(conn.platform_connections)
        assert len(conn.active_websockets) == 1 == len(conn.active_connections)
        assert not await server.broadcast_to_platform("qq", {"s": {1, 2}})  # not JSON: False
        assert await server.verify_token("good") and not await server.verify_token("bad")
        server.remove_valid_token("good")
        with pytest.raises(InvalidStatus):
            await connect(url, additional_headers={"Authorization": "good"})
        await ws.close()
    finally:
        await server.stop()


async def test_ws_replacement_unknown_invalid_json_and_shutdown() -> None:
    port = free_port()
    server = MessageServer(host="127.0.0.1", port=port)
    got: List[Any] = []
    server.register_message_handler(got.append)
    await server.start()
    url = f"ws://127.0.0.1:{port}/ws"
    first = await connect(url, additional_headers={"platform": "qq"})
    await until(lambda: server.connected_platforms() == ["qq"])
    second = await connect(url, additional_headers={"platform": "qq"})
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(first.recv(), T)
    assert (first.close_code, first.close_reason) == (1000, "新的连接已建立")
    anon = await connect(url)
    await second.send("{not json")
    await second.send(b"\x00binary")
    await second.send('{"ok": 1}')
    await until(lambda: got == [{"ok": 1}])
    assert not await server.broadcast_to_platform("unknown", {"x": 1})
    await server.broadcast_message({"all": True})
    assert await asyncio.wait_for(anon.recv(), T) == '{"all":true}'
    assert await asyncio.wait_for(second.recv(), T) == '{"all":true}'
    assert await server.send_message(msg("qq"))
    assert '"platform":"qq"' in await asyncio.wait_for(second.recv(), T)
    assert not await server.send_message(msg("nobody"))
    await server.stop()
    for ws in (second, anon):
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), T)
        assert (ws.close_code, ws.close_reason) == (1000, "服务器关闭")
    assert not other_tasks()


async def test_send_message_handlers_intercept() -> None:
    server = MessageServer(host="127.0.0.1", port=free_port())
    calls: List[Any] = []

    async def first(m: Any) -> bool:
        calls.append("first")
        raise RuntimeError("ignored")

    def second(m: Any) -> bool:
        calls.append("second")
        return m.message_info.platform == "astrbot"

    server.register_send_message_handler(first)
    server.register_send_message_handler(second)
    assert await server.send_message(msg("astrbot")) is True
    assert await server.send_message(msg("qq")) is False
    assert calls == ["first", "second", "first", "second"]


async def test_port_in_use_raises() -> None:
    port = free_port()
    a = MessageServer(host="127.0.0.1", port=port)
    await a.start()
    try:
        for mode in ("ws", "tcp"):
            b = MessageServer(host="127.0.0.1", port=port, mode=mode)
            with pytest.raises(ServerStartError):
                await b.start()
            with pytest.raises(RuntimeError):
                await asyncio.wait_for(b.run(), T)
    finally:
        await a.stop()


async def test_run_returns_after_stop_and_leaves_nothing() -> None:
    for mode in ("ws", "tcp"):
        server = MessageServer(host="127.0.0.1", port=free_port(), mode=mode)
        task = asyncio.ensure_future(server.run())
        await until(lambda s=server: s.bound_port is not None)
        await server.stop()
        await asyncio.wait_for(task, T)
    assert not other_tasks()


# -- client ----------------------------------------------------------------------------------
async def test_client_errors_and_offline_send() -> None:
    client = MessageClient()
    with pytest.raises(RuntimeError):
        await client.run()
    with pytest.raises(RuntimeError):
        await client.send_message({})
    assert not client.is_connected()
    await client.connect(f"ws://127.0.0.1:{free_port()}/ws", "qq")
    assert await client.send_message({"a": 1}) is False
    assert await client.send_custom_message("x", {}) is False


@pytest.mark.parametrize("mode", ["ws", "tcp"])
async def test_client_with_bad_token_is_refused_and_backs_off(mode: str) -> None:
    port = free_port()
    log, cap = capture_logger(f"test.legacy.refused.{mode}")
    server = MessageServer(host="127.0.0.1", port=port, mode=mode, enable_token=True,
                           custom_logger=log)
    server.add_valid_token("good")
    await server.start()
    client = MessageClient(custom_logger=log)
    url = f"ws://127.0.0.1:{port}/ws" if mode == "ws" else f"tcp://127.0.0.1:{port}"
    await client.connect(url, "qq", token="very-secret-token")
    client.connection.reconnect_interval = 0.05
    task = asyncio.ensure_future(client.run())
    try:
        if mode == "ws":
            await until(lambda: client.connection.retry_count >= 2)
        else:  # tcp has no refusal reply (0.6.8 wire): the server closes silently
            await until(lambda: any("token" in line for line in cap.lines))
        assert server.connected_platforms() == []
        assert not any("very-secret-token" in line for line in cap.lines)
    finally:
        await client.stop()
        await server.stop()
        await asyncio.wait_for(task, T)


async def test_wss_verifies_certificates_by_default(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile, cafile = (tmp_path / n for n in ("c.pem", "k.pem", "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    port = free_port()
    server = MessageServer(host="127.0.0.1", port=port, ssl_certfile=str(certfile),
                           ssl_keyfile=str(keyfile))
    got: List[Any] = []
    server.register_message_handler(got.append)
    await server.start()
    url = f"wss://127.0.0.1:{port}/ws"
    untrusted, trusted = MessageClient(), MessageClient()
    await untrusted.connect(url, "a")
    await trusted.connect(url, "b", ssl_verify=str(cafile))
    untrusted.connection.reconnect_interval = 0.05
    tasks = [asyncio.ensure_future(c.run()) for c in (untrusted, trusted)]
    try:
        assert await trusted.wait_connected(T)
        assert await trusted.send_message({"tls": 1})
        await until(lambda: got == [{"tls": 1}])
        await until(lambda: untrusted.connection.retry_count >= 1)
        assert not untrusted.is_connected()
        assert server.connected_platforms() == ["b"]
    finally:
        for c in (untrusted, trusted):
            await c.stop()
        await server.stop()
        await asyncio.gather(*tasks)


def test_ssl_files_must_exist(tmp_path: Path) -> None:
    server = MessageServer(port=free_port(), ssl_certfile=str(tmp_path / "missing.pem"),
                           ssl_keyfile=str(tmp_path / "missing.key"))
    with pytest.raises(RuntimeError):
        asyncio.run(server.run())


def test_client_ssl_context_options(tmp_path: Path) -> None:
    from maim_message.legacy.ws_transport import client_ssl_context

    assert client_ssl_context("ws://x", None) is None
    ctx = client_ssl_context("wss://x", None)
    assert ctx is not None and ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
    off = client_ssl_context("wss://x", False)
    assert off is not None and off.verify_mode is ssl.CERT_NONE


def test_legacy_tls_needs_tls12_on_both_sides(tmp_path: Path) -> None:
    """The legacy side builds its contexts with the shared builders (TLS >= 1.2)."""
    from maim_message.legacy.ws_server import legacy_server_ssl_context
    from maim_message.legacy.ws_transport import client_ssl_context

    cert = trustme.CA().issue_cert("127.0.0.1")
    both = tmp_path / "both.pem"  # certificate and key in one file, as 0.6.8 allowed
    cert.private_key_and_cert_chain_pem.write_to_path(str(both))
    server_ctx = legacy_server_ssl_context(str(both), None)
    assert server_ctx is not None
    assert server_ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    client_ctx = client_ssl_context("wss://x", None)
    assert client_ctx is not None
    assert client_ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert legacy_server_ssl_context(None, None) is None


# -- app= mounting ------------------------------------------------------------------------
async def test_mount_on_existing_asgi_app() -> None:
    uvicorn = pytest.importorskip("uvicorn")
    from starlette.applications import Starlette

    app = Starlette()
    server = MessageServer(host="127.0.0.1", port=0, app=app, enable_token=True,
                           path="/maim")
    server.add_valid_token("good")
    got: List[Any] = []
    server.register_message_handler(got.append)
    await asyncio.wait_for(server.run(), T)  # returns at once: the host app serves

    port = free_port()
    host = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                         lifespan="off"))
    serve_task = asyncio.ensure_future(host.serve())
    await until(lambda: host.started)
    client = MessageClient()
    await client.connect(f"ws://127.0.0.1:{port}/maim", "qq", token="good")
    run_task = asyncio.ensure_future(client.run())
    try:
        with pytest.raises(InvalidStatus) as info:
            await connect(f"ws://127.0.0.1:{port}/maim", additional_headers={"Authorization": "x"})
        assert info.value.response.status_code == 403
        assert await client.wait_connected(T)
        await until(lambda: server.connected_platforms() == ["qq"])
        assert await client.send_message({"via": "asgi"})
        await until(lambda: got == [{"via": "asgi"}])
        received: List[Any] = []
        client.register_message_handler(received.append)
        assert await server.send_message(msg("qq", "down"))
        await until(lambda: len(received) == 1)
        assert received[0]["message_segment"] == {"type": "text", "data": "down"}
    finally:
        await client.stop()
        await server.stop()
        host.should_exit = True
        await asyncio.wait_for(serve_task, T)
        await asyncio.wait_for(run_task, T)
