"""The admin HTTP API on the hub's port (``/api/admin/*`` and ``/api/stats``).

Every call needs the admin token (:mod:`.admin_auth`); without it the answer is a bare
401 that reveals nothing. Reads are ``GET``; actions are ``POST`` with a JSON body. A
``POST`` that carries an ``Origin`` of another host is refused (403): the live page
calls from the hub's own origin, scripts send no ``Origin``.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Union
from urllib.parse import urlsplit

import orjson

from ..backends.cluster_base import admin_everywhere
from ..core.codec import dumps
from ..errors import ClusterError
from ..transport.base import HandshakeInfo, HttpReply
from .admin import RELOAD, AdminError
from .admin_auth import REALM

if TYPE_CHECKING:
    from .runner import Hub

NO_STORE = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))
UNAUTHORIZED = HttpReply(401, b"admin token required\n",
                         headers=(*NO_STORE, ("WWW-Authenticate", REALM)))

Route = Callable[[HandshakeInfo], Union[HttpReply, Awaitable[HttpReply]]]
Handler = Callable[[HandshakeInfo], Any]


def json_reply(status: int, obj: Any) -> HttpReply:
    return HttpReply(status, dumps(obj), content_type="application/json", headers=NO_STORE)


def json_body(info: HandshakeInfo) -> Dict[str, Any]:
    """The request's JSON object body ({} when empty); AdminError 400 otherwise."""
    if not info.body.strip():
        return {}
    try:
        body = orjson.loads(info.body)
    except orjson.JSONDecodeError:
        raise AdminError(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise AdminError(400, "the body must be a JSON object")
    return body


def _text(body: Dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise AdminError(400, f"'{name}' must be a string")
    return value


def _same_origin(info: HandshakeInfo) -> bool:
    origin = info.headers.get("origin")
    if not origin:
        return True
    return urlsplit(origin).netloc.lower() == info.headers.get("host", "").lower()


def guarded(hub: Hub, method: str, handler: Handler) -> Route:
    """Token, then method; ``handler(info)`` -> JSON 200, or AdminError -> its status."""
    allowed = ("GET", "HEAD") if method == "GET" else (method,)

    async def route(info: HandshakeInfo) -> HttpReply:
        if not hub.admin_check.allows(info.headers):
            return UNAUTHORIZED
        if info.method not in allowed:
            return HttpReply(405, f"use {method}\n".encode(),
                             headers=(*NO_STORE, ("Allow", ", ".join(allowed))))
        if method == "POST" and not _same_origin(info):
            return json_reply(403, {"error": "cross-origin admin calls are refused"})
        try:
            result = handler(info)
            if inspect.isawaitable(result):
                result = await result
            return json_reply(200, result)
        except AdminError as exc:
            return json_reply(exc.status, {"error": str(exc)})
        except ClusterError as exc:  # applied here; the other nodes could not be told
            return json_reply(503, {"error": f"done on this node only: the cluster did not "
                                             f"confirm ({type(exc).__name__}: {exc})"})

    return route


def admin_routes(hub: Hub) -> Dict[str, Route]:
    admin = hub.admin

    async def disconnect(info: HandshakeInfo) -> Any:
        body = json_body(info)
        closed = await admin.disconnect(_text(body, "uuid") or None,
                                        _text(body, "user") or None)
        return {"closed": closed}

    async def revoke(info: HandshakeInfo) -> Any:
        return await admin.revoke(_text(json_body(info), "key"))

    async def drain(info: HandshakeInfo) -> Any:
        body = json_body(info)
        user, platform = _text(body, "user"), _text(body, "platform")
        return {"user": user, "platform": platform,
                "dropped": await admin.drain(user, platform)}

    async def reload(info: HandshakeInfo) -> Any:
        result = hub.reload()
        if not result["ok"]:
            raise AdminError(422, "; ".join(result["errors"]))
        await admin_everywhere(hub.server.cluster, RELOAD, {})  # every node re-reads its own
        return result

    routes = {
        "/api/admin/connections": guarded(hub, "GET", lambda info: admin.connections()),
        "/api/admin/keys": guarded(hub, "GET", lambda info: admin.keys()),
        "/api/admin/outboxes": guarded(hub, "GET", lambda info: admin.outboxes()),
        "/api/admin/outbox": guarded(hub, "GET", lambda info: admin.outbox(
            info.query.get("user", ""), info.query.get("platform", ""))),
        "/api/admin/disconnect": guarded(hub, "POST", disconnect),
        "/api/admin/revoke": guarded(hub, "POST", revoke),
        "/api/admin/outbox/drain": guarded(hub, "POST", drain),
        "/api/admin/reload": guarded(hub, "POST", reload),
    }
    if hub.config.http.dashboard:
        routes["/api/stats"] = guarded(hub, "GET", lambda info: hub.snapshot())
    return routes
