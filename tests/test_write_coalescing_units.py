"""How writes made while handling a read reach the socket (no sockets: WSConnection with a
transport that records each ``write``): a read of several frames -> one write at the end;
a read of one frame -> its first frame (the ack) at once, the rest (the reply) at the end."""

from __future__ import annotations

from typing import Any, Callable, List

from maim_message.transport.asyncio_connection import WSConnection
from maim_message.transport.frames import OP_TEXT, PreparedFrame
from maim_message.transport.protocol import OPEN
from maim_message.transport.ws_server import WebSocketServerTransport

from .rawws import frame


class _Recorder:
    def __init__(self) -> None:
        self.writes: List[bytes] = []

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))


class _App:
    def __init__(self, on_text: Callable[[WSConnection, bytes], None]) -> None:
        self.text_received = on_text


def _open(on_text: Callable[[WSConnection, bytes], None]) -> tuple[WSConnection, _Recorder]:
    app = _App(on_text)
    conn = WSConnection(WebSocketServerTransport(app))  # type: ignore[arg-type]
    rec = _Recorder()
    conn._transport = rec  # type: ignore[assignment]
    conn.protocol.state = OPEN  # as after the upgrade (_open)
    conn._on_text = app.text_received
    return conn, rec


def _ack_then_reply(conn: WSConnection, payload: bytes) -> None:
    conn.send_text(b"ack:" + payload)
    conn.send_prepared(PreparedFrame.text(b"reply:" + payload))


def test_one_frame_read_writes_its_ack_at_once_and_the_reply_at_the_end() -> None:
    seen: List[int] = []

    def handler(conn: WSConnection, payload: bytes) -> None:
        conn.send_text(b"ack:" + payload)
        seen.append(len(rec.writes))  # the ack is on the wire before the handler's work
        conn.send_prepared(PreparedFrame.text(b"reply:" + payload))
        conn.send_text(b"more:" + payload)
        seen.append(len(rec.writes))  # the rest waits for the end of the read

    conn, rec = _open(handler)
    conn.data_received(frame(OP_TEXT, b"m1"))
    assert seen == [1, 1]
    assert len(rec.writes) == 2
    assert rec.writes[0].endswith(b"ack:m1")
    assert b"reply:m1" in rec.writes[1] and rec.writes[1].endswith(b"more:m1")


def test_a_read_of_several_frames_is_answered_in_one_write() -> None:
    conn, rec = _open(_ack_then_reply)
    conn.data_received(frame(OP_TEXT, b"a") + frame(OP_TEXT, b"b") + frame(OP_TEXT, b"c"))
    assert len(rec.writes) == 1
    out = rec.writes[0]
    order = [out.index(x) for x in (b"ack:a", b"reply:a", b"ack:b", b"reply:b", b"ack:c",
                                    b"reply:c")]
    assert order == sorted(order)


def test_a_one_frame_read_without_answer_writes_nothing() -> None:
    conn, rec = _open(lambda conn, payload: None)
    conn.data_received(frame(OP_TEXT, b"quiet"))
    assert rec.writes == []
