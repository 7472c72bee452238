"""Legacy WebSocket endpoint mounted on an existing ASGI application
(``MessageServer(app=fastapi_app)``, as MaiBot does). Starlette is imported only here.

Token refusals are answered before the upgrade (HTTP 401/403 through the ASGI
"websocket.http.response" extension when the server offers it; otherwise a close before
accept, which ASGI servers turn into HTTP 403).
"""

from __future__ import annotations

from typing import Any

from . import jsoncodec
from .logsupport import Log
from .registry import UNKNOWN_PLATFORM, TokenAuth
from .server_base import CLOSE_REPLACED, CLOSE_SHUTDOWN, Deliver, ServerTransport

__all__ = ["AsgiPeer", "MountedWebSocketTransport"]


class AsgiPeer:
    __slots__ = ("_open", "platform", "ws")

    def __init__(self, ws: Any, platform: str) -> None:
        self.ws = ws
        self.platform = platform
        self._open = True

    @property
    def is_open(self) -> bool:
        return self._open

    async def send_json(self, data: bytes) -> None:
        await self.ws.send({"type": "websocket.send", "text": data.decode("utf-8")})

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._open:
            self._open = False
            try:
                await self.ws.close(code=code, reason=reason)
            except Exception:
                pass


def mount_route(app: Any, path: str, endpoint: Any) -> None:
    """Add a WebSocket route to a Starlette/FastAPI app (Starlette 1.x dropped
    ``add_websocket_route``; appending a ``WebSocketRoute`` works on every version)."""
    router = getattr(app, "router", None)
    if router is not None and isinstance(getattr(router, "routes", None), list):
        from starlette.routing import WebSocketRoute

        router.routes.append(WebSocketRoute(path, endpoint))
    elif hasattr(app, "add_websocket_route"):
        app.add_websocket_route(path, endpoint)
    else:
        raise TypeError(f"cannot mount a WebSocket route on {type(app).__name__}: "
                        "pass a Starlette or FastAPI application")


class MountedWebSocketTransport(ServerTransport[AsgiPeer]):
    """Adds a WebSocket route to ``app``; the host application serves it."""

    def __init__(self, deliver: Deliver, auth: TokenAuth, log: Log, *, app: Any, path: str,
                 host: str = "0.0.0.0", port: int = 18000) -> None:
        super().__init__(deliver, auth, log)
        self.app = app
        self.path = path
        self.host = host
        self.port = port
        self.own_app = False
        mount_route(app, path, self._endpoint)

    async def start(self) -> None:
        self._running = True
        self._log.info("legacy WebSocket endpoint mounted at %s on the host application",
                       self.path)

    async def stop(self) -> None:
        self._running = False
        await self._close_all(1000, CLOSE_SHUTDOWN)

    async def _refuse(self, websocket: Any, status: int, text: str) -> None:
        extensions = websocket.scope.get("extensions") or {}
        if "websocket.http.response" in extensions:
            from starlette.responses import PlainTextResponse

            await websocket.send_denial_response(PlainTextResponse(text, status_code=status))
        else:
            await websocket.close(code=1008, reason="无效的令牌")

    async def _endpoint(self, websocket: Any) -> None:
        headers = websocket.headers
        platform = headers.get("platform") or UNKNOWN_PLATFORM
        if self.auth.enabled:
            token = headers.get("authorization")
            if not token or not self.auth.verify(token):
                self._log.warning("refused legacy connection of platform %r: invalid token",
                                  platform)
                await self._refuse(websocket, 401 if not token else 403,
                                   "missing token\n" if not token else "invalid token\n")
                return
        await websocket.accept()
        peer = AsgiPeer(websocket, platform)
        previous = self.table.add(peer)
        if previous is not None:
            self._spawn(previous.close(1000, CLOSE_REPLACED))
        self._log.info("legacy WebSocket connection from platform %r", platform)
        deliver = self._deliver
        loads = jsoncodec.loads
        try:
            while True:
                message = await websocket.receive()
                mtype = message["type"]
                if mtype == "websocket.disconnect":
                    break
                if mtype != "websocket.receive":
                    continue
                text = message.get("text")
                if text is None:
                    self._log.warning("platform %r sent a binary frame; ignored", platform)
                    continue
                try:
                    value = loads(text)
                except ValueError as exc:
                    self._log.warning("platform %r sent invalid JSON: %s", platform, exc)
                    continue
                deliver(value)
        except Exception as exc:  # disconnects surface as various exceptions per server
            self._log.debug("legacy WebSocket connection of %r ended: %r", platform, exc)
        finally:
            peer._open = False
            self.table.remove(peer)
            self._log.info("legacy WebSocket connection of platform %r closed", platform)
