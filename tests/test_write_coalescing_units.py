"""How writes made while handling a read reach the socket (no sockets: WSConnection with a
transport that records each ``write``): a read of several frames -> one write at the end;
a read of one frame -> its first frame (the ack) at once, the rest (the reply) at the end."""

from __future__ import annotations

from typing import Any, Callable, List

import pytest

from maim_message.transport.asyncio_connection import WSConnection
from maim_message.transport.frames import OP_TEXT, PreparedFrame
from maim_message.transport.protocol import OPEN
from maim_message.transport.write_batch import write_batch
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


async def test_sends_inside_a_write_batch_leave_in_one_write_per_connection() -> None:
    """Acks of a confirmed batch, or a cluster batch handed to receivers: outside a read
    the first send of a turn would leave at once and the rest at the turn's end (two
    writes); inside a write batch every connection gets one write when it closes."""
    first, rec1 = _open(lambda conn, payload: None)
    second, rec2 = _open(lambda conn, payload: None)
    with write_batch:
        for n in range(3):
            first.send_text(b"ack:%d" % n)
            second.send_prepared(PreparedFrame.text(b"msg:%d" % n))
        with write_batch:  # nested: only the outermost close writes
            first.send_text(b"ack:inner")
        assert rec1.writes == [] and rec2.writes == []
    assert len(rec1.writes) == 1 and len(rec2.writes) == 1
    assert [rec1.writes[0].index(b"ack:%d" % n) for n in range(3)] == sorted(
        rec1.writes[0].index(b"ack:%d" % n) for n in range(3))
    assert rec1.writes[0].endswith(b"ack:inner")
    first.send_text(b"later")  # the batch is over: a send outside it leaves at once
    assert len(rec1.writes) == 2


def test_a_big_send_inside_a_write_batch_leaves_at_once() -> None:
    """Back-pressure still sees it: past the high-water mark the write is not held."""
    conn, rec = _open(lambda conn, payload: None)
    big = b"x" * (conn._server.options.send_buffer_high + 1)
    with write_batch:
        conn.send_text(b"small")
        assert rec.writes == []
        conn.send_text(big)
        written = len(rec.writes)
        assert written and b"".join(rec.writes).endswith(big)
        assert b"small" in rec.writes[0]
    assert len(rec.writes) == written  # nothing left for the close


def test_a_failing_connection_does_not_hold_the_others_writes() -> None:
    broken, _ = _open(lambda conn, payload: None)
    fine, rec = _open(lambda conn, payload: None)

    class _Boom(_Recorder):
        def write(self, data: Any) -> None:
            raise RuntimeError("boom")

    broken._transport = _Boom()  # type: ignore[assignment]
    with write_batch:
        broken.send_text(b"a")
        fine.send_text(b"b")
    assert len(rec.writes) == 1 and rec.writes[0].endswith(b"b")


def test_an_interrupt_in_one_flush_still_writes_the_others() -> None:
    """A KeyboardInterrupt while one connection writes: raised once the batch's other
    connections have had their write (none is left waiting for a batch that never
    closes)."""
    broken, _ = _open(lambda conn, payload: None)
    fine, rec = _open(lambda conn, payload: None)

    class _Interrupted(_Recorder):
        def write(self, data: Any) -> None:
            raise KeyboardInterrupt

    broken._transport = _Interrupted()  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        with write_batch:
            broken.send_text(b"a")
            fine.send_text(b"b")
    assert len(rec.writes) == 1 and rec.writes[0].endswith(b"b")
    with write_batch:
        fine.send_text(b"c")
    assert len(rec.writes) == 2 and rec.writes[1].endswith(b"c")
