"""The contract between a transport shell and the application above it (the hub).

A transport turns sockets into calls on :class:`ServerApp` and gives the app a
:class:`ServerConnection` to write to. The hub never touches sockets, so another
transport (ASGI, a faster library) can replace this one without touching the hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Tuple, Union

from .frames import PreparedFrame


@dataclass
class HandshakeInfo:
    """What the app sees of an HTTP request (a WebSocket upgrade or a plain request).

    ``method`` and ``body`` matter for plain requests: the body is the whole
    Content-Length body, bounded by the transport (413 above it; chunked: 411). For a HEAD
    request the transport sends the reply's headers without its body.
    """

    path: str
    query: Dict[str, str]
    headers: Dict[str, str]  # lower-case names, first value
    raw_headers: List[Tuple[str, str]]
    client_ip: str
    is_upgrade: bool
    peer_cert: Optional[Dict[str, Any]] = None
    method: str = "GET"
    body: bytes = b""


@dataclass
class Accept:
    """Upgrade the connection; ``context`` is kept on the connection for the app."""

    context: Any = None


@dataclass
class HttpReply:
    """Answer with a plain HTTP response (a refusal, or a route like /healthz)."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Tuple[Tuple[str, str], ...] = field(default_factory=tuple)


Decision = Union[Accept, HttpReply]


class ServerConnection(Protocol):
    """A live WebSocket connection as the app sees it."""

    context: Any

    @property
    def is_open(self) -> bool: ...

    @property
    def is_writable(self) -> bool:
        """Open and not held back by a full send buffer."""
        ...

    @property
    def client_ip(self) -> str: ...

    def send_text(self, payload: bytes) -> bool:
        """Queue one text frame (UTF-8 JSON bytes); False when the connection is not open."""
        ...

    def send_prepared(self, frame: PreparedFrame) -> bool:
        """Queue a frame built once (e.g. for a broadcast, or an outbox entry sent to every
        connection of a pair); False when the connection is not open."""
        ...

    def send_raw(self, frame: bytes, body: bytes = b"") -> bool:
        """Older form of :meth:`send_prepared`: an already framed message, or its header
        (``frame``) and payload (``body``). Kept for compatibility."""
        ...

    def close(self, code: int = 1000, reason: str = "") -> None: ...

    def write_buffer_size(self) -> int: ...


class ServerApp(Protocol):
    """Callbacks a server transport drives. All but ``handshake`` are synchronous."""

    async def handshake(self, info: HandshakeInfo) -> Decision:
        """Accept an upgrade or answer with an :class:`HttpReply`.

        For a plain request the answer may take long (a long-polling GET): the transport's
        handshake timeout covers receiving the request only. If the client goes away
        first, the call is cancelled.
        """
        ...

    def connection_opened(self, conn: ServerConnection) -> None: ...

    def text_received(self, conn: ServerConnection, payload: bytes) -> None:
        """A text message. An app may also have ``text_receiver(conn)``, returning the
        callable (same arguments) to call for ``conn``'s text from its opening on: a
        transport may then call that directly instead."""
        ...

    def binary_received(self, conn: ServerConnection, payload: bytes) -> None: ...

    def connection_writable(self, conn: ServerConnection) -> None:
        """The send buffer drained below the low-water mark: held messages may flow."""
        ...

    def connection_closed(self, conn: ServerConnection, code: int, reason: str) -> None: ...

def described(conn: Any) -> str:
    """A connection for a log line: its address, and the app's label for it (connection
    id and key fingerprint) when the app gave one (``context.log_label``)."""
    label = getattr(conn.context, "log_label", None)
    return f"{conn.client_ip} ({label})" if label else str(conn.client_ip)
