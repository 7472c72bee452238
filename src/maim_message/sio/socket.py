"""A 0.7.x (Socket.IO) client as the hub sees it: a ``ServerConnection`` like any other.

:class:`SioSocket` wraps one Engine.IO session and whatever carries it right now (HTTP
long-polling, then a WebSocket of the shared transport). The hub writes envelopes with
``send_text`` exactly as for a 0.6 peer; the socket frames them as ``42["message",...]``
and writes them to the WebSocket, or keeps them for the next polling GET.

Closing: a close that means "come back later" (server stop, keepalive timeout) only drops
the transport, because 0.7.5 clients never reconnect after a Socket.IO ``41`` or an
Engine.IO ``1`` (wire-0.7.md §7 item 7); a close that means "do not come back" (code 1000:
an admin disconnect, a legacy platform taken over by a newer connection; 4000: replaced by a
newer connection with the same uuid) sends ``41`` first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from ..transport.base import Decision, HandshakeInfo, ServerConnection
from ..transport.frames import PreparedFrame
from .packets import message_frame
from .session import ServerSession

if TYPE_CHECKING:  # pragma: no cover
    from .server import SocketIOEndpoint

logger = logging.getLogger(__name__)

__all__ = ["DROP_CODES", "Link", "SioSocket", "ws_payload"]

# close codes after which a client should reconnect: drop the transport, send no 41
DROP_CODES = frozenset({1001, 1006, 1011, 1012, 1013})
_FINAL_CODES = frozenset({1000, 4000})  # ended on purpose: 41, do not come back


# python-engineio's client (aiohttp ws_connect, no options from maim 0.7.5) closes its
# WebSocket on any message over 4 MiB, reconnects, and would get the same message resent
# forever (wire-0.7.md §1.4, §7 item 8): such messages are held back and logged instead.
AIOHTTP_CLIENT_MAX = 4 * 1024 * 1024


def client_ws_limit(user_agent: str) -> Optional[int]:
    """The largest WebSocket message a 0.7 client can take, known from its User-Agent."""
    return AIOHTTP_CLIENT_MAX if "aiohttp" in user_agent else None


def ws_payload(frame: bytes, body: bytes) -> bytes:
    """The payload of a server text frame built by the delivery code (header [+ body])."""
    if body:
        return body
    n = frame[1] & 0x7F
    return frame[2 if n < 126 else 4 if n == 126 else 10:]


class Link:
    """Context of a transport WebSocket that carries (or probes for) a Socket.IO session."""

    __slots__ = ("direct", "sock")

    def __init__(self, sock: SioSocket, direct: bool) -> None:
        self.sock = sock
        self.direct = direct  # opened without a polling session (send OPEN first)


class SioSocket:
    """One Engine.IO session, seen by the hub as a connection (``context`` is its Peer)."""

    def __init__(self, endpoint: SocketIOEndpoint, session: ServerSession, decision: Decision,
                 client_ip: str, info: Optional[HandshakeInfo] = None) -> None:
        self.endpoint = endpoint
        self.session = session
        self.decision: Optional[Decision] = decision  # the hub's answer to the first request
        self.info = info  # the first request: the hub may be asked again at the CONNECT
        self.auth_epoch = 0  # the app's auth_epoch when it was decided (set by the endpoint)
        self.client_ip = client_ip
        # packets that came while the CONNECT is decided, in order (conn None: a POST body)
        self.backlog: Optional[List[Tuple[Optional[ServerConnection], bytes]]] = None
        self.backlog_bytes = 0
        self.context: Any = None
        self.ws: Optional[ServerConnection] = None  # the WebSocket carrying the session
        self.probe: Optional[ServerConnection] = None  # a WebSocket being upgraded to
        self.poll: Optional[asyncio.Future[None]] = None  # a held long-polling GET
        self.opened = False  # the hub's connection_opened ran (connection_closed is owed)
        self.ended = False
        self.ws_limit: Optional[int] = None  # largest message its WebSocket client takes
        self.oversize = 0  # messages held back because of ws_limit
        self.over_limit = False  # queued bytes passed endpoint.max_queue: being dropped
        self.close_code = 1006
        self.close_reason = ""

    # -- ServerConnection ------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.session.namespace_connected and not self.session.closed

    @property
    def is_writable(self) -> bool:
        if not self.is_open:
            return False
        ws = self.ws
        if ws is not None:
            return ws.is_writable
        return self.session.queued_bytes < self.endpoint.poll_buffer_high

    def send_text(self, payload: bytes) -> bool:
        session = self.session
        if not session.namespace_connected or session.closed:
            return False
        ws = self.ws
        if ws is not None:
            limit = self.ws_limit
            if limit is not None and len(payload) + 14 > limit:
                self.endpoint.held_back(self, len(payload))
                return False
            if not session.queue:  # the hot path: straight onto the socket
                return ws.send_text(message_frame(payload))
        session.send_message(payload)
        self.flush()
        return True

    def send_prepared(self, frame: PreparedFrame) -> bool:
        return self.send_text(frame.payload)

    def send_raw(self, frame: bytes, body: bytes = b"") -> bool:
        return self.send_text(ws_payload(frame, body))

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.ended:
            return
        self.close_code, self.close_reason = code, reason
        if code in _FINAL_CODES:
            self.session.disconnect()
            self.flush()
        self.endpoint.drop(self, code, reason)

    def write_buffer_size(self) -> int:
        ws = self.ws
        return self.session.queued_bytes + (ws.write_buffer_size() if ws is not None else 0)

    # -- the shell's side -------------------------------------------------------------------

    def flush(self) -> None:
        """Write what the session queued: onto the WebSocket, else wake the held poll."""
        session = self.session
        if not session.queue:
            return
        ws = self.ws
        if ws is not None and session.upgraded:
            for packet in session.take():
                ws.send_text(packet)
            return
        if session.queued_bytes > self.endpoint.max_queue:  # the client does not poll
            if not self.over_limit:  # dropped from the loop, not inside the hub's send
                self.over_limit = True
                logger.warning("closing slow Socket.IO consumer %s: send queue over limit",
                               self.client_ip)
                asyncio.get_running_loop().call_soon(
                    self.endpoint.drop, self, 1008, "slow consumer: write buffer limit exceeded")
            return
        poll = self.poll
        if poll is not None and not poll.done():
            poll.set_result(None)
