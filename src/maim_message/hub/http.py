"""Plain HTTP endpoints served on the hub's WebSocket port.

The transport answers one request per connection and closes it, so the live page polls
``/api/stats`` (no SSE, no keep-alive). Static files are read once at start-up.
``/healthz`` and ``/readyz`` are open; ``/api/*`` needs the admin token, ``/metrics`` too
when ``admin.protect_metrics`` is set. A refusal is a bare 401 that says nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict

from ..core.codec import dumps
from ..transport.base import HandshakeInfo, HttpReply
from .admin import AdminError
from .admin_auth import REALM

if TYPE_CHECKING:
    from .runner import Hub

STATIC_DIR = Path(__file__).resolve().parent / "static"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_NO_STORE = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))
_PAGE_HEADERS = (
    *_NO_STORE,
    ("Content-Security-Policy",
     "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)

Route = Callable[[HandshakeInfo], HttpReply]
UNAUTHORIZED = HttpReply(401, b"admin token required\n",
                         headers=(*_NO_STORE, ("WWW-Authenticate", REALM)))


def json_reply(status: int, obj: Any) -> HttpReply:
    return HttpReply(status, dumps(obj), content_type="application/json", headers=_NO_STORE)


def _admin(hub: Hub, handler: Callable[[HandshakeInfo], Any]) -> Route:
    """Token first; then ``handler(info)`` -> JSON 200, or AdminError -> its status."""

    def route(info: HandshakeInfo) -> HttpReply:
        if not hub.admin_check.allows(info.headers):
            return UNAUTHORIZED
        try:
            return json_reply(200, handler(info))
        except AdminError as exc:
            return json_reply(exc.status, {"error": str(exc)})

    return route


def make_routes(hub: Hub) -> Dict[str, Route]:
    """``{path: handler}`` for ``WebSocketServer.http_routes``, per the hub's settings."""

    def healthz(info: HandshakeInfo) -> HttpReply:
        return HttpReply(200, b"ok\n", headers=_NO_STORE)

    def readyz(info: HandshakeInfo) -> HttpReply:
        if hub.state == "ready":
            return HttpReply(200, b"ready\n", headers=_NO_STORE)
        return HttpReply(503, f"{hub.state}\n".encode(), headers=_NO_STORE)

    routes: Dict[str, Route] = {"/healthz": healthz, "/readyz": readyz}

    if hub.config.http.metrics:
        def metrics(info: HandshakeInfo) -> HttpReply:
            check = hub.metrics_check
            if check is not None and not check.allows(info.headers):
                return UNAUTHORIZED
            return HttpReply(200, hub.metrics.render(), content_type=hub.metrics.content_type,
                             headers=_NO_STORE)

        routes["/metrics"] = metrics

    admin = hub.admin
    routes.update({
        "/api/admin/connections": _admin(hub, lambda info: admin.connections()),
        "/api/admin/keys": _admin(hub, lambda info: admin.keys()),
        "/api/admin/outboxes": _admin(hub, lambda info: admin.outboxes()),
        "/api/admin/outbox": _admin(hub, lambda info: admin.outbox(
            info.query.get("user", ""), info.query.get("platform", ""))),
    })

    if hub.config.http.dashboard:
        routes["/api/stats"] = _admin(hub, lambda info: hub.snapshot())
        for file in sorted(STATIC_DIR.iterdir()) if STATIC_DIR.is_dir() else []:
            kind = _CONTENT_TYPES.get(file.suffix)
            if kind is None or not file.is_file():
                continue
            path = "/" if file.name == "index.html" else f"/static/{file.name}"
            routes[path] = _static(file.read_bytes(), kind)
    return routes


def _static(body: bytes, content_type: str) -> Route:
    def serve(info: HandshakeInfo) -> HttpReply:
        return HttpReply(200, body, content_type=content_type, headers=_PAGE_HEADERS)

    return serve
