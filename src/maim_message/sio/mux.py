"""The transport's app when a hub speaks two generations on one port.

:class:`GenerationMux` sends Engine.IO requests (``EIO`` in the query) and the WebSockets
they opened to the Socket.IO endpoint, everything else (0.6 upgrades, plain HTTP routes)
to the hub, which never sees the difference: an accepted 0.7 client reaches it as a
``SioSocket``. One type check per frame is all the 0.6 path pays.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..transport.base import Decision, HandshakeInfo, HttpReply, ServerConnection
from .server import SocketIOEndpoint
from .socket import Link

__all__ = ["GenerationMux"]


class GenerationMux:
    """The transport's app: Engine.IO traffic to the endpoint, the rest to the hub."""

    def __init__(self, hub: Any, endpoint: Optional[SocketIOEndpoint],
                 path: Optional[str]) -> None:
        self.hub = hub
        self.endpoint = endpoint
        self.path = path  # where 0.6 upgrades are served (None: anywhere)

    async def handshake(self, info: HandshakeInfo) -> Decision:
        endpoint = self.endpoint
        if endpoint is not None and endpoint.owns(info):
            return await endpoint.handshake(info)
        if info.is_upgrade and self.path is not None and info.path != self.path:
            return HttpReply(404, f"no WebSocket endpoint at {info.path}\n".encode())
        result: Decision = await self.hub.handshake(info)
        return result

    def connection_opened(self, conn: ServerConnection) -> None:
        if conn.context.__class__ is Link:
            self.endpoint.ws_opened(conn)  # type: ignore[union-attr]
        else:
            self.hub.connection_opened(conn)

    def text_receiver(self, conn: ServerConnection
                      ) -> Callable[[ServerConnection, bytes], None]:
        """What :meth:`text_received` passes ``conn``'s text to: the asyncio transport
        calls it directly, one call less per message."""
        if conn.context.__class__ is Link:
            return self.endpoint.ws_text  # type: ignore[union-attr]
        return self.hub.text_received

    def text_received(self, conn: ServerConnection, payload: bytes) -> None:
        if conn.context.__class__ is Link:
            self.endpoint.ws_text(conn, payload)  # type: ignore[union-attr]
        else:
            self.hub.text_received(conn, payload)

    def binary_received(self, conn: ServerConnection, payload: bytes) -> None:
        if conn.context.__class__ is Link:
            self.endpoint.ws_binary(conn)  # type: ignore[union-attr]
        else:
            self.hub.binary_received(conn, payload)

    def connection_writable(self, conn: ServerConnection) -> None:
        if conn.context.__class__ is Link:
            self.endpoint.ws_writable(conn)  # type: ignore[union-attr]
        else:
            self.hub.connection_writable(conn)

    def connection_closed(self, conn: ServerConnection, code: int, reason: str) -> None:
        if conn.context.__class__ is Link:
            self.endpoint.ws_closed(conn, code, reason)  # type: ignore[union-attr]
        else:
            self.hub.connection_closed(conn, code, reason)
