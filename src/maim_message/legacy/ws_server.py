"""Standalone legacy WebSocket server on ``websockets`` (no FastAPI/uvicorn).

Identity and auth are decided during the handshake: a wrong path gets HTTP 404, a missing
or unknown token (``enable_token``) gets HTTP 401/403 before the upgrade (0.6.8 accepted
the upgrade and then closed with 1008; its aiohttp client treats both as a failed
connection and retries).
"""

from __future__ import annotations

import ssl
from http import HTTPStatus
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from .. import errors
from ..core.defaults import MAX_MESSAGE_SIZE
from . import jsoncodec
from .logsupport import Log
from .registry import UNKNOWN_PLATFORM, TokenAuth
from .server_base import CLOSE_REPLACED, CLOSE_SHUTDOWN, Deliver, ServerTransport

__all__ = ["MAX_MESSAGE_SIZE", "WebSocketServerTransport", "WsPeer"]



def header_value(headers: Any, name: str) -> Optional[str]:
    values = headers.get_all(name)
    return values[0] if values else None


class WsPeer:
    __slots__ = ("platform", "ws")

    def __init__(self, ws: ServerConnection, platform: str) -> None:
        self.ws = ws
        self.platform = platform

    @property
    def is_open(self) -> bool:
        return self.ws.state is State.OPEN

    async def send_json(self, data: bytes) -> None:
        await self.ws.send(data, text=True)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)


def build_ssl_context(certfile: Optional[str], keyfile: Optional[str]) -> Optional[ssl.SSLContext]:
    if not certfile and not keyfile:
        return None
    for label, path in (("certificate", certfile), ("key", keyfile)):
        if path and not Path(path).exists():
            raise FileNotFoundError(f"SSL {label} file does not exist: {path}")
    if not certfile:
        raise errors.ConfigError("ssl_keyfile given without ssl_certfile")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


class WebSocketServerTransport(ServerTransport[WsPeer]):
    """``MessageServer(mode="ws")`` without ``app=``."""

    def __init__(
        self,
        deliver: Deliver,
        auth: TokenAuth,
        log: Log,
        *,
        host: str,
        port: int,
        path: str,
        ssl_certfile: Optional[str] = None,
        ssl_keyfile: Optional[str] = None,
        max_message_size: int = MAX_MESSAGE_SIZE,
        heartbeat_interval: float = 30.0,
        heartbeat_timeout: float = 10.0,
    ) -> None:
        super().__init__(deliver, auth, log)
        self.host = host
        self.port = port
        self.path = path
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile = ssl_keyfile
        self.max_message_size = max_message_size
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.server: Optional[Server] = None

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Listen; returns once the socket is bound, raises ``ServerStartError`` if not."""
        if self.server is not None:
            return
        ssl_ctx = build_ssl_context(self.ssl_certfile, self.ssl_keyfile)
        try:
            self.server = await serve(
                self._handler,
                self.host,
                self.port,
                process_request=self._process_request,
                ssl=ssl_ctx,
                max_size=self.max_message_size,
                ping_interval=self.heartbeat_interval,
                ping_timeout=self.heartbeat_timeout,
                compression="deflate",
            )
        except OSError as exc:
            raise errors.ServerStartError(
                f"cannot listen on {self.host}:{self.port}: {exc}"
            ) from exc
        self._running = True
        self._log.info("legacy WebSocket server listening on %s:%s%s", self.host, self.bound_port,
                       self.path)

    @property
    def bound_port(self) -> Optional[int]:
        if self.server is None:
            return None
        for sock in self.server.sockets:
            return int(sock.getsockname()[1])
        return None

    async def stop(self) -> None:
        self._running = False
        server, self.server = self.server, None
        await self._close_all(1000, CLOSE_SHUTDOWN)
        if server is not None:
            server.close()
            await server.wait_closed()

    # -- handshake ---------------------------------------------------------------------
    def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Optional[Response]:
        if urlsplit(request.path).path != self.path:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if self.auth.enabled:
            token = header_value(request.headers, "authorization")
            if not token:
                self._log.warning("refused legacy connection without token")
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing token\n")
            if not self.auth.verify(token):
                platform = header_value(request.headers, "platform")
                self._log.warning("refused legacy connection of platform %r: invalid token",
                                  platform)
                return connection.respond(HTTPStatus.FORBIDDEN, "invalid token\n")
        return None

    # -- connection --------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        platform = header_value(ws.request.headers, "platform") if ws.request else None
        peer = WsPeer(ws, platform or UNKNOWN_PLATFORM)
        previous = self.table.add(peer)
        if previous is not None:
            self._log.info("platform %r reconnected; closing its previous connection",
                           peer.platform)
            self._spawn(_quiet_close(previous, CLOSE_REPLACED))
        self._log.info("legacy WebSocket connection from platform %r", peer.platform)
        deliver = self._deliver
        loads = jsoncodec.loads
        try:
            async for frame in ws:
                if isinstance(frame, str):
                    try:
                        value = loads(frame)
                    except ValueError as exc:
                        self._log.warning("platform %r sent invalid JSON: %s", peer.platform, exc)
                        continue
                    deliver(value)
                else:
                    self._log.warning("platform %r sent a binary frame; ignored", peer.platform)
        except ConnectionClosed:
            pass
        finally:
            self.table.remove(peer)
            self._log.info("legacy WebSocket connection of platform %r closed", peer.platform)


async def _quiet_close(peer: WsPeer, reason: str) -> None:
    try:
        await peer.close(1000, reason)
    except Exception:  # pragma: no cover - closing a dead socket
        pass
