"""Each limit over raw sockets: the close code and reason on the wire, the counter in
``get_stats()["limits"]``, and one log line per peer."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from typing import Any, AsyncIterator, Dict, List

import orjson
import pytest

from maim_message.server import ServerConfig, WebSocketServer

from .helpers_api import Inbox
from .rawws import RawWS, frame, request, text

KEY = "limits-Key-3a4b5c6d7e8f9a0b"


def std(n: int, data: Any = None, platform: str = "qq") -> bytes:
    env = {"ver": 1, "msg_id": f"m{n}", "type": "sys_std", "meta": {}, "payload": {
        "message_info": {"platform": platform, "message_id": str(n), "time": 1.0},
        "message_segment": {"type": "text", "data": f"msg {n}"} if data is None else data,
        "message_dim": {"api_key": KEY, "platform": platform}}}
    return orjson.dumps(env)


async def start(**cfg: Any) -> WebSocketServer:
    cfg.setdefault("on_message", Inbox())
    server = WebSocketServer(ServerConfig(host="127.0.0.1", port=0, **cfg))
    await server.start()
    return server


@pytest.fixture
async def small() -> AsyncIterator[WebSocketServer]:
    server = await start(max_message_size=4096)
    yield server
    await server.stop()


async def connect(server: WebSocketServer, extra: bytes = b"", key: str = KEY) -> RawWS:
    assert server.port is not None
    ws = await RawWS.open(server.port, request(query={"api_key": key}) + extra)
    assert ws.status == 101
    return ws


def limits(server: WebSocketServer) -> Dict[str, int]:
    return dict(server.get_stats()["limits"])


async def test_message_over_the_size_limit_closes_1009_with_reason(
    small: WebSocketServer,
) -> None:
    ws = await connect(small)
    ws.send(text(b"x" * 5000))
    code, reason = await ws.expect_close()
    assert code == 1009 and reason == "message of 5000 bytes exceeds limit of 4096 bytes"
    ws.close()
    # A header announcing a huge frame is refused at once: nothing is buffered first.
    ws = await connect(small)
    ws.send(frame(0x1, b"", length=2**40)[:14])
    assert (await ws.expect_close(2))[0] == 1009
    ws.close()
    # Fragments count together, each at its payload plus a fixed overhead (64 bytes).
    ws = await connect(small)
    ws.send(frame(0x1, b"a" * 1500, fin=False) + frame(0x0, b"b" * 1500, fin=False)
            + frame(0x0, b"c" * 1500))
    code, reason = await ws.expect_close()
    assert code == 1009 and "message of 4692 bytes exceeds limit of 4096" in reason
    ws.close()
    assert limits(small)["message_size"] == 3
    # Just under the limit is fine and delivered.
    ws = await connect(small)
    inbox: Inbox = small.config.on_message  # type: ignore[assignment]
    ws.send(text(std(1, {"type": "text", "data": "y" * 3000})))
    message, _ = await inbox.next()
    assert message.message_segment.data == "y" * 3000
    ws.close()


async def test_twenty_mb_media_passes_the_default_limit() -> None:
    inbox = Inbox()
    server = await start(on_message=inbox)
    try:
        image = base64.b64encode(os.urandom(20 * 2**20)).decode()
        ws = await connect(server)
        ws.send(text(std(1, {"type": "image", "data": image})))
        message, _ = await inbox.next(20)
        assert message.message_segment.type == "image"
        assert message.message_segment.data == image
        ws.close()
        assert limits(server)["message_size"] == 0
    finally:
        await server.stop()


async def test_rate_limit_closes_1008_and_logs_once_per_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbox = Inbox()
    server = await start(on_message=inbox, rate_limit_per_second=5, rate_limit_burst=20)
    try:
        with caplog.at_level(logging.DEBUG, logger="maim_message"):
            for attempt in range(2):
                ws = await connect(server)
                ws.send(b"".join(text(std(attempt * 100 + i)) for i in range(25)))
                acks, code, reason = await ws.frames_until_close()
                assert code == 1008
                assert reason == "rate limit exceeded: over 5 messages/s (burst 20)"
                assert len(acks) == 20  # the first 20 were accepted and acked
                ws.close()
        await asyncio.sleep(0)
        assert limits(server)["rate"] == 2
        hits = [r for r in caplog.records if "limit rate hit" in r.getMessage()]
        assert [r.levelno for r in hits] == [logging.WARNING, logging.DEBUG]
        assert KEY not in caplog.text
        assert len(inbox.items) == 40
    finally:
        await server.stop()


async def test_rate_limit_off_when_none() -> None:
    inbox = Inbox()
    server = await start(on_message=inbox, rate_limit_per_second=None, rate_limit_burst=1)
    try:
        ws = await connect(server)
        ws.send(b"".join(text(std(i)) for i in range(50)))
        for _ in range(50):
            await inbox.next()
        assert limits(server)["rate"] == 0
        ws.close()
    finally:
        await server.stop()


async def test_idle_timeout_ignores_pings_and_counts_messages() -> None:
    server = await start(idle_timeout=0.4)
    try:
        idle = await connect(server)
        busy = await connect(server, key=KEY + "-2")
        started = time.monotonic()

        async def keep_pinging() -> None:
            for _ in range(20):
                idle.send(frame(0x9, b"hi"))
                await asyncio.sleep(0.05)

        async def keep_talking() -> None:
            for i in range(20):
                busy.send(text(std(i)))
                await asyncio.sleep(0.05)

        pinger = asyncio.ensure_future(keep_pinging())
        talker = asyncio.ensure_future(keep_talking())
        code, reason = await idle.expect_close(3)
        elapsed = time.monotonic() - started
        assert code == 1001 and reason.startswith("idle timeout")
        assert 0.35 < elapsed < 2.0
        await talker
        pinger.cancel()
        await asyncio.gather(pinger, return_exceptions=True)
        assert server.get_connection_count() >= 1  # the talking one is still up
        assert limits(server)["idle_timeout"] == 1
        idle.close()
        busy.close()
    finally:
        await server.stop()


async def test_slow_handshake_is_dropped_after_handshake_timeout() -> None:
    server = await start(handshake_timeout=0.3)
    assert server.port is not None
    try:
        ws = await RawWS.connect(server.port)
        started = time.monotonic()
        head = request(query={"api_key": KEY})
        ws.send(head[:10])  # a slowloris: a few bytes, then nothing
        assert await ws.at_eof(3)
        assert 0.25 < time.monotonic() - started < 2.0
        ws.close()
        assert limits(server)["handshake_timeout"] == 1
    finally:
        await server.stop()


async def test_bad_http_gets_4xx_and_is_counted() -> None:
    server = await start(max_message_size=4096)
    assert server.port is not None
    try:
        cases = [
            (b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
            (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400),
            (request().replace(b"Version: 13", b"Version: 8"), 426),
            (request().replace(b"GET ", b"POST "), 405),
            (request().replace(b"Sec-WebSocket-Key: ", b"Sec-WebSocket-Key: x"), 400),
            (request(path="/other"), 404),
            (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 426),  # plain HTTP on the ws path
            (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),  # plain HTTP, no route
        ]
        for data, status in cases:
            ws = await RawWS.connect(server.port)
            ws.send(data)
            reply = await ws.read_all(5)
            ws.close()
            assert reply.startswith(f"HTTP/1.1 {status} ".encode()), (status, reply[:60])
            assert b"101" not in reply.split(b"\r\n")[0][9:]
        got = limits(server)
        assert got["request_head"] == 1 and got["bad_handshake"] == 4
    finally:
        await server.stop()


async def test_protocol_violations_close_with_the_right_code() -> None:
    inbox = Inbox()
    server = await start(on_message=inbox)
    try:
        cases = [
            (frame(0x1, b"{}", masked=False), 1002),
            (frame(0x1, b"{}", rsv=4), 1002),
            (frame(0x3, b"{}"), 1002),
            (frame(0x9, b"p" * 200), 1002),  # control frame over 125 bytes
            (frame(0x9, b"p", fin=False), 1002),
            (frame(0x0, b"orphan continuation"), 1002),
            (frame(0x1, b"{", fin=False) + frame(0x1, b"}"), 1002),
            (frame(0x8, b"\x03"), 1002),  # close payload of one byte
            (frame(0x2, b"\x00\x01binary"), 1003),
            (text(b'{"type": "sys_std", "x": "\xff\xfe"}'), 1007),
            (frame(0x8, b"\x03\xe8\xff"), 1007),  # close reason not UTF-8
        ]
        for data, expected in cases:
            ws = await connect(server)
            ws.send(data)
            code, reason = await ws.expect_close()
            assert code == expected, (data[:8], code, reason)
            assert reason
            ws.close()
        got = limits(server)
        assert got["protocol_error"] == 8
        assert got["binary_frame"] == 1 and got["invalid_utf8"] == 2
        # The hub is still fine for a well-behaved client; nothing hostile was dispatched.
        ws = await connect(server)
        ws.send(text(std(7)))
        message, _ = await inbox.next()
        assert message.message_segment.data == "msg 7" and len(inbox.items) == 1
        ws.close()
    finally:
        await server.stop()


async def test_bad_json_gets_sys_error_and_the_connection_stays() -> None:
    inbox = Inbox()
    server = await start(on_message=inbox)
    try:
        ws = await connect(server)
        bad: List[bytes] = [
            b"not json", b"[1,2,3]", b'{"type": 5}', b'{"type":"sys_std","msg_id":[1]}',
            b'{"type":"sys_std","meta":"x"}', b"[" * 2000 + b"]" * 2000,
            b'{"type":"sys_std","msg_id":"d1","payload":' + b"[" * 1000 + b"]" * 1000 + b"}",
            orjson.dumps({"type": "sys_std", "msg_id": "m9", "payload": {
                "message_info": "not an object", "message_segment": {}}}),
        ]
        deep = b'{"type":"text","data":"x"}'
        for _ in range(505):  # seglists nested to just under the JSON depth limit
            deep = b'{"type":"seglist","data":[' + deep + b"]}"
        bad.append(std(2).replace(b'{"type":"text","data":"msg 2"}', deep))
        for payload in bad:
            ws.send(text(payload))
        errors = 0
        while errors < len(bad):
            opcode, data = await ws.read_frame()
            assert opcode == 0x1
            errors += orjson.loads(data)["type"] == "sys_error"
        ws.send(text(std(3)))
        message, _ = await inbox.next()
        assert message.message_segment.data == "msg 3" and len(inbox.items) == 1
        assert server.get_stats()["invalid_frames"] == len(bad)
        ws.close()
    finally:
        await server.stop()


async def test_acks_of_what_the_server_sent_do_not_count_against_the_rate_limit() -> None:
    """A client that only receives (a bot core taking a busy chat) acks every message:
    those acks are not sending. Acks of nothing count like any frame."""
    from maim_message.client import WebSocketClient, create_client_config

    from .helpers_api import make_message

    server = await start(rate_limit_per_second=5, rate_limit_burst=20)
    inbox = Inbox()
    receiver = WebSocketClient(create_client_config(
        f"ws://127.0.0.1:{server.port}/ws", "bob", platform="qq", on_message=inbox))
    try:
        assert await receiver.connect()
        for n in range(60):  # three bursts' worth of acks
            await server.send_message(make_message(f"to bob {n}", "bob", "qq"))
        for _ in range(60):
            await inbox.next()
        for _ in range(200):  # bounded: until the last acks are in
            if server.get_stats()["delivery"]["outbox_depth"] == 0:
                break
            await asyncio.sleep(0.01)
        assert server.get_stats()["delivery"]["outbox_depth"] == 0
        assert limits(server)["rate"] == 0 and receiver.is_connected()
        ws = await connect(server)  # acks of nothing: counted
        ws.send(b"".join(text(orjson.dumps({"ver": 1, "msg_id": f"a{i}", "type": "sys_ack",
                                            "meta": {"acked_msg_id": f"none-{i}"}}))
                         for i in range(25)))
        _frames, code, _reason = await ws.frames_until_close()
        assert code == 1008 and limits(server)["rate"] == 1
        ws.close()
    finally:
        await receiver.stop()
        await server.stop()
