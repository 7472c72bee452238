"""Issue 14's transport items over raw sockets against the real server: fragments at their
real cost and capped, the write buffer never past its cap (logged once), a good frame
before a bad one still answered, the failure's closing handshake then a clean TCP close,
slow consumers closed without keepalive pings, peer pings rate-limited."""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any, AsyncIterator, Dict

import orjson
import pytest

from maim_message.server import ServerConfig, WebSocketServer
from maim_message.transport.protocol import FRAGMENT_OVERHEAD

from .echo_server import EchoServer
from .helpers_api import Inbox
from .rawws import RawWS, frame, request, text

KEY = "hardening-Key-1a2b3c4d5e6f"


def std(n: int) -> bytes:
    return orjson.dumps({"ver": 1, "msg_id": f"m{n}", "type": "sys_std", "meta": {}, "payload": {
        "message_info": {"platform": "qq", "message_id": str(n), "time": 1.0},
        "message_segment": {"type": "text", "data": f"msg {n}"},
        "message_dim": {"api_key": KEY, "platform": "qq"}}})


async def hub(**cfg: Any) -> WebSocketServer:
    cfg.setdefault("on_message", Inbox())
    server = WebSocketServer(ServerConfig(host="127.0.0.1", port=0, **cfg))
    await server.start()
    return server


async def connect(port: int, query: Any = None) -> RawWS:
    ws = await RawWS.open(port, request(query=query or {"api_key": KEY}))
    assert ws.status == 101, ws.head
    return ws


async def close_code(ws: RawWS, timeout: float = 5.0) -> int:
    return (await ws.expect_close(timeout))[0]


def limits(server: WebSocketServer) -> Dict[str, int]:
    return dict(server.get_stats()["limits"])


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    async with EchoServer(max_message_size=64 * 1024, max_fragments=1000) as srv:
        yield srv


# -- (2) fragments ----------------------------------------------------------------------------


async def test_empty_continuation_frames_hit_the_size_limit(echo: EchoServer) -> None:
    ws = await connect(echo.port)
    wire = frame(0x2, b"", fin=False) + frame(0x0, b"", fin=False) * 5000
    ws.send(wire)
    assert await close_code(ws) == 1009
    # the 64 KiB limit holds ~1024 empty fragments: the rest was never buffered
    assert echo.limits["message_size"] == 1 and 64 * 1024 // FRAGMENT_OVERHEAD < 5000
    ws.close()


async def test_fragments_per_message_are_capped(echo: EchoServer) -> None:
    ws = await connect(echo.port)
    ws.send(frame(0x1, b"a", fin=False) + frame(0x0, b"b", fin=False) * 1000 + frame(0x0, b"c"))
    code, reason = await ws.expect_close()
    assert code == 1009 and "more than 1000 fragments" in reason
    ws.close()
    ws = await connect(echo.port)  # 1000 fragments exactly are fine
    ws.send(frame(0x1, b"a", fin=False) + frame(0x0, b"b", fin=False) * 998 + frame(0x0, b"c"))
    assert await ws.read_frame() == (0x1, b"a" + b"b" * 998 + b"c")
    ws.close()


# -- (7) the write buffer cap ----------------------------------------------------------------


async def test_write_buffer_never_passes_its_cap_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cap = 512 * 1024
    caplog.set_level(logging.DEBUG, logger="maim_message.transport")
    async with EchoServer(max_message_size=1 << 20, max_write_buffer=cap,
                          send_buffer_high=cap * 4) as srv:
        ws = await connect(srv.port)
        ws.writer.transport.pause_reading()  # a peer that never reads
        chunk = text(b"x" * 60_000)
        for _ in range(200):  # 12 MB of echoes asked for
            if ws.writer.is_closing():
                break
            ws.send(chunk)
            try:
                await asyncio.wait_for(ws.writer.drain(), 1)
            except (ConnectionError, asyncio.TimeoutError):
                break
            if srv.app.closed:
                break
        for _ in range(200):
            if srv.app.closed:
                break
            await asyncio.sleep(0.01)
        assert srv.app.closed and srv.app.closed[0][0] == 1008
        assert cap // 2 < srv.app.max_buffer <= cap  # it filled up, and no further
        assert srv.limits["write_buffer"] == 1
        lines = [r for r in caplog.records if "write buffer over limit" in r.getMessage()]
        assert len(lines) == 1 and lines[0].levelno == logging.WARNING
        ws.close()


# -- (9) RFC details --------------------------------------------------------------------------


async def test_good_frame_sharing_a_read_with_a_bad_one_is_handled_and_acked() -> None:
    inbox = Inbox()
    server = await hub(on_message=inbox)
    try:
        ws = await connect(server.port or 0)
        ws.send(text(std(1)) + frame(0x1, b"{}", rsv=2))
        texts, code, _ = await ws.frames_until_close()
        assert code == 1002
        acks = [orjson.loads(t) for t in texts]
        assert any(a.get("type") == "sys_ack" and "m1" in orjson.dumps(a).decode()
                   for a in acks), acks
        for _ in range(100):
            if inbox.items:
                break
            await asyncio.sleep(0.01)
        assert len(inbox.items) == 1
        ws.close()
    finally:
        await server.stop()


async def test_protocol_error_closes_tcp_right_after_the_close_frame(echo: EchoServer) -> None:
    ws = await connect(echo.port)
    loop = asyncio.get_running_loop()
    start = loop.time()
    ws.send(frame(0x1, b"x", masked=False))
    assert await close_code(ws) == 1002
    ws.send(struct.pack("!BB", 0x88, 0x80) + b"\x00\x00\x00\x00")  # our empty close reply
    rest = await asyncio.wait_for(ws.reader.read(), 3)  # a reset would raise here
    assert rest == b"" and ws.reader.at_eof()
    assert loop.time() - start < 2.0  # not held for close_timeout (5 s)
    ws.close()


# -- (10) slow consumers without pings, ping floods ---------------------------------------


async def test_slow_consumer_is_closed_with_keepalive_pings_off() -> None:
    server = await hub(on_auth_extract_user=lambda m: m["api_key"], ping_interval=0,
                       send_buffer_high=64 * 1024, slow_consumer_timeout=0.4,
                       close_timeout=0.5)
    try:
        ws = await connect(server.port or 0, {"api_key": "slow", "platform": "qq"})
        ws.writer.transport.pause_reading()
        from .helpers_api import make_message

        for n in range(200):
            await server.send_message(make_message("y" * 20_000, "slow", "qq", str(n)))
            await asyncio.sleep(0)
        for _ in range(300):
            if server.get_connection_count() == 0:
                break
            await asyncio.sleep(0.02)
        assert server.get_connection_count() == 0
        assert limits(server)["write_buffer"] >= 1
        ws.close()
    finally:
        await server.stop()


async def test_ping_flood_gets_a_limit_close_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="maim_message.transport")
    server = await hub()
    try:
        for _ in range(2):  # the same peer twice: one log line at WARNING, the repeat at DEBUG
            ws = await connect(server.port or 0)
            ws.send(frame(0x9, b"flood") * 2000)
            _, code, reason = await ws.frames_until_close()
            assert code == 1008 and "ping rate limit" in reason
            ws.close()
        assert limits(server)["rate"] == 2
        lines = [r for r in caplog.records if "ping rate limit" in r.getMessage()]
        assert [r.levelno for r in lines] == [logging.WARNING, logging.DEBUG]
    finally:
        await server.stop()
