"""The legacy WebSocket dialect as an app on the shared transport (``transport/base.py``).

What differs from the API-Server dialect is only this: the handshake answer (token in the
``Authorization`` header checked before the upgrade: 401 without one, 403 for a wrong one;
the ``platform`` header names the connection), routing by platform
(:class:`~.platforms.PlatformRouter`), and frames that are bare JSON values. The same
object is served by the asyncio shell (``transport/ws_server.py``) or the ASGI shell
(``transport/asgi.py``); see ``ws_server.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from ..transport.base import Accept, Decision, HandshakeInfo, HttpReply, ServerConnection
from .logsupport import Log
from .platforms import UNKNOWN_PLATFORM, Deliver, PlatformRouter, TokenAuth

__all__ = ["LegacyWsApp", "WsPeer"]


def _raw_header(info: HandshakeInfo, name: str) -> Optional[str]:
    """First value of a header kept out of ``info.headers`` (``authorization`` is)."""
    for key, value in info.raw_headers:
        if key.lower() == name:
            return value
    return None


class WsPeer:
    """A :class:`~.platforms.Peer` over a shared-transport connection."""

    __slots__ = ("_waiter", "conn", "platform")

    def __init__(self, conn: ServerConnection, platform: str) -> None:
        self.conn = conn
        self.platform = platform
        self._waiter: Optional[asyncio.Future[None]] = None

    @property
    def is_open(self) -> bool:
        return self.conn.is_open

    def send_json(self, data: bytes) -> bool:
        return self.conn.send_text(data)

    async def drained(self) -> None:
        conn = self.conn
        if conn.is_writable or not conn.is_open:
            return
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._waiter)

    def wake(self) -> None:
        """The send buffer drained, or the connection closed: release waiting senders."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.conn.close(code, reason)


class LegacyWsApp(PlatformRouter[WsPeer]):
    """``ServerApp`` of ``MessageServer(mode="ws")``; ``path=None`` leaves path routing to
    the host (a Starlette route)."""

    def __init__(self, deliver: Deliver, auth: TokenAuth, log: Log, *,
                 path: Optional[str]) -> None:
        super().__init__(deliver, auth, log)
        self.path = path

    async def handshake(self, info: HandshakeInfo) -> Decision:
        if self.path is not None and info.path != self.path:
            return HttpReply(404, b"Not Found\n")
        return await self.authorize(info)

    async def authorize(self, info: HandshakeInfo, recheck: bool = False) -> Decision:
        """Token and platform of a new client of either generation (a 0.7 Socket.IO client
        gets a refusal as its CONNECT_ERROR message; ``recheck``: asked again at its
        CONNECT)."""
        platform = info.headers.get("platform")
        if self.auth.enabled:
            token = _raw_header(info, "authorization")
            if not token:
                self._log.warning("refused legacy connection of platform %r: no token",
                                  platform)
                return HttpReply(401, b"missing token\n")
            if not self.auth.verify(token):
                self._log.warning("refused legacy connection of platform %r: invalid token",
                                  platform)
                return HttpReply(403, b"invalid token\n")
        return Accept(platform or UNKNOWN_PLATFORM)

    def connection_opened(self, conn: ServerConnection) -> None:
        peer = WsPeer(conn, str(conn.context))
        conn.context = peer
        self.attach(peer)
        self._log.info("legacy WebSocket connection from platform %r", peer.platform)

    def text_received(self, conn: ServerConnection, payload: bytes) -> None:
        self.frame_received(conn.context, payload)

    def binary_received(self, conn: ServerConnection, payload: bytes) -> None:
        self._log.warning("platform %r sent a binary frame; ignored", conn.context.platform)

    def connection_writable(self, conn: ServerConnection) -> None:
        conn.context.wake()

    def connection_closed(self, conn: ServerConnection, code: int, reason: str) -> None:
        peer: Any = conn.context
        if isinstance(peer, WsPeer):
            peer.wake()
            self.detach(peer)
            self._log.info("legacy WebSocket connection of platform %r closed", peer.platform)
