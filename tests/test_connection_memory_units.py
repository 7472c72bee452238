"""What an idle connection keeps (S4's memory per connection): no HTTP request after the
upgrade, no backlog queue once a big read is handled. No sockets: ServerProtocol and
WSConnection driven by hand."""

from __future__ import annotations

import asyncio
from typing import Any, List

from maim_message.transport.asyncio_connection import _SLICE, WSConnection
from maim_message.transport.frames import OP_TEXT
from maim_message.transport.protocol import CONNECTING, OPEN, ServerProtocol
from maim_message.transport.ws_server import WebSocketServerTransport

from .rawws import frame, request


def test_the_upgrade_request_is_let_go_once_accepted() -> None:
    proto = ServerProtocol(max_message_size=1000, state=CONNECTING)
    proto.receive_data(request())
    assert proto.request is not None
    key = proto.request.websocket_accept_key()
    proto.accept(key)
    assert proto.state is OPEN
    assert proto.request is None
    assert b"101" in b"".join(bytes(c) for c in proto.data_to_send())


class _App:
    def __init__(self) -> None:
        self.texts: List[bytes] = []

    def text_received(self, conn: Any, payload: bytes) -> None:
        self.texts.append(payload)


class _Transport:
    def __init__(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        pass

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def test_a_big_read_is_handled_in_order_in_slices_and_leaves_no_backlog() -> None:
    async def scenario() -> None:
        app = _App()
        conn = WSConnection(WebSocketServerTransport(app))  # type: ignore[arg-type]
        conn._transport = _Transport()  # type: ignore[assignment]
        conn.protocol.state = OPEN  # as after the upgrade (_open)
        conn._on_text = app.text_received
        assert conn._backlog is None  # idle: nothing queued, no queue
        texts = [f'{{"n": {i}}}'.encode() for i in range(3 * _SLICE + 5)]
        wire = b"".join(frame(OP_TEXT, t) for t in texts)
        conn.data_received(wire)
        assert app.texts == texts[:_SLICE]  # one slice now, the rest in later loop turns
        for _ in range(10):
            await asyncio.sleep(0)
        assert app.texts == texts
        assert conn._backlog is None

    asyncio.run(scenario())
