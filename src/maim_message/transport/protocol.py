"""Sans-I/O WebSocket server connection (RFC 6455): every state and rule lives here.

The object is fed bytes (:meth:`ServerProtocol.receive_data`) and returns events (the
frames themselves are read and checked by :class:`.reader.FrameReader`); what it
wants to send accumulates until :meth:`ServerProtocol.data_to_send`. It never touches a
socket or a clock of its own (the ping-rate clock is injected), so every rule is tested by
feeding bytes. The asyncio shell moves bytes and runs the timers; nothing else.

Events are ``(kind, payload)`` tuples (cheap on the hot path): ``kind`` is a frame opcode
(TEXT and BINARY carry a whole reassembled message) or :data:`EV_REQUEST` /
:data:`EV_FAILURE`. A control event takes effect when the shell hands it back through
:meth:`ServerProtocol.apply`, in the order the app sees the events: the app's answers to
the messages before a close or a protocol error still go out before our close frame.
"""

from __future__ import annotations

import enum
import struct
import time
from typing import Callable, List, Optional, Tuple

from ..errors import MaimMessageError
from .frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    SPLIT_AT,
    Chunk,
    PreparedFrame,
    ProtocolViolation,
    ReadData,
    Unmasker,
    close_payload,
    frame_header,
    parse_close,
)
from .http11 import (
    MAX_REQUEST_BODY,
    HttpRequest,
    http_response,
    parse_http_request,
    switching_protocols,
)
from .reader import (
    FRAGMENT_OVERHEAD,
    MAX_FRAGMENTS,
    PING_BURST,
    PING_RATE,
    Event,
    FrameReader,
)

_text_head_16 = struct.Struct("!BBH").pack  # a text frame's header, 126 <= length < 65536

__all__ = [
    "CLOSED", "CLOSING", "CONNECTING", "EV_FAILURE", "EV_REQUEST", "FRAGMENT_OVERHEAD",
    "MAX_FRAGMENTS", "OPEN", "PING_BURST", "PING_RATE", "Event", "ProtocolStateError",
    "ServerProtocol", "SessionState", "State",
]


class State(enum.IntEnum):
    """Where a connection is; the shells only read it."""

    CONNECTING = 0  # reading the HTTP request, then waiting for the app's decision
    OPEN = 1
    CLOSING = 2  # our close frame is out (we closed first, or failed the connection)
    CLOSED = 3  # closing handshake over, or the HTTP request answered: close TCP


CONNECTING, OPEN, CLOSING, CLOSED = State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED

EV_REQUEST = 0x10  # payload: the request body; the head is ``ServerProtocol.request``
EV_FAILURE = 0x11  # payload: the close frame body (code + reason) to fail with


class ProtocolStateError(MaimMessageError, RuntimeError):
    """A send or answer that the connection's state does not allow (a bug in the caller)."""


class SessionState:
    """State and close bookkeeping without framing.

    The ASGI shell uses it as is (there the ASGI server frames the bytes);
    :class:`ServerProtocol` adds the bytes.
    """

    __slots__ = ("close_code", "close_reason", "closed_by_peer", "state")

    def __init__(self, state: State = CONNECTING) -> None:
        self.state = state
        self.closed_by_peer = False  # the peer's close came first (its code is kept)
        self.close_code = 1006  # what the app is told on close: the first close sent or seen
        self.close_reason = ""

    def start_close(self, code: int, reason: str) -> bool:
        """OPEN -> CLOSING with our code; False when not open (nothing to do)."""
        if self.state is not OPEN:
            return False
        self.close_code, self.close_reason = code, reason
        self.state = CLOSING
        return True

    def close_received(self, code: int, reason: str) -> None:
        """The peer's close arrived (after ours, or first: then its code is the one kept)."""
        if self.state is OPEN:
            self.close_code, self.close_reason = code, reason
            self.closed_by_peer = True
        self.state = CLOSED

    def connection_lost(self) -> None:
        self.state = CLOSED


class ServerProtocol(SessionState):
    """One server-side connection, from the HTTP request to the closing handshake."""

    __slots__ = (
        "_body_need", "_buf", "_head", "_head_only", "_out", "_out_bytes", "_reader",
        "failed", "max_request_body", "max_request_head", "request", "views_pending",
    )

    def __init__(
        self, *, max_message_size: int, max_fragments: int = MAX_FRAGMENTS,
        max_request_head: int = 16384, max_request_body: int = MAX_REQUEST_BODY,
        ping_rate: float = PING_RATE, ping_burst: float = PING_BURST,
        unmask_with: Optional[Unmasker] = None, clock: Callable[[], float] = time.monotonic,
        state: State = CONNECTING,
    ) -> None:
        super().__init__(state)
        self._reader = FrameReader(
            max_message_size, max_fragments=max_fragments, ping_rate=ping_rate,
            ping_burst=ping_burst, unmask_with=unmask_with, clock=clock)
        self.max_request_head = max_request_head
        self.max_request_body = max_request_body
        self._buf = bytearray()  # the HTTP request, and frames that come before our answer
        self._out: List[Chunk] = []
        self._out_bytes = 0
        self.views_pending = False  # a big payload waits as a memoryview: do not join it
        self.failed = False  # we failed the connection: close TCP once our close is out
        self.request: Optional[HttpRequest] = None
        self._head: Optional[HttpRequest] = None
        self._body_need = 0
        self._head_only = False

    @property
    def reader(self) -> FrameReader:
        """The frame reader: its limits (``max_message_size``, ...) may be read or set."""
        return self._reader

    # -- receiving ------------------------------------------------------------------------

    def receive_data(self, data: ReadData) -> List[Event]:
        """Bytes from the network -> events, in order. Never raises for a peer's frames
        (a violation is the last event, :data:`EV_FAILURE`); in CONNECTING a bad request
        raises :class:`~.http11.HandshakeError` (answer it with :meth:`reject`)."""
        state = self.state
        if state is OPEN or state is CLOSING:
            reader = self._reader
            if reader.stopped:  # after a close frame or a failure
                return []
            events: List[Event] = []
            try:
                reader.feed(data, events)
            except ProtocolViolation as exc:
                reader.stop()
                events.append((EV_FAILURE, close_payload(exc.code, exc.reason)))
            return events
        if state is CONNECTING:
            return self._receive_request(data)
        return []

    @property
    def buffered(self) -> int:
        """Received bytes held: unparsed input and the parts of an unfinished message."""
        return len(self._buf) + self._reader.buffered

    # -- the HTTP request -----------------------------------------------------------------

    def _receive_request(self, data: ReadData) -> List[Event]:
        if self.request is not None:  # the app is deciding
            if self.request.is_websocket_upgrade:
                self._buf += data  # frames sent before our answer are parsed after it
            return []
        buf = self._buf
        buf += data
        head = self._head
        if head is None:
            parsed = parse_http_request(buf, self.max_request_head)
            if parsed is None:
                return []
            head, used = parsed
            del buf[:used]
            self._head_only = head.method == "HEAD"
            if not head.is_websocket_upgrade:
                self._body_need = head.body_length(self.max_request_body)
            self._head = head
        if len(buf) < self._body_need:
            return []
        body = bytes(buf[:self._body_need])
        del buf[:self._body_need]
        self.request, self._head = head, None
        if not head.is_websocket_upgrade:
            self._buf = bytearray()  # one request per connection: the rest is not read
        return [(EV_REQUEST, body)]

    def accept(self, accept_key: str) -> List[Event]:
        """Answer the upgrade (101) and open; returns the events of frames that came early."""
        if self.state is not CONNECTING or self.request is None:
            raise ProtocolStateError("no upgrade request to accept")
        self._write(switching_protocols(accept_key))
        self.state = OPEN
        self.request = None  # its headers are the app's now (~2.5 KiB per idle connection)
        early, self._buf = bytes(self._buf), bytearray()
        return self.receive_data(early) if early else []

    def reject(self, status: int, body: bytes = b"",
               content_type: str = "text/plain; charset=utf-8",
               headers: Tuple[Tuple[str, str], ...] = ()) -> None:
        """Answer the request with an HTTP response (headers only for HEAD), then CLOSED."""
        if self.state is not CONNECTING:
            raise ProtocolStateError("the request was answered already")
        self._write(http_response(status, body, content_type, headers,
                                  head_only=self._head_only))
        self.state = CLOSED
        self._buf = bytearray()

    # -- control events -------------------------------------------------------------------

    def apply(self, kind: int, payload: bytes) -> None:
        """Let a control event take effect: answer a ping, echo a close, fail."""
        if kind == OP_PING:
            if self.state is OPEN:  # never after our own close
                self._write(frame_header(OP_PONG, len(payload)) + payload)
        elif kind == OP_CLOSE:
            code, reason = parse_close(payload)
            if self.state is OPEN:
                self._write(frame_header(OP_CLOSE, len(payload)) + payload)  # the echo
            self.close_received(code, reason)
        elif kind == EV_FAILURE:
            self.fail(int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8"))

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (RFC 6455 7.1.7): our close frame, then TCP is closed
        without waiting for the peer's (``failed``); nothing more is read."""
        if self.state is OPEN:
            self.send_close(code, reason)
        self.failed = True
        self._reader.stop()

    # -- sending --------------------------------------------------------------------------

    def send_text(self, payload: bytes) -> None:
        """Queue one text frame (the hot path: one concatenation, one append)."""
        if self.state is not OPEN:
            raise ProtocolStateError(f"cannot send: connection is {self.state.name}")
        n = len(payload)
        if n < 126:
            data = bytes((0x81, n)) + payload
        elif n < SPLIT_AT:  # (SPLIT_AT <= 65536: always the 16-bit length form)
            data = _text_head_16(0x81, 126, n) + payload
        else:
            self._send_big(OP_TEXT, payload)
            return
        self._out.append(data)
        self._out_bytes += len(data)

    def send_binary(self, payload: bytes) -> None:
        if self.state is not OPEN:
            raise ProtocolStateError(f"cannot send: connection is {self.state.name}")
        if len(payload) >= SPLIT_AT:
            self._send_big(OP_BINARY, payload)
        else:
            self._write(frame_header(OP_BINARY, len(payload)) + payload)

    def _send_big(self, opcode: int, payload: bytes) -> None:
        head = frame_header(opcode, len(payload))
        self._out.append(head)
        self._out.append(memoryview(payload))
        self._out_bytes += len(head) + len(payload)
        self.views_pending = True

    def send_prepared(self, frame: PreparedFrame) -> None:
        """A frame built once for many connections (no copy here)."""
        if self.state is not OPEN:
            raise ProtocolStateError(f"cannot send: connection is {self.state.name}")
        chunks = frame.chunks
        self._out.extend(chunks)
        self._out_bytes += frame.nbytes
        if len(chunks) > 1:
            self.views_pending = True

    def send_ping(self, payload: bytes = b"") -> None:
        if self.state is not OPEN:
            raise ProtocolStateError(f"cannot ping: connection is {self.state.name}")
        self._write(frame_header(OP_PING, len(payload)) + payload)

    def send_pong(self, payload: bytes = b"") -> None:
        if self.state is not OPEN:
            raise ProtocolStateError(f"cannot pong: connection is {self.state.name}")
        self._write(frame_header(OP_PONG, len(payload)) + payload)

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (OPEN -> CLOSING); the peer's close ends it."""
        if self.state is not OPEN:
            raise ProtocolStateError(f"cannot close: connection is {self.state.name}")
        body = close_payload(code, reason)
        self._write(frame_header(OP_CLOSE, len(body)) + body)
        self.start_close(code, reason)

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        self._out_bytes += len(data)

    def data_to_send(self) -> List[Chunk]:
        """What to write to the network, in order (big payloads as memoryviews;
        ``views_pending`` tells beforehand whether there are any)."""
        out, self._out = self._out, []
        self._out_bytes = 0
        self.views_pending = False
        return out

    @property
    def bytes_to_send(self) -> int:
        return self._out_bytes

    def connection_lost(self) -> None:
        """TCP is gone: CLOSED, and every buffer is let go at once (no wait for a GC)."""
        self.state = CLOSED
        self._reader.stop()
        self._out = []
        self._out_bytes = 0
        self.views_pending = False
        self.request = None
