"""Serving a :class:`WebSocketServer` from an ASGI application (FastAPI, Starlette, uvicorn).

The same hub object that ``start()`` serves on its own port can be mounted in an existing
web application: routing, callbacks, statistics and ``send_message`` work the same way, and
both can run at once.

::

    hub = WebSocketServer(create_server_config(on_auth=..., on_message=...))
    endpoint = WebSocketASGI(hub)
    app = FastAPI(lifespan=endpoint.lifespan)
    app.add_websocket_route("/ws", endpoint)

``WebSocketASGI`` is itself a complete ASGI application (``websocket``, ``http`` and
``lifespan`` scopes), so ``uvicorn.run(WebSocketASGI(hub, path="/ws"))`` works without any
framework. Starlette is imported only by :func:`mount_websocket_server`.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, Optional, Set

from ..sio.asgi import SocketIOASGI, mount_socketio
from ..sio.mux import GenerationMux
from ..transport.asgi import (
    ASGIServerConnection,
    Receive,
    Send,
    add_websocket_route,
    close_connections,
    refuse,
    serve_http,
    serve_websocket,
)
from ..transport.base import HttpReply
from .config import ServerConfig
from .websocket_server import WebSocketServer

logger = logging.getLogger(__name__)


class WebSocketASGI:
    """ASGI application for a :class:`WebSocketServer`'s WebSocket endpoint.

    ``path``: when set, WebSocket requests for another path are refused (use it when this
    object is the top-level ASGI app); when mounted in a router leave it ``None``.
    """

    def __init__(
        self, server: Optional[WebSocketServer] = None, *,
        config: Optional[ServerConfig] = None, path: Optional[str] = None,
    ) -> None:
        self.server = server if server is not None else WebSocketServer(config)
        self.path = path
        self.connections: Set[ASGIServerConnection] = set()
        self._owns_running = False

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            if self.path is not None and scope.get("path") != self.path:
                await receive()
                await refuse(scope, send, HttpReply(
                    404, f"no WebSocket endpoint at {scope.get('path')}\n".encode()))
                return
            cfg = self.server.config
            await serve_websocket(
                self.server, scope, receive, send, max_message_size=cfg.max_message_size,
                high_water=cfg.send_buffer_high,
                max_queue=cfg.max_write_buffer, live=self.connections,
            )
        elif kind == "http":
            await serve_http(self.server, scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def handle(self, websocket: Any) -> None:
        """Serve a framework WebSocket object (e.g. FastAPI's ``WebSocket``) that has not
        been accepted yet: ``@app.websocket("/ws") async def ws(w): await hub.handle(w)``."""
        await self(websocket.scope, websocket.receive, websocket.send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- lifecycle --------------------------------------------------------------------------

    async def startup(self) -> None:
        """Mark the hub running (it then fires ``on_disconnect`` and accepts sends).

        If the hub already runs its own listener (``await server.start()``), it is left as is.
        """
        if not self.server.running:
            self.server.running = True
            self._owns_running = True

    async def shutdown(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Close every ASGI connection, wait for them (bounded), then stop the hub if the
        mount started it."""
        await close_connections(self.connections, code, reason,
                                float(self.server.config.close_timeout) + 1.0)
        if self._owns_running:
            self._owns_running = False
            await self.server.stop()

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[Dict[str, Any]]:
        """For ``FastAPI(lifespan=endpoint.lifespan)`` / ``Starlette(lifespan=...)``.

        Yields the lifespan state ``{"websocket_server": hub}`` (``request.state`` in
        Starlette / FastAPI handlers).
        """
        await self.startup()
        try:
            yield {"websocket_server": self.server}
        finally:
            await self.shutdown()


def mount_websocket_server(
    app: Any, server: WebSocketServer, path: Optional[str] = None
) -> WebSocketASGI:
    """Add ``server``'s WebSocket route (default ``server.config.path``) to a Starlette or
    FastAPI ``app`` and return the endpoint (use its ``lifespan``/``startup``/``shutdown``)."""
    endpoint = WebSocketASGI(server)
    add_websocket_route(app, path or server.config.path, endpoint)
    sio = server.socketio_endpoint()
    if sio is not None:  # 0.7.x clients: Engine.IO routes at "<path>/"
        cfg = server.config
        sio.serve_path(path or cfg.path)
        mount_socketio(app, path or cfg.path, SocketIOASGI(
            GenerationMux(server, sio, None), max_body=cfg.max_message_size,
            max_message_size=cfg.max_message_size, live=endpoint.connections))
    return endpoint
