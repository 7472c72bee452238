"""RFC 6455 conformance of the real server transport over 127.0.0.1 (raw client bytes):
framing, fragmentation, control frames, UTF-8 (also split across fragments), close codes,
the closing handshake at the TCP level, and handshake edge cases.

Expected answers were checked against a bare ``websockets`` server where the RFC leaves a
choice (505 for an HTTP/1.0 upgrade, 1002 for an invalid close code, EOF right after a
failure's close frame).
"""

from __future__ import annotations

import asyncio
import struct
from typing import AsyncIterator, List, Tuple

import pytest

from .echo_server import EchoServer
from .rawws import RawWS, close_frame, frame, request, text

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


@pytest.fixture
async def server() -> AsyncIterator[EchoServer]:
    async with EchoServer(max_message_size=1 << 20) as srv:
        yield srv


async def opened(server: EchoServer, early: bytes = b"") -> RawWS:
    ws = await RawWS.open(server.port, request() + early)
    assert ws.status == 101, ws.head
    return ws


async def frames(ws: RawWS, count: int) -> List[Tuple[int, bytes]]:
    return [await ws.read_frame() for _ in range(count)]


async def closes_with(ws: RawWS, code: int) -> str:
    """Reads up to the server's close frame; asserts its code; returns the reason."""
    while True:
        opcode, payload = await ws.read_frame()
        if opcode == OP_CLOSE:
            got = struct.unpack("!H", payload[:2])[0] if payload else 1005
            assert got == code, (got, payload)
            return payload[2:].decode()


async def eof_within(ws: RawWS, seconds: float) -> None:
    """The server closes TCP in time and cleanly (FIN, not reset); data before is dropped."""
    data = await asyncio.wait_for(ws.reader.read(), seconds)
    assert ws.reader.at_eof(), data


# -- framing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
async def test_every_length_encoding_round_trips(server: EchoServer, size: int) -> None:
    ws = await opened(server)
    ws.send(text(b"a" * size) + frame(OP_BINARY, b"\x00" * size))
    assert await frames(ws, 2) == [(OP_TEXT, b"a" * size), (OP_BINARY, b"\x00" * size)]
    ws.close()


async def test_frames_split_byte_by_byte_and_many_in_one_write(server: EchoServer) -> None:
    ws = await opened(server)
    wire = text(b"one") + text(b"two")
    for i in range(len(wire)):
        ws.send(wire[i:i + 1])
        await ws.writer.drain()
    ws.send(b"".join(text(str(n).encode()) for n in range(100)))
    got = await frames(ws, 102)
    assert [p for _, p in got] == [b"one", b"two"] + [str(n).encode() for n in range(100)]
    ws.close()


async def test_frames_sent_before_the_101_are_handled_after_it(server: EchoServer) -> None:
    ws = await opened(server, early=text(b"early"))
    assert await ws.read_frame() == (OP_TEXT, b"early")
    ws.close()


@pytest.mark.parametrize("bad", [
    frame(OP_TEXT, b"x", masked=False),
    frame(OP_TEXT, b"x", rsv=1), frame(OP_TEXT, b"x", rsv=2), frame(OP_TEXT, b"x", rsv=4),
    frame(0x3, b""), frame(0x7, b""), frame(0xB, b""), frame(0xF, b""),
])
async def test_framing_errors_fail_1002_then_tcp_closes(server: EchoServer, bad: bytes) -> None:
    ws = await opened(server)
    ws.send(bad)
    await closes_with(ws, 1002)
    await eof_within(ws, 2)


# -- fragmentation ------------------------------------------------------------------------------


async def test_fragmented_text_with_a_ping_in_the_middle(server: EchoServer) -> None:
    ws = await opened(server)
    ws.send(frame(OP_TEXT, b"frag", fin=False) + frame(OP_PING, b"mid")
            + frame(0, b"men", fin=False) + frame(0, b"ted"))
    assert await frames(ws, 2) == [(OP_PONG, b"mid"), (OP_TEXT, b"fragmented")]
    ws.send(frame(OP_BINARY, b"\x01", fin=False) + frame(0, b"\x02"))
    assert await ws.read_frame() == (OP_BINARY, b"\x01\x02")
    ws.close()


@pytest.mark.parametrize("bad", [
    frame(0, b"orphan"),
    frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"),
    frame(OP_TEXT, b"a", fin=False) + frame(OP_BINARY, b"b"),
])
async def test_fragment_sequence_errors_fail_1002(server: EchoServer, bad: bytes) -> None:
    ws = await opened(server)
    ws.send(bad)
    await closes_with(ws, 1002)
    ws.close()


# -- control frames ----------------------------------------------------------------------------


async def test_ping_gets_its_payload_back_and_pongs_are_ignored(server: EchoServer) -> None:
    ws = await opened(server)
    ws.send(frame(OP_PING, b"p" * 125) + frame(OP_PONG, b"unasked") + text(b"after"))
    assert await frames(ws, 2) == [(OP_PONG, b"p" * 125), (OP_TEXT, b"after")]
    ws.close()


@pytest.mark.parametrize("bad", [
    frame(OP_PING, b"p" * 126), frame(OP_PING, b"p", fin=False),
    frame(OP_PONG, b"p" * 126), frame(OP_CLOSE, b"\x03\xe8", fin=False),
])
async def test_bad_control_frames_fail_1002(server: EchoServer, bad: bytes) -> None:
    ws = await opened(server)
    ws.send(bad)
    await closes_with(ws, 1002)
    ws.close()


# -- UTF-8 -------------------------------------------------------------------------------------


async def test_valid_utf8_split_at_every_byte_across_fragments(server: EchoServer) -> None:
    message = "κόσμε ☃ 𝄞".encode()
    ws = await opened(server)
    for cut in range(1, len(message)):
        ws.send(frame(OP_TEXT, message[:cut], fin=False) + frame(0, message[cut:]))
    got = await frames(ws, len(message) - 1)
    assert got == [(OP_TEXT, message)] * (len(message) - 1)
    ws.close()


@pytest.mark.parametrize("wire", [
    text(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"),  # a surrogate
    text(b"\xf4\x90\x80\x80"),  # above U+10FFFF
    text(b"\xc0\xaf"),  # overlong
    frame(OP_TEXT, "☃".encode()[:2], fin=False) + frame(0, b""),  # cut at the end
])
async def test_invalid_utf8_fails_1007(server: EchoServer, wire: bytes) -> None:
    ws = await opened(server)
    ws.send(wire)
    await closes_with(ws, 1007)
    ws.close()


async def test_invalid_utf8_fails_before_the_message_ends(server: EchoServer) -> None:
    ws = await opened(server)
    ws.send(frame(OP_TEXT, b"fine", fin=False) + frame(0, b"\xff", fin=False))
    await closes_with(ws, 1007)  # no final fragment was sent
    ws.close()


async def test_invalid_utf8_in_the_close_reason_fails_1007(server: EchoServer) -> None:
    ws = await opened(server)
    ws.send(frame(OP_CLOSE, b"\x03\xe8\xff\xfe"))
    await closes_with(ws, 1007)
    ws.close()


# -- close codes and the closing handshake -------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014, 3000, 3999, 4000, 4999])
async def test_valid_close_codes_are_echoed_then_tcp_closes(server: EchoServer, code: int) -> None:
    ws = await opened(server)
    ws.send(close_frame(code, "bye") + text(b"ignored after close"))
    assert await ws.read_frame() == (OP_CLOSE, struct.pack("!H", code) + b"bye")
    await eof_within(ws, 2)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
                                  65535])
async def test_invalid_close_codes_fail_1002(server: EchoServer, code: int) -> None:
    ws = await opened(server)
    ws.send(frame(OP_CLOSE, struct.pack("!H", code)))
    reason = await closes_with(ws, 1002)
    assert "invalid close code" in reason
    await eof_within(ws, 2)


async def test_close_without_a_code_is_echoed_without_one(server: EchoServer) -> None:
    ws = await opened(server)
    ws.send(frame(OP_CLOSE, b""))
    assert await ws.read_frame() == (OP_CLOSE, b"")
    await eof_within(ws, 2)
    assert (1005, "") in server.app.closed


async def test_close_frame_of_one_byte_fails_1002(server: EchoServer) -> None:
    ws = await opened(server)
    ws.send(frame(OP_CLOSE, b"\x03"))
    await closes_with(ws, 1002)
    ws.close()


async def test_server_initiated_close_waits_for_the_reply_then_closes(
    server: EchoServer,
) -> None:
    ws = await opened(server)
    ws.send(text(b"close-me"))
    assert await closes_with(ws, 1000) == "asked"
    ws.send(frame(OP_PING, b"late") + close_frame(1000))
    await eof_within(ws, 2)  # and no pong came before the end (eof_within read it all)
    assert server.app.closed == [(1000, "asked")]


async def test_no_pong_after_our_own_close(server: EchoServer) -> None:
    ws = await opened(server)
    ws.send(text(b"close-me"))
    await closes_with(ws, 1000)
    ws.send(frame(OP_PING, b"late"))
    await asyncio.sleep(0.2)
    ws.send(close_frame(1000))
    rest = await asyncio.wait_for(ws.reader.read(), 2)
    assert rest == b"" and ws.reader.at_eof()


# -- handshake edge cases ------------------------------------------------------------------------


async def test_accept_key_of_the_rfc_example_and_case_insensitive_headers(
    server: EchoServer,
) -> None:
    head = (b"GET /chat HTTP/1.1\r\nhost: server.example.com\r\nupgrade: WebSocket\r\n"
            b"connection: keep-alive, Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"sec-websocket-version: 13\r\n\r\n")
    ws = await RawWS.open(server.port, head)
    assert ws.status == 101
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in ws.head
    ws.close()


@pytest.mark.parametrize("change, status", [
    ((b"HTTP/1.1", b"HTTP/1.0"), 505),
    ((b"GET ", b"POST "), 405),
    ((b"Version: 13", b"Version: 8"), 426),
    ((b"Sec-WebSocket-Key: ", b"Sec-WebSocket-Key: AAAA"), 400),
    ((b"Sec-WebSocket-Key: ", b"X-Nothing: "), 400),
])
async def test_bad_upgrade_requests_are_refused(
    server: EchoServer, change: Tuple[bytes, bytes], status: int,
) -> None:
    ws = await RawWS.open(server.port, request().replace(*change, 1))
    assert ws.status == status, ws.head
    if status == 426:
        assert "Sec-WebSocket-Version: 13" in ws.head
    await eof_within(ws, 2)


async def test_request_head_over_the_limit_is_431(server: EchoServer) -> None:
    ws = await RawWS.open(server.port, request(headers={"X-Big": "a" * 20_000}))
    assert ws.status == 431
    ws.close()
