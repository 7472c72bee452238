"""Reads through one reused buffer (the asyncio shell's ``get_buffer``): the frame reader
must copy what it keeps, so overwriting the buffer after each feed changes nothing.
No sockets: ServerProtocol and WSConnection's buffer calls driven by hand."""

from __future__ import annotations

import asyncio
from typing import Any, List, Tuple

from maim_message.transport.asyncio_connection import WSConnection
from maim_message.transport.frames import OP_BINARY, OP_TEXT
from maim_message.transport.protocol import OPEN, ServerProtocol
from maim_message.transport.reader import BIG_FRAME
from maim_message.transport.ws_server import READ_BUFFER, WebSocketServerTransport

from .rawws import frame


def feed_through_buffer(proto: ServerProtocol, wire: bytes, step: int) -> List[Tuple[int, bytes]]:
    """Feed ``wire`` in ``step``-byte reads via one buffer, scribbled over after each."""
    shared = bytearray(step)
    view = memoryview(shared)
    events: List[Tuple[int, bytes]] = []
    for start in range(0, len(wire), step):
        chunk = wire[start:start + step]
        shared[:len(chunk)] = chunk
        events.extend(proto.receive_data(view[:len(chunk)]))
        shared[:] = b"\xee" * step  # the next read overwrites it
    return events


def test_small_frames_split_across_reads_survive_buffer_reuse() -> None:
    proto = ServerProtocol(max_message_size=1 << 16, state=OPEN)
    texts = [f'{{"n": {i}, "pad": "{"x" * (i * 37)}"}}'.encode() for i in range(40)]
    wire = b"".join(frame(OP_TEXT, t) for t in texts) + frame(OP_BINARY, b"\x00\x01\x02")
    events = feed_through_buffer(proto, wire, 97)
    assert events == [(OP_TEXT, t) for t in texts] + [(OP_BINARY, b"\x00\x01\x02")]


def test_big_frame_collected_in_parts_survives_buffer_reuse() -> None:
    proto = ServerProtocol(max_message_size=4 * BIG_FRAME, state=OPEN)
    body = bytes(range(256)) * (BIG_FRAME // 256 + 1000)
    wire = frame(OP_BINARY, body) + frame(OP_TEXT, b"after")
    events = feed_through_buffer(proto, wire, 64 * 1024 + 3)
    assert len(events) == 2
    assert events[0] == (OP_BINARY, body)
    assert events[1] == (OP_TEXT, b"after")


class _App:
    def __init__(self) -> None:
        self.texts: List[bytes] = []

    def text_received(self, conn: Any, payload: bytes) -> None:
        self.texts.append(payload)


def test_connection_reads_into_the_servers_one_buffer() -> None:
    app = _App()
    server = WebSocketServerTransport(app)  # type: ignore[arg-type]
    one, two = WSConnection(server), WSConnection(server)
    assert isinstance(one, asyncio.BufferedProtocol)
    buf = one.get_buffer(-1)
    assert buf is two.get_buffer(-1) and len(buf) == READ_BUFFER  # shared, not per connection
    one.protocol.state = OPEN  # as after the upgrade (_open), without a handshake
    one._on_text = app.text_received
    wire = frame(OP_TEXT, b'{"a": 1}') + frame(OP_TEXT, b'{"b": 2}')
    buf[:len(wire)] = wire
    one._transport = _NullTransport()  # type: ignore[assignment]
    one.buffer_updated(len(wire))
    buf[:len(wire)] = b"\x00" * len(wire)
    assert app.texts == [b'{"a": 1}', b'{"b": 2}']


class _NullTransport:
    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        pass
