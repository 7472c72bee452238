"""The Socket.IO dialect of the hub: 0.7.x clients on the same port and path as 0.6.x.

:class:`SocketIOEndpoint` owns what differs on the wire (wire-0.7.md §6, §8.1): the
Engine.IO handshake answer, long-polling as plain HTTP requests answered by the app,
the WebSocket upgrade (or a direct WebSocket session), Engine.IO ping/pong, and the
Socket.IO CONNECT. Everything else is the hub's: the first request's headers go
through the hub's own auth (``authorize``), and an accepted client becomes a
:class:`~.socket.SioSocket` that the hub drives with its usual ``connection_opened`` /
``text_received`` / ``connection_closed`` calls (same dispatch, delivery, routing and
limits as a 0.6 peer).

``sio/mux.py`` puts the endpoint between the transport and the hub.

Refusals never reach a handler: a refused client gets its Engine.IO session, then
``44{"message":...}`` for its CONNECT, and nothing it sends is read.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any, Dict, List, Optional, Protocol, Set, Tuple

from ..core.defaults import DEFAULT_LIMITS, MAX_MESSAGE_SIZE
from ..transport.base import Accept, Decision, HandshakeInfo, HttpReply, ServerConnection
from .packets import EioType, encode_eio, join_payload, message_body, open_packet
from .session import Closed, ConnectRequest, Event, Message, ProbeAnswer, ServerSession, Upgraded
from .socket import Link, SioSocket, client_ws_limit

logger = logging.getLogger(__name__)

__all__ = ["HubApp", "SocketIOEndpoint"]

_TEXT = "text/plain; charset=UTF-8"
MAX_PENDING_SESSIONS = 10_000  # opened, CONNECT not answered yet (each lives connect_timeout)
MAX_PENDING_PER_IP = 100  # the same, from one client address
_NOOP = encode_eio(EioType.NOOP)
_BAD_VERSION = b"The client is using an unsupported version of the Socket.IO or Engine.IO protocols"


class HubApp(Protocol):
    """What the endpoint needs of the hub (``WebSocketServer``). An ``auth_epoch`` int,
    when the app has one, says when decisions already taken may be stale (keys revoked)."""

    async def authorize(self, info: HandshakeInfo, recheck: bool = False) -> Decision: ...
    def connection_opened(self, conn: Any) -> None: ...
    def text_received(self, conn: Any, payload: bytes) -> None: ...
    def connection_writable(self, conn: Any) -> None: ...
    def connection_closed(self, conn: Any, code: int, reason: str) -> None: ...


def _bad_request(message: str) -> HttpReply:
    return HttpReply(400, message.encode(), content_type=_TEXT)


class SocketIOEndpoint:
    """Engine.IO v4 sessions of one hub, keyed by Engine.IO sid."""

    def __init__(
        self, app: HubApp, path: str, *, ping_interval: float = 25.0,
        ping_timeout: float = 20.0, max_payload: int = MAX_MESSAGE_SIZE,
        poll_buffer_high: int = DEFAULT_LIMITS.send_buffer_high, connect_timeout: float = 10.0,
        max_queue: int = DEFAULT_LIMITS.max_write_buffer,
    ) -> None:
        self.app = app
        self.paths: Set[str] = set()
        self.serve_path(path)
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_payload = max_payload
        self.poll_buffer_high = poll_buffer_high
        self.max_queue = max_queue  # unsent bytes of a session before it is dropped (1008)
        self.connect_timeout = connect_timeout
        self.max_pending = MAX_PENDING_SESSIONS  # for accepted and refused ones apart
        self.max_pending_per_ip = MAX_PENDING_PER_IP
        self.sessions: Dict[str, SioSocket] = {}
        self.unknown_sessions = 0  # requests naming a session not on this node (logged once)
        self._sweeper: Optional[asyncio.Task[None]] = None
        self._born: Dict[str, float] = {}  # sid -> created (CONNECT must follow in time)
        self._accepted: Set[str] = set()  # pending sids the hub accepted at the handshake
        self._per_ip: Dict[str, int] = {}  # client IP -> pending sessions
        self._connecting: Set[asyncio.Future[None]] = set()  # CONNECTs being decided

    def serve_path(self, path: str) -> None:
        """Answer Engine.IO requests on ``path`` too (an ASGI mount at another path)."""
        base = "/" + path.strip("/")
        self.paths.update((base + "/", base))  # 0.7.5 serves "/ws/"; "/ws" is accepted too

    # -- lifecycle ----------------------------------------------------------------------

    def stop(self) -> None:
        """Drop every session (no ``41``: 0.7.5 clients then reconnect) and the sweep."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for sock in list(self.sessions.values()):
            self.drop(sock, 1001, "server shutting down")

    async def _sweep(self) -> None:
        """One heartbeat pass over all sessions (not one timer each), as the transport does."""
        period = max(0.05, min(self.ping_interval, self.ping_timeout) / 4)
        while self.sessions:
            await asyncio.sleep(period)
            now = time.monotonic()
            for sid, sock in list(self.sessions.items()):
                session = sock.session
                if not session.heartbeat():
                    logger.info("Socket.IO session %s: no pong within %.0f s", sid,
                                self.ping_timeout)
                    self.drop(sock, 1011, "keepalive ping timeout")
                elif (not session.namespace_connected
                      and now - self._born.get(sid, now) > self.connect_timeout):
                    self.drop(sock, 1001, "no Socket.IO CONNECT in time")
                else:
                    sock.flush()
        self._sweeper = None

    # -- HTTP requests (handshake, polling, upgrade) ---------------------------------------

    def owns(self, info: HandshakeInfo) -> bool:
        return "EIO" in info.query

    async def handshake(self, info: HandshakeInfo) -> Decision:
        if info.query.get("EIO") != "4":
            return _bad_request(_BAD_VERSION.decode())
        if info.path not in self.paths:
            return HttpReply(404, b"not found\n")
        method = getattr(info, "method", "GET").upper()
        if method == "OPTIONS":
            return self._cors(info, HttpReply(204))
        transport = info.query.get("transport")
        sid = info.query.get("sid")
        if transport == "websocket" and info.is_upgrade:
            if sid is None:
                sock = await self._new(info, websocket=True)
                return sock if isinstance(sock, HttpReply) else Accept(Link(sock, direct=True))
            sock_or_error = self._find(sid)
            if isinstance(sock_or_error, HttpReply):
                return sock_or_error
            if sock_or_error.probe is not None or sock_or_error.session.upgraded:
                return _bad_request("session already upgraded")
            return Accept(Link(sock_or_error, direct=False))
        if transport != "polling" or info.is_upgrade:
            return _bad_request("Invalid transport")
        if sid is None:
            if method != "GET":
                return _bad_request("Bad request")
            sock = await self._new(info, websocket=False)
            if isinstance(sock, HttpReply):
                return sock
            return self._cors(info, HttpReply(200, sock.session.take()[0], content_type=_TEXT))
        sock_or_error = self._find(sid)
        if isinstance(sock_or_error, HttpReply):
            return sock_or_error
        if method == "POST":
            return self._cors(info, self._post(sock_or_error, getattr(info, "body", b"")))
        if method == "GET":
            return self._cors(info, await self._poll(sock_or_error))
        return HttpReply(405, b"method not allowed\n")

    async def _new(self, info: HandshakeInfo, websocket: bool) -> Any:
        """A new session (or a 503); the hub decides about the client now, from these
        headers, and again when its CONNECT comes."""
        epoch = getattr(self.app, "auth_epoch", 0)  # before the decision is taken
        decision = await self.app.authorize(info)
        if self._pending_full(info.client_ip, isinstance(decision, Accept)):
            return HttpReply(503, b"too many Engine.IO sessions being opened\n")
        sid = secrets.token_urlsafe(15)
        session = ServerSession(sid, ping_interval=self.ping_interval,
                                ping_timeout=self.ping_timeout, clock=time.monotonic,
                                websocket=websocket)
        if not websocket:
            session.send(open_packet(sid, ["websocket"], self.ping_interval,
                                     self.ping_timeout, self.max_payload))
        sock = SioSocket(self, session, decision, info.client_ip, info)
        sock.auth_epoch = epoch
        sock.ws_limit = client_ws_limit(info.headers.get("user-agent", ""))
        self.sessions[sid] = sock
        self._born[sid] = time.monotonic()
        self._per_ip[info.client_ip] = self._per_ip.get(info.client_ip, 0) + 1
        if isinstance(decision, Accept):
            self._accepted.add(sid)
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())
        return sock

    def _pending_full(self, client_ip: str, accepted: bool) -> bool:
        """Sessions that have not had their CONNECT answered are bounded (a handshake flood):
        per client address, and overall with the refused ones counted apart, so that
        key-less handshakes never lock valid clients out."""
        if self._per_ip.get(client_ip, 0) >= self.max_pending_per_ip:
            return True
        accepted_pending = len(self._accepted)
        pending = accepted_pending if accepted else len(self._born) - accepted_pending
        return pending >= self.max_pending

    def _settle(self, sock: SioSocket) -> None:
        """The session stops counting as pending (CONNECT accepted, or session over)."""
        sid = sock.session.sid
        if self._born.pop(sid, None) is None:
            return
        self._accepted.discard(sid)
        left = self._per_ip.get(sock.client_ip, 1) - 1
        if left > 0:
            self._per_ip[sock.client_ip] = left
        else:
            self._per_ip.pop(sock.client_ip, None)

    def _find(self, sid: str) -> Any:
        sock = self.sessions.get(sid)
        if sock is None:
            self.unknown_sessions += 1
            log = logger.warning if self.unknown_sessions == 1 else logger.debug
            log("Socket.IO request for a session this node does not have (normal once after "
                "a restart; if it repeats, the client's requests reach several hub nodes: "
                "nodes sharing one port, or a load balancer without sticky sessions. A 0.7.x "
                "client needs every request of its session on one node: docs/cluster.md)")
            return _bad_request(f"Invalid session {sid[:40]}")
        return sock

    def _post(self, sock: SioSocket, body: bytes) -> HttpReply:
        if len(body) > self.max_payload:
            self.drop(sock, 1009, "polling body too big")
            return HttpReply(413, b"payload too large\n")
        if sock.backlog is not None:
            self._hold(sock, None, body)
        else:
            self._events(sock, sock.session.receive_payload(body), None)
        return HttpReply(200, b"ok", content_type=_TEXT)

    async def _poll(self, sock: SioSocket) -> HttpReply:
        """A long-polling GET: answered with what is queued, held until there is some."""
        if sock.poll is not None:
            self.drop(sock, 1002, "two polling GETs at once")
            return _bad_request("overlapping polling requests")
        session = sock.session
        if not session.queue and not session.closed and not session.upgraded:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            sock.poll = fut
            try:
                await asyncio.wait_for(fut, self.ping_interval + self.ping_timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                sock.poll = None
        if session.upgraded:
            return HttpReply(200, _NOOP, content_type=_TEXT)
        packets = session.take()
        if session.namespace_refused:  # its 44 goes out now: the session is over
            self._end(sock, 1000, "refused")
        if packets:
            if sock.opened and session.queued_bytes < self.poll_buffer_high:
                self.app.connection_writable(sock)
            return HttpReply(200, join_payload(packets), content_type=_TEXT)
        if session.closed:
            return _bad_request("session closed")
        return HttpReply(200, _NOOP, content_type=_TEXT)

    def _cors(self, info: HandshakeInfo, reply: HttpReply) -> HttpReply:
        origin = info.headers.get("origin")
        if not origin:
            return reply
        extra: List[Tuple[str, str]] = [("Access-Control-Allow-Origin", origin),
                                        ("Access-Control-Allow-Credentials", "true")]
        if reply.status == 204:
            extra.append(("Access-Control-Allow-Methods", "OPTIONS, GET, POST"))
            wanted = info.headers.get("access-control-request-headers")
            if wanted:
                extra.append(("Access-Control-Allow-Headers", wanted))
        return HttpReply(reply.status, reply.body, reply.content_type,
                         tuple(reply.headers) + tuple(extra))

    # -- WebSockets of the transport (context: Link) ----------------------------------------

    def ws_opened(self, conn: ServerConnection) -> None:
        link: Link = conn.context
        sock = link.sock
        if sock.ended:
            conn.close(1000, "session closed")
        elif link.direct:
            sock.ws = conn
            conn.send_text(open_packet(sock.session.sid, [], self.ping_interval,
                                       self.ping_timeout, self.max_payload))
        else:
            sock.probe = conn

    def ws_text(self, conn: ServerConnection, payload: bytes) -> None:
        sock: SioSocket = conn.context.sock
        if conn is sock.ws and sock.opened:
            body = message_body(payload)
            if body is not None:  # the hot path: no event objects, straight to the hub
                self.app.text_received(sock, body)
                return
        if sock.backlog is not None:
            self._hold(sock, conn, payload)
            return
        self._events(sock, sock.session.receive(payload, websocket=True), conn)

    def ws_closed(self, conn: ServerConnection, code: int, reason: str) -> None:
        sock: SioSocket = conn.context.sock
        if conn is sock.probe:
            sock.probe = None  # a failed upgrade: polling carries on
        elif conn is sock.ws:
            self._end(sock, code, reason)

    def ws_writable(self, conn: ServerConnection) -> None:
        sock: SioSocket = conn.context.sock
        if conn is sock.ws and sock.opened:
            self.app.connection_writable(sock)

    def ws_binary(self, conn: ServerConnection) -> None:
        conn.close(1003, "binary Engine.IO packets are not supported")

    # -- session events ---------------------------------------------------------------------

    def _events(self, sock: SioSocket, events: List[Event],
                conn: Optional[ServerConnection]) -> None:
        app = self.app
        for event in events:
            if isinstance(event, Message):
                if sock.opened:
                    app.text_received(sock, event.body)
            elif isinstance(event, ConnectRequest):
                if sock.backlog is None:
                    sock.backlog = []  # what comes next waits for the answer
                    task = asyncio.ensure_future(self._connect(sock))
                    self._connecting.add(task)
                    task.add_done_callback(self._connecting.discard)
            elif isinstance(event, ProbeAnswer):
                if conn is not None:
                    conn.send_text(event.data)
            elif isinstance(event, Upgraded):
                sock.ws, sock.probe = conn, None
                poll = sock.poll
                if poll is not None and not poll.done():
                    poll.set_result(None)  # answered with a noop
            elif isinstance(event, Closed):
                if event.reason.startswith("protocol error"):
                    logger.info("Socket.IO session %s from %s closed: %s", sock.session.sid,
                                sock.client_ip, event.reason)
                self._end(sock, 1000, event.reason)
                if conn is not None:
                    conn.close(1000, "")
                return
        sock.flush()

    def _hold(self, sock: SioSocket, conn: Optional[ServerConnection], data: bytes) -> None:
        """Keep a packet (or POST body) that came while the CONNECT is decided."""
        assert sock.backlog is not None
        sock.backlog.append((conn, data))
        sock.backlog_bytes += len(data)
        if sock.backlog_bytes > self.max_payload:
            self.drop(sock, 1009, "too much data before the CONNECT was answered")

    async def _connect(self, sock: SioSocket) -> None:
        """Answer the CONNECT with the decision taken at the handshake: the credentials
        are the first request's headers (a CONNECT's auth object carries none the 0.7
        wire uses, wire-0.7.md), so ``on_auth`` runs once per connection. Only when the
        hub said its decisions may be stale since (``invalidate_auth``: a key revoked,
        keys reloaded, the hub stopping) is an accepted client asked about again."""
        decision, info = sock.decision, sock.info
        sock.decision = sock.info = None  # the Peer lives on as the socket's context
        stale = sock.auth_epoch != getattr(self.app, "auth_epoch", 0)
        if isinstance(decision, Accept) and info is not None and stale:
            try:
                decision = await self.app.authorize(info, recheck=True)
            except Exception:
                logger.exception("authorize failed for a Socket.IO CONNECT")
                decision = HttpReply(500, b"internal error")
        backlog, sock.backlog, sock.backlog_bytes = sock.backlog or [], None, 0
        if sock.ended:
            return
        self._answer_connect(sock, decision)
        for conn, data in backlog:  # in the order they came
            if sock.ended:
                break
            if conn is None:
                self._events(sock, sock.session.receive_payload(data), None)
            else:
                self.ws_text(conn, data)

    def _answer_connect(self, sock: SioSocket, decision: Optional[Decision]) -> None:
        session = sock.session
        if not isinstance(decision, Accept):
            reason = (decision.body.decode("utf-8", "replace").strip()
                      if isinstance(decision, HttpReply) else "refused")
            session.refuse(reason or "refused")
            if session.upgraded and sock.ws is not None:
                sock.flush()
                self.drop(sock, 1000, "refused")  # the 44 went out: the session is over
            else:
                sock.flush()  # the 44 waits for the next polling GET
            return
        self._settle(sock)
        session.accept(secrets.token_urlsafe(15))
        sock.context = decision.context
        sock.opened = True
        sock.flush()  # the CONNECT answer goes out before anything the hub sends
        self.app.connection_opened(sock)

    def held_back(self, sock: SioSocket, size: int) -> None:
        """A message too big for the client's WebSocket: kept in the outbox, not sent."""
        sock.oversize += 1
        log = logger.warning if sock.oversize == 1 else logger.debug
        log("Socket.IO session %s: a %d-byte message exceeds its client's %d-byte WebSocket "
            "limit (python-engineio/aiohttp); not sent, it stays in the outbox",
            sock.session.sid, size, sock.ws_limit)

    def drop(self, sock: SioSocket, code: int, reason: str) -> None:
        """End the session: close its WebSocket (the client may come back), else let a held
        poll fail; the hub hears connection_closed once."""
        ws = sock.ws or sock.probe
        self._end(sock, code, reason)
        if ws is not None:
            ws.close(1000 if code in (1002, 1009) else code, reason)

    def _end(self, sock: SioSocket, code: int, reason: str) -> None:
        if sock.ended:
            return
        sock.ended = True
        sock.close_code, sock.close_reason = code, reason
        session = sock.session
        queued = session.queue
        session.close()
        session.queue = queued  # a final 41 may still go out in a held poll
        self.sessions.pop(session.sid, None)
        self._settle(sock)
        poll = sock.poll
        if poll is not None and not poll.done():
            poll.set_result(None)
        if sock.opened:
            try:
                self.app.connection_closed(sock, code, reason)
            except Exception:
                logger.exception("connection_closed callback failed")
