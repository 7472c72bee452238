"""Plain HTTP endpoints served on the hub's WebSocket port.

The transport answers one request per connection and closes it, so the live page polls
``/api/stats`` (no SSE, no keep-alive). Static files are read once at start-up.
``/healthz`` and ``/readyz`` are open; ``/api/*`` needs the admin token, ``/metrics`` too
when ``admin.protect_metrics`` is set. A refusal is a bare 401 that says nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict

from ..transport.base import HandshakeInfo, HttpReply
from .admin_http import NO_STORE, UNAUTHORIZED, Route, admin_routes
from .snapshot import cluster_snapshot, not_ready

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
_NO_STORE = NO_STORE
_PAGE_HEADERS = (
    *_NO_STORE,
    ("Content-Security-Policy",
     "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)



def make_routes(hub: Hub) -> Dict[str, Route]:
    """``{path: handler}`` for ``WebSocketServer.http_routes``, per the hub's settings."""

    def healthz(info: HandshakeInfo) -> HttpReply:
        return HttpReply(200, b"ok\n", headers=_NO_STORE)

    def readyz(info: HandshakeInfo) -> HttpReply:
        why = not_ready(hub.state, cluster_snapshot(hub.server))
        if why:
            return HttpReply(503, f"{why}\n".encode(), headers=_NO_STORE)
        return HttpReply(200, b"ready\n", headers=_NO_STORE)

    routes: Dict[str, Route] = {"/healthz": healthz, "/readyz": readyz}

    if hub.config.http.metrics:
        def metrics(info: HandshakeInfo) -> HttpReply:
            check = hub.metrics_check
            if check is not None and not check.allows(info.headers):
                return UNAUTHORIZED
            return HttpReply(200, hub.metrics.render(), content_type=hub.metrics.content_type,
                             headers=_NO_STORE)

        routes["/metrics"] = metrics

    routes.update(admin_routes(hub))
    if hub.config.http.dashboard:
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
