"""ASGI shell: serve one WebSocket scope through a :class:`ServerApp`.

The hub is the same object the asyncio transport drives; this module only translates ASGI
messages (``websocket.connect`` / ``.receive`` / ``.disconnect`` in, ``websocket.accept`` /
``.send`` / ``.close`` out) into the :mod:`.base` contract. It imports no framework: any
ASGI server (uvicorn, hypercorn) or framework route (Starlette / FastAPI) can call it
(Starlette is imported only by :func:`add_websocket_route`, which mounts such a route).

Authentication is answered before ``websocket.accept``: with the ASGI
``websocket.http.response`` extension the refusal is a real HTTP response (401/403 with a
body); without it the handshake is closed with ``websocket.close`` code 1008, which ASGI
servers turn into HTTP 403.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Awaitable, Callable, Deque, Dict, List, Optional, Set, Tuple
from urllib.parse import parse_qsl

from ..core.defaults import DEFAULT_LIMITS
from ..core.identity import lower_headers
from .base import Accept, HandshakeInfo, HttpReply, ServerApp
from .frames import OP_TEXT, PreparedFrame
from .http11 import MAX_REQUEST_BODY, response_headers
from .protocol import OPEN, SessionState

logger = logging.getLogger(__name__)

Message = Dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

class ASGIServerConnection:
    """The :class:`ServerConnection` contract over an ASGI ``send`` callable.

    ``send_text`` is synchronous (the hub never awaits a write): frames go to a queue that
    one writer task drains in order. ``is_writable`` turns False above ``high_water``
    queued bytes, and the app's ``connection_writable`` is called when the queue drains.
    """

    def __init__(
        self, app: ServerApp, send: Send, client_ip: str, context: Any, *,
        high_water: int = DEFAULT_LIMITS.send_buffer_high,
        max_queue: int = DEFAULT_LIMITS.max_write_buffer,
    ) -> None:
        self.app = app
        self.context = context
        self._client_ip = client_ip
        self._send = send
        self._queue: Deque[Tuple[Message, int]] = deque()  # (message, bytes counted)
        self._queued = 0
        self._high = high_water
        self._max = max_queue
        self._paused = False
        self._wake = asyncio.Event()
        self._session = SessionState(OPEN)  # the ASGI server frames; we keep the state
        self.done = asyncio.Event()  # set once our close frame went out or sending failed
        self._writer = asyncio.ensure_future(self._write_loop())

    # -- ServerConnection -----------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._session.state is OPEN

    @property
    def closed_by_peer(self) -> bool:
        """The client's close came first (its close code is the one reported). Not for a
        1009: the ASGI server reports its own size limit (uvicorn's ws_max_size, on what
        the client sends) as a disconnect with 1009, indistinguishable from the client's."""
        session = self._session
        return session.closed_by_peer and session.close_code != 1009

    @property
    def is_writable(self) -> bool:
        return self._session.state is OPEN and not self._paused

    @property
    def close_code(self) -> int:
        return self._session.close_code

    @property
    def close_reason(self) -> str:
        return self._session.close_reason

    @property
    def client_ip(self) -> str:
        return self._client_ip

    def send_text(self, payload: bytes) -> bool:
        return self._queue_message({"type": "websocket.send", "text": payload.decode("utf-8")},
                                   len(payload))

    def send_binary(self, payload: bytes) -> bool:
        return self._queue_message({"type": "websocket.send", "bytes": payload}, len(payload))

    def _queue_message(self, message: Message, size: int) -> bool:
        if self._session.state is not OPEN:
            return False
        self._queue.append((message, size))
        self._queued += size
        self._wake.set()
        if self._queued > self._high:
            self._paused = True
            if self._queued > self._max:
                logger.warning("closing slow consumer %s: send queue over limit",
                               self._client_ip)
                self.close(1008, "slow consumer: write buffer limit exceeded")
        return True

    def send_prepared(self, frame: PreparedFrame) -> bool:
        if frame.opcode == OP_TEXT:
            return self.send_text(frame.payload)
        return self.send_binary(frame.payload)

    def send_raw(self, frame: bytes, body: bytes = b"") -> bool:
        return self.send_prepared(PreparedFrame.from_raw(frame, body))

    def close(self, code: int = 1000, reason: str = "") -> None:
        if not self._session.start_close(code, reason):
            return
        self._queue.append(({"type": "websocket.close", "code": code, "reason": reason}, 0))
        self._wake.set()

    def write_buffer_size(self) -> int:
        return self._queued

    # -- internals ------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        queue = self._queue
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while queue:
                    message, size = queue.popleft()
                    await self._send(message)
                    if message["type"] == "websocket.close":
                        return
                    self._queued -= size  # the size counted in: text is str, not bytes
                    if self._paused and self._queued <= self._high // 4:
                        self._paused = False
                        writable = getattr(self.app, "connection_writable", None)
                        if writable is not None and self._session.state is OPEN:
                            writable(self)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the ASGI server lost the client
            logger.debug("send to %s failed: %s", self._client_ip, type(exc).__name__)
        finally:
            self._session.connection_lost()
            self.done.set()

    def close_received(self, code: int, reason: str) -> None:
        self._session.close_received(code, reason)

    def mark_closed(self) -> None:
        self._session.connection_lost()
        self._queue.clear()
        self._wake.set()

    async def finish(self) -> None:
        if not self._writer.done():
            self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)


def handshake_info(scope: Dict[str, Any]) -> HandshakeInfo:
    """What the app sees of an ASGI websocket scope."""
    raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ())]
    query: Dict[str, str] = {}
    for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                keep_blank_values=True):
        query.setdefault(key, value)
    client = scope.get("client")
    return HandshakeInfo(
        path=scope.get("path", "/"), query=query, headers=lower_headers(raw), raw_headers=raw,
        client_ip=str(client[0]) if client else "unknown", is_upgrade=True,
        peer_cert=None,  # TLS terminates in the ASGI server; it does not pass the cert dict
    )


def _encoded_headers(reply: HttpReply) -> List[Tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in
            response_headers(reply.status, len(reply.body), reply.content_type, reply.headers)]


async def _read_body(receive: Receive, limit: int) -> Optional[bytes]:
    """The request body, None when the client left; OverflowError above ``limit``."""
    parts: List[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"") or b""
        size += len(chunk)
        if size > limit:
            raise OverflowError(size)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def serve_http(
    app: ServerApp, scope: Dict[str, Any], receive: Receive, send: Send, *,
    max_body: int = MAX_REQUEST_BODY,
) -> None:
    """Answer one plain HTTP request through ``app.handshake`` (``is_upgrade`` False).

    The body is read first (bounded: 413); the app may then take its time (long polling),
    and is cancelled when the client disconnects. HEAD gets the headers only.
    """
    info = handshake_info(scope)
    info.is_upgrade = False
    info.method = str(scope.get("method", "GET")).upper()
    try:
        body = await _read_body(receive, max_body)
    except OverflowError:
        reply = HttpReply(413, f"request body over {max_body} bytes\n".encode())
        await _send_reply(send, reply, head_only=info.method == "HEAD")
        return
    if body is None:
        return
    info.body = body
    deciding = asyncio.ensure_future(app.handshake(info))
    gone = asyncio.ensure_future(_until_disconnect(receive))
    try:
        await asyncio.wait({deciding, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not deciding.done():
            deciding.cancel()
        await asyncio.gather(gone, deciding, return_exceptions=True)
    if deciding.cancelled():
        return  # the client left before the answer
    decision: Any
    try:
        decision = deciding.result()
    except Exception:
        logger.exception("HTTP route failed")
        decision = HttpReply(500, b"internal error\n")
    if not isinstance(decision, HttpReply):
        decision = HttpReply(426, b"this endpoint needs a WebSocket upgrade\n",
                             headers=(("Upgrade", "websocket"),))
    await _send_reply(send, decision, head_only=info.method == "HEAD")


async def _send_reply(send: Send, reply: HttpReply, head_only: bool = False) -> None:
    await send({"type": "http.response.start", "status": reply.status,
                "headers": _encoded_headers(reply)})
    await send({"type": "http.response.body", "body": b"" if head_only else reply.body})


async def refuse(scope: Dict[str, Any], send: Send, reply: HttpReply) -> None:
    """Answer the handshake with an HTTP response when the server supports it."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        # No Content-Length of ours here: ASGI servers frame a denial response themselves
        # (some always add the header, and a second copy breaks the client's parser).
        headers = [(k, v) for k, v in _encoded_headers(reply) if k != b"content-length"]
        await send({"type": "websocket.http.response.start", "status": reply.status,
                    "headers": headers})
        await send({"type": "websocket.http.response.body", "body": reply.body})
    else:
        reason = reply.body.decode("utf-8", "replace").strip()[:120]
        await send({"type": "websocket.close", "code": 1008, "reason": reason})


async def serve_websocket(
    app: ServerApp, scope: Dict[str, Any], receive: Receive, send: Send, *,
    max_message_size: int = DEFAULT_LIMITS.max_message_size,
    high_water: int = DEFAULT_LIMITS.send_buffer_high,
    max_queue: int = DEFAULT_LIMITS.max_write_buffer,
    live: Optional[Set[ASGIServerConnection]] = None,
) -> None:
    """Run one ASGI websocket connection through ``app`` until it closes."""
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    info = handshake_info(scope)
    try:
        decision = await app.handshake(info)
    except Exception:
        logger.exception("handshake callback failed")
        decision = HttpReply(500, b"internal error\n")
    if not isinstance(decision, Accept):
        await refuse(scope, send, decision)
        return
    await send({"type": "websocket.accept"})
    conn = ASGIServerConnection(app, send, info.client_ip, decision.context,
                                high_water=high_water, max_queue=max_queue)
    if live is not None:
        live.add(conn)
    code, reason = 1006, ""
    try:
        app.connection_opened(conn)
        code, reason = await _read_loop(app, conn, receive, max_message_size)
    finally:
        conn.mark_closed()
        await conn.finish()
        if live is not None:
            live.discard(conn)
        try:
            app.connection_closed(conn, code, reason)
        except Exception:
            logger.exception("connection_closed callback failed")


async def _read_loop(
    app: ServerApp, conn: ASGIServerConnection, receive: Receive, max_size: int
) -> Tuple[int, str]:
    """Feed frames to the app; returns the close code and reason."""
    closed_by_us = asyncio.ensure_future(conn.done.wait())
    try:
        while True:
            incoming = asyncio.ensure_future(receive())
            await asyncio.wait({incoming, closed_by_us}, return_when=asyncio.FIRST_COMPLETED)
            if not incoming.done():
                incoming.cancel()
                await asyncio.gather(incoming, return_exceptions=True)
                return conn.close_code, conn.close_reason
            message = incoming.result()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                data = text.encode("utf-8") if text is not None else message.get("bytes") or b""
                if len(data) > max_size:  # the ASGI server framed it: only the size is ours
                    conn.close(1009, f"message of {len(data)} bytes exceeds limit of "
                                     f"{max_size} bytes")
                elif not conn.is_open:
                    continue
                elif text is not None:
                    app.text_received(conn, data)
                else:
                    app.binary_received(conn, data)
            elif kind == "websocket.disconnect":
                conn.close_received(int(message.get("code", 1005)),
                                    str(message.get("reason") or ""))
                return conn.close_code, conn.close_reason
    finally:
        closed_by_us.cancel()


async def close_connections(
    live: Set[ASGIServerConnection], code: int, reason: str, timeout: float
) -> None:
    """Close every connection of a mount (shutdown) and wait, at most ``timeout`` seconds,
    until their ``serve_websocket`` calls have ended."""
    for conn in list(live):
        conn.close(code, reason)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while live and loop.time() < deadline:
        await asyncio.sleep(0.01)


def add_websocket_route(app: Any, path: str, endpoint: Any) -> None:
    """Add a WebSocket route to a Starlette/FastAPI app (Starlette 1.x dropped
    ``add_websocket_route``; appending a ``WebSocketRoute`` works on every version).
    ``endpoint`` is an ASGI callable object, so Starlette passes it the raw scope."""
    router = getattr(app, "router", None)
    if router is not None and isinstance(getattr(router, "routes", None), list):
        from starlette.routing import WebSocketRoute

        router.routes.append(WebSocketRoute(path, endpoint))
    elif hasattr(app, "add_websocket_route"):
        app.add_websocket_route(path, endpoint)
    else:
        raise TypeError(f"cannot mount a WebSocket route on {type(app).__name__}: "
                        "pass a Starlette or FastAPI application")
