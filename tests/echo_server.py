"""The real asyncio transport with an echo app, for RFC 6455 tests over 127.0.0.1.

Text is echoed as text, binary as binary; the text ``close-me`` makes the server start
the closing handshake (1000, "asked").
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from maim_message.transport.base import Accept, Decision, HandshakeInfo, ServerConnection
from maim_message.transport.frames import OP_BINARY, PreparedFrame
from maim_message.transport.ws_server import ServerOptions, WebSocketServerTransport


class EchoApp:
    def __init__(self) -> None:
        self.texts: List[bytes] = []
        self.closed: List[Tuple[int, str]] = []
        self.max_buffer = 0  # largest socket write buffer seen (what was handed to the kernel
        # side: the frames of the read being handled are not in it yet)

    async def handshake(self, info: HandshakeInfo) -> Decision:
        return Accept()

    def connection_opened(self, conn: ServerConnection) -> None: ...

    def text_received(self, conn: ServerConnection, payload: bytes) -> None:
        self.texts.append(payload)
        if payload == b"close-me":
            conn.close(1000, "asked")
            return
        self._sample(conn)
        conn.send_text(payload)

    def _sample(self, conn: Any) -> None:
        held = conn.write_buffer_size() - conn.protocol.bytes_to_send
        self.max_buffer = max(self.max_buffer, held)

    def binary_received(self, conn: ServerConnection, payload: bytes) -> None:
        self._sample(conn)
        conn.send_prepared(PreparedFrame(OP_BINARY, payload))

    def connection_writable(self, conn: ServerConnection) -> None: ...

    def connection_closed(self, conn: ServerConnection, code: int, reason: str) -> None:
        self.closed.append((code, reason))


class EchoServer:
    """``async with EchoServer(**options) as server: server.port``"""

    def __init__(self, **options: Any) -> None:
        self.app = EchoApp()
        options.setdefault("close_timeout", 5.0)
        self.transport = WebSocketServerTransport(self.app, ServerOptions(**options))
        self.port = 0

    async def __aenter__(self) -> EchoServer:
        await self.transport.start("127.0.0.1", 0)
        port: Optional[int] = self.transport.port
        assert port
        self.port = port
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.transport.stop()

    @property
    def limits(self) -> Any:
        return self.transport.options.limits
