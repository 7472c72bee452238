"""Serving the legacy WebSocket app (``ws_app``) with the shared shells.

``MessageServer(mode="ws")`` listens with the asyncio transport of ``transport/ws_server``
(:class:`LegacyWebSocketServer`); with ``app=<FastAPI/Starlette app>`` it adds a route to
that application, served by the ASGI shell of ``transport/asgi`` (:class:`MountedLegacyServer`).
No extension is negotiated: 0.6.8 clients (aiohttp) offer none, and the ``websockets``
client falls back to plain frames when the server does not accept permessage-deflate.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Dict, Optional, Set

from .. import errors
from ..core.defaults import MAX_MESSAGE_SIZE
from ..server.tls import server_ssl_context
from ..sio.asgi import SocketIOASGI, mount_socketio
from ..sio.mux import GenerationMux
from ..sio.server import SocketIOEndpoint
from ..transport.asgi import (
    ASGIServerConnection,
    Receive,
    Send,
    add_websocket_route,
    close_connections,
    serve_websocket,
)
from ..transport.ws_server import ServerOptions, WebSocketServerTransport
from .logsupport import Log
from .platforms import CLOSE_SHUTDOWN, Deliver, TokenAuth
from .ws_app import LegacyWsApp

__all__ = ["MAX_MESSAGE_SIZE", "LegacyWebSocketServer", "MountedLegacyServer",
           "legacy_server_ssl_context"]

_CLOSE_WAIT = 5.0  # seconds stop() waits for connections to close


def legacy_server_ssl_context(
    certfile: Optional[str], keyfile: Optional[str]
) -> Optional[ssl.SSLContext]:
    """0.6.8's ssl_certfile/ssl_keyfile on the shared builder (TLS >= 1.2); a certificate
    file alone may hold the key too."""
    if not certfile and not keyfile:
        return None
    for label, path in (("certificate", certfile), ("key", keyfile)):
        if path and not Path(path).exists():
            raise FileNotFoundError(f"SSL {label} file does not exist: {path}")
    if not certfile:
        raise errors.ConfigError("ssl_keyfile given without ssl_certfile")
    return server_ssl_context(certfile, keyfile or certfile)


class LegacyWebSocketServer(LegacyWsApp):
    """``MessageServer(mode="ws")`` without ``app=``: its own listening socket."""

    def __init__(
        self, deliver: Deliver, auth: TokenAuth, log: Log, *, host: str, port: int, path: str,
        ssl_certfile: Optional[str] = None, ssl_keyfile: Optional[str] = None,
        max_message_size: int = MAX_MESSAGE_SIZE, heartbeat_interval: float = 30.0,
        heartbeat_timeout: float = 10.0,
    ) -> None:
        super().__init__(deliver, auth, log, path=path)
        self.host = host
        self.port = port
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile = ssl_keyfile
        self.max_message_size = max_message_size
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.server: Optional[WebSocketServerTransport] = None
        self.sio: Optional[SocketIOEndpoint] = None

    async def start(self) -> None:
        """Listen; returns once the socket is bound, raises ``ServerStartError`` if not."""
        if self.server is not None:
            return
        ssl_ctx = legacy_server_ssl_context(self.ssl_certfile, self.ssl_keyfile)
        # 0.7.x legacy clients (Socket.IO, ``platform``/``Authorization`` headers) on the
        # same port and path: Engine.IO at "<path>/", same token check and routing
        self.sio = SocketIOEndpoint(
            self, self.path or "/ws", ping_interval=self.heartbeat_interval,
            ping_timeout=self.heartbeat_timeout, max_payload=self.max_message_size)
        options = ServerOptions(
            max_message_size=self.max_message_size, ping_interval=self.heartbeat_interval,
            ping_timeout=self.heartbeat_timeout,
        )
        options.max_request_body = max(options.max_request_body, self.max_message_size)
        server = WebSocketServerTransport(GenerationMux(self, self.sio, None), options)
        try:
            await server.start(self.host, self.port, ssl=ssl_ctx)
        except OSError as exc:
            raise errors.ServerStartError(
                f"cannot listen on {self.host}:{self.port}: {exc}"
            ) from exc
        self.server = server
        self._running = True
        self._log.info("legacy WebSocket server listening on %s:%s%s", self.host,
                       self.bound_port, self.path)

    @property
    def bound_port(self) -> Optional[int]:
        return self.server.port if self.server is not None else None

    async def stop(self) -> None:
        self._running = False
        server, self.server = self.server, None
        self.table.clear()
        if server is not None:
            await server.stop(1000, CLOSE_SHUTDOWN)
        if self.sio is not None:
            self.sio.stop()  # polling-only 0.7 sessions (no 41: 0.7.5 clients come back)
            self.sio = None


class MountedLegacyServer(LegacyWsApp):
    """``MessageServer(mode="ws", app=...)``: a route on the host application, which
    serves it (its own server, TLS and port)."""

    def __init__(self, deliver: Deliver, auth: TokenAuth, log: Log, *, app: Any, path: str,
                 host: str = "0.0.0.0", port: int = 18000,
                 max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        super().__init__(deliver, auth, log, path=None)  # the host's router matched the path
        self.app = app
        self.route_path = path
        self.host = host
        self.port = port
        self.max_message_size = max_message_size
        self.own_app = False
        self.live: Set[ASGIServerConnection] = set()
        add_websocket_route(app, path, self)
        # 0.7.x legacy clients: Engine.IO routes at "<path>/" on the same application
        self.sio: Optional[SocketIOEndpoint] = SocketIOEndpoint(
            self, path, max_payload=max_message_size)
        mount_socketio(app, path, SocketIOASGI(
            GenerationMux(self, self.sio, None), max_body=max_message_size,
            max_message_size=max_message_size, live=self.live))

    async def __call__(self, scope: Dict[str, Any], receive: Receive, send: Send) -> None:
        """The ASGI endpoint of the route."""
        await serve_websocket(self, scope, receive, send,
                              max_message_size=self.max_message_size, live=self.live)

    async def start(self) -> None:
        self._running = True
        self._log.info("legacy WebSocket endpoint mounted at %s on the host application",
                       self.route_path)

    async def stop(self) -> None:
        self._running = False
        self.table.clear()
        if self.sio is not None:
            self.sio.stop()  # polling-only 0.7 sessions; WebSocket ones are in self.live
        await close_connections(self.live, 1000, CLOSE_SHUTDOWN, _CLOSE_WAIT)
