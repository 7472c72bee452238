"""The legacy WebSocket dialect as a ServerApp, driven without sockets."""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional, Tuple

from maim_message.legacy.logsupport import Log
from maim_message.legacy.platforms import CLOSE_REPLACED, TokenAuth
from maim_message.legacy.ws_app import LegacyWsApp
from maim_message.transport.base import Accept, HandshakeInfo, HttpReply


class FakeConn:
    """The ServerConnection contract, recording what the app writes."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.sent: List[bytes] = []
        self.closed: Optional[Tuple[int, str]] = None
        self.writable = True

    @property
    def is_open(self) -> bool:
        return self.closed is None

    @property
    def is_writable(self) -> bool:
        return self.is_open and self.writable

    @property
    def client_ip(self) -> str:
        return "127.0.0.1"

    def send_text(self, payload: bytes) -> bool:
        if not self.is_open:
            return False
        self.sent.append(payload)
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def write_buffer_size(self) -> int:
        return 0


def info(path: str = "/ws", **headers: str) -> HandshakeInfo:
    raw = [(k.replace("_", "-").title(), v) for k, v in headers.items()]
    lower = {k.lower(): v for k, v in raw if k.lower() != "authorization"}
    return HandshakeInfo(path=path, query={}, headers=lower, raw_headers=raw,
                         client_ip="127.0.0.1", is_upgrade=True)


def make_app(token: bool = False) -> Tuple[LegacyWsApp, List[Any]]:
    got: List[Any] = []
    auth = TokenAuth(token)
    auth.add("good")
    return LegacyWsApp(got.append, auth, Log("test.legacy.app"), path="/ws"), got


async def test_handshake_answers() -> None:
    app, _ = make_app(token=True)
    wrong_path = await app.handshake(info("/other", platform="qq", authorization="good"))
    assert isinstance(wrong_path, HttpReply) and wrong_path.status == 404
    missing = await app.handshake(info(platform="qq"))
    assert isinstance(missing, HttpReply) and missing.status == 401
    bad = await app.handshake(info(platform="qq", authorization="bad"))
    assert isinstance(bad, HttpReply) and bad.status == 403
    ok = await app.handshake(info(platform="qq", authorization="good"))
    assert isinstance(ok, Accept) and ok.context == "qq"
    open_app, _ = make_app()
    anonymous = await open_app.handshake(info())
    assert isinstance(anonymous, Accept) and anonymous.context == "unknown"


async def test_routing_by_platform_and_replacement() -> None:
    app, got = make_app()
    first, second, anon = FakeConn("qq"), FakeConn("qq"), FakeConn("unknown")
    for conn in (first, second, anon):
        app.connection_opened(conn)
    assert first.closed == (1000, CLOSE_REPLACED)
    assert app.connected_platforms() == ["qq"]  # "unknown" is reachable by broadcast only
    app.text_received(second, b'{"a": 1}')
    app.text_received(second, b"{nope")  # logged and skipped
    assert got == [{"a": 1}]
    assert await app.send_message("qq", {"b": "ü"})
    assert second.sent == ['{"b":"ü"}'.encode()]
    assert not await app.send_message("tg", {"b": 2})
    await app.broadcast_message({"all": True})
    assert anon.sent == [b'{"all":true}'] and second.sent[-1] == b'{"all":true}'
    app.connection_closed(first, 1000, "")  # the replaced one: routing stays on `second`
    assert app.connected_platforms() == ["qq"]
    app.connection_closed(second, 1000, "")
    assert app.connected_platforms() == []


async def test_send_waits_for_a_full_buffer_to_drain() -> None:
    app, _ = make_app()
    conn = FakeConn("qq")
    app.connection_opened(conn)
    conn.writable = False
    sending = asyncio.ensure_future(app.send_message("qq", {"x": 1}))
    await asyncio.sleep(0)
    assert not sending.done() and conn.sent == [b'{"x":1}']
    conn.writable = True
    app.connection_writable(conn)
    assert await asyncio.wait_for(sending, 1.0) is True
