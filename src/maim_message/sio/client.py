"""The Socket.IO dialect on a client WebSocket: a 0.7.x server reached with our client.

Engine.IO lets a client open its session directly over WebSocket
(``/<path>/?EIO=4&transport=websocket``, wire-0.7.md §8.2), so the client keeps its one
WebSocket library and connection object: :class:`SocketIOClientSocket` wraps a connected
``websockets`` connection and looks like one to :class:`~..client.connection.
SupervisedConnection` (``send``, async iteration over message bodies, ``close``,
``close_code``/``close_reason``), turning envelopes into ``42["message",...]`` packets and
back, answering pings and reading the server's CONNECT answer.

A ``41`` from the server ends the connection like a close; unlike 0.7.5's own clients
the supervisor then reconnects (a graceful server stop sends ``41``). A ``44`` refusal,
or a ``41`` right after the CONNECT was acknowledged with nothing else received (how
0.7.5 API servers refuse a key), is reported as a refusal and not retried.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Optional
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.protocol import State

from ..core.codec import loads
from ..errors import AuthRejectedError, EnvelopeError
from .packets import (
    EioType,
    PacketError,
    SioPacket,
    SioType,
    decode_eio,
    decode_sio,
    encode_eio,
    encode_sio,
    event_argument,
    message_body,
    message_frame,
)

__all__ = ["REFUSED_AFTER_CONNECT", "SocketIOClientSocket", "SocketIORefused", "socketio_url"]

_CONNECT = encode_eio(EioType.MESSAGE, encode_sio(SioPacket(SioType.CONNECT)))
_DISCONNECT = encode_eio(EioType.MESSAGE, encode_sio(SioPacket(SioType.DISCONNECT)))
_PONG = encode_eio(EioType.PONG)
# A 41 this soon after the CONNECT answer, before any message, is a 0.7.5 key refusal.
REFUSED_AFTER_CONNECT = 2.0
_SETTLE = 0.25  # how long open() waits for such a 41 before reporting success
_CLOSE_WAIT = 1.0  # close handshake after the server ended the session


class SocketIORefused(AuthRejectedError):
    """The server refused the Socket.IO CONNECT (``44``, or ``41`` at once)."""

    def __init__(self, reason: str) -> None:
        super().__init__(None, reason)
        self.args = (f"server refused the Socket.IO connection: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])


def socketio_url(url: str) -> str:
    """``ws://h:p/ws`` -> ``ws://h:p/ws/?EIO=4&transport=websocket`` (query kept)."""
    parts = urlsplit(url)
    path = (parts.path or "/ws").rstrip("/") + "/"
    query = "EIO=4&transport=websocket" + (f"&{parts.query}" if parts.query else "")
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


class SocketIOClientSocket:
    """A connected Engine.IO v4 / Socket.IO v5 session over one ``websockets`` connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.engine_sid = ""
        self.namespace_sid = ""
        self.ping_interval = 25.0
        self.ping_timeout = 20.0
        self._reason: Optional[str] = None
        self._connected_at = 0.0
        self._received = False  # a message arrived (so a later 41 is not a refusal)
        self._early: Optional[bytes] = None  # a body read while settling in open()

    @classmethod
    async def open(cls, ws: ClientConnection, timeout: float) -> SocketIOClientSocket:
        """Read OPEN, send CONNECT, wait for its answer; raises SocketIORefused."""
        sock = cls(ws)
        try:
            await asyncio.wait_for(sock._handshake(), timeout)
        except BaseException:
            await sock._finish()
            raise
        return sock

    async def _handshake(self) -> None:
        kind, data = decode_eio(await self._recv())
        if kind is not EioType.OPEN:
            raise PacketError(f"expected the Engine.IO OPEN packet, got type {int(kind)}")
        info = loads(data)
        self.engine_sid = str(info.get("sid", ""))
        self.ping_interval = float(info.get("pingInterval", 25000)) / 1000
        self.ping_timeout = float(info.get("pingTimeout", 20000)) / 1000
        await self.ws.send(_CONNECT, text=True)
        while True:
            packet = await self._control(await self._recv())
            if packet is None:
                continue
            if packet.type is SioType.CONNECT:
                self.namespace_sid = str((packet.data or {}).get("sid", ""))
                break
            if packet.type is SioType.CONNECT_ERROR:
                data = packet.data
                message = data.get("message") if isinstance(data, dict) else data
                raise SocketIORefused(str(message))
        self._connected_at = time.monotonic()
        try:  # a 0.7.5 API server refuses a key with 41 right after the CONNECT answer
            self._early = await asyncio.wait_for(self._next_body(), _SETTLE)
        except asyncio.TimeoutError:
            pass

    async def _recv(self) -> bytes:
        raw = await self.ws.recv(decode=False)
        return raw if isinstance(raw, bytes) else bytes(raw)

    async def _control(self, raw: bytes) -> Optional[SioPacket]:
        """Handle Engine.IO control packets; return a Socket.IO packet, if it is one."""
        kind, data = decode_eio(raw)
        if kind is EioType.PING:
            await self.ws.send(_PONG + data, text=True)
        elif kind is EioType.CLOSE:
            self._end("server closed the Engine.IO session")
        elif kind is EioType.MESSAGE:
            return decode_sio(data)
        return None

    def _end(self, reason: str) -> None:
        refused = not self._received and (
            time.monotonic() - self._connected_at < REFUSED_AFTER_CONNECT)
        if refused and self._connected_at:
            raise SocketIORefused("disconnected right after connecting "
                                  "(how a 0.7.x server refuses a key)")
        self._reason = reason
        raise ConnectionClosedOK(None, None)

    async def _next_body(self) -> bytes:
        while True:
            raw = await self._recv()
            body = message_body(raw)
            if body is None:
                packet = await self._control(raw)
                if packet is None:
                    continue
                if packet.type is SioType.DISCONNECT:
                    self._end("server sent a Socket.IO disconnect")
                if packet.type is not SioType.EVENT:
                    continue
                body = event_argument(packet)
                if packet.ack_id is not None:
                    await self.ws.send(encode_eio(EioType.MESSAGE, encode_sio(
                        SioPacket(SioType.ACK, data=[], ack_id=packet.ack_id))), text=True)
                if body is None:
                    continue
            self._received = True
            return body

    async def _finish(self) -> None:
        """Close after the server ended the session: a server shutting down may never answer
        the close handshake (0.7.5's aiohttp does not), so wait briefly, then abort."""
        try:
            await asyncio.wait_for(asyncio.shield(self.ws.close(1000)), _CLOSE_WAIT)
        except asyncio.TimeoutError:
            self.ws.transport.abort()

    # -- what SupervisedConnection uses ----------------------------------------------------

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._bodies()

    async def _bodies(self) -> AsyncIterator[bytes]:
        if self._early is not None:
            early, self._early = self._early, None
            yield early
        while True:
            try:
                body = await self._next_body()
            except (ConnectionClosedOK, SocketIORefused):
                await self._finish()
                raise
            except (PacketError, EnvelopeError) as exc:
                self._reason = f"protocol error: {exc}"
                await self.ws.close(1002, "bad Engine.IO packet")
                return
            yield body

    async def send(self, data: Any, text: bool = True) -> None:
        body = data if isinstance(data, bytes) else str(data).encode("utf-8")
        await self.ws.send(message_frame(body), text=True)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            await self.ws.send(_DISCONNECT, text=True)
        except ConnectionClosed:
            pass
        await self.ws.close(code, reason)

    @property
    def state(self) -> State:
        return self.ws.state

    @property
    def close_code(self) -> Optional[int]:
        code = self.ws.close_code
        if self._reason is not None and code in (None, 1006):
            return 1000  # the server ended the session (41 / 1), then went silent
        return code

    @property
    def close_reason(self) -> Optional[str]:
        return self._reason or self.ws.close_reason
