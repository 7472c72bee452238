"""The Socket.IO dialect inside a host ASGI application (FastAPI, Starlette).

A hub mounted in someone else's application (``MessageServer(app=...)``,
``mount_websocket_server``) gets its 0.7.x clients through two more routes at
``<path>/``: plain HTTP (Engine.IO long-polling, GET/POST/OPTIONS) and WebSocket (the
upgrade, or a direct session). Both are served by the ASGI shell of ``transport/asgi``
with the same :class:`~.server.GenerationMux` the asyncio shell uses, so nothing here
knows about Engine.IO.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Set

from ..transport.asgi import ASGIServerConnection, Receive, Send, serve_http, serve_websocket
from .mux import GenerationMux

logger = logging.getLogger(__name__)

__all__ = ["SocketIOASGI", "mount_socketio"]


class SocketIOASGI:
    """ASGI endpoint of ``<path>/``: HTTP and WebSocket requests through one mux."""

    def __init__(self, mux: GenerationMux, *, max_body: int, max_message_size: int,
                 live: Optional[Set[ASGIServerConnection]] = None) -> None:
        self.mux = mux
        self.max_body = max_body
        self.max_message_size = max_message_size
        self.live = live if live is not None else set()

    async def __call__(self, scope: Dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await serve_http(self.mux, scope, receive, send, max_body=self.max_body)
        elif kind == "websocket":
            await serve_websocket(self.mux, scope, receive, send,
                                  max_message_size=self.max_message_size, live=self.live)


def mount_socketio(app: Any, path: str, endpoint: SocketIOASGI) -> bool:
    """Add the ``<path>/`` routes to a Starlette/FastAPI ``app``; False when the app has no
    route list (then only 0.6 clients are served there)."""
    router = getattr(app, "router", None)
    routes = getattr(router, "routes", None)
    if not isinstance(routes, list):
        logger.info("%s has no route list: 0.7 (Socket.IO) clients not served there",
                    type(app).__name__)
        return False
    from starlette.routing import Route, WebSocketRoute

    sio_path = "/" + path.strip("/") + "/"
    routes.append(Route(sio_path, endpoint, methods=["GET", "POST", "OPTIONS"]))
    routes.append(WebSocketRoute(sio_path, endpoint))
    return True
