"""Sans-I/O WebSocket server connection (RFC 6455): every state and rule lives here.

The object is fed bytes (:meth:`ServerProtocol.receive_data`) and returns events; what it
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

import codecs
import enum
import time
from typing import Any, Callable, List, Optional, Tuple

from ..core.limits import TokenBucket
from ..errors import MaimMessageError
from .frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    SPLIT_AT,
    Chunk,
    PreparedFrame,
    ProtocolViolation,
    Unmasker,
    close_payload,
    frame_header,
    parse_close,
    unmask,
)
from .http11 import (
    MAX_REQUEST_BODY,
    HttpRequest,
    http_response,
    parse_http_request,
    switching_protocols,
)


class State(enum.IntEnum):
    """Where a connection is; the shells only read it."""

    CONNECTING = 0  # reading the HTTP request, then waiting for the app's decision
    OPEN = 1
    CLOSING = 2  # our close frame is out (we closed first, or failed the connection)
    CLOSED = 3  # closing handshake over, or the HTTP request answered: close TCP


CONNECTING, OPEN, CLOSING, CLOSED = State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED

EV_REQUEST = 0x10  # payload: the request body; the head is ``ServerProtocol.request``
EV_FAILURE = 0x11  # payload: the close frame body (code + reason) to fail with

Event = Tuple[int, bytes]

# Each fragment of a fragmented message is charged this much on top of its payload against
# the message size limit: a list slot, a bytes object and its unmasked copy cost about that.
FRAGMENT_OVERHEAD = 64
MAX_FRAGMENTS = 10_000  # per message; more: close 1009
PING_RATE = 10.0  # peer pings per second allowed, sustained ...
PING_BURST = 50.0  # ... with this many at once; more: close 1008

# Frames at least this big are collected as a list of chunks and joined once, instead of
# growing the read buffer: peak memory stays near 2x the frame, not 3-4x.
BIG_FRAME = 1 << 20


class ProtocolStateError(MaimMessageError, RuntimeError):
    """A send or answer that the connection's state does not allow (a bug in the caller)."""


class SessionState:
    """State and close bookkeeping without framing.

    The ASGI shell uses it as is (there the ASGI server frames the bytes);
    :class:`ServerProtocol` adds the bytes.
    """

    __slots__ = ("close_code", "close_reason", "state")

    def __init__(self, state: State = CONNECTING) -> None:
        self.state = state
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
        self.state = CLOSED

    def connection_lost(self) -> None:
        self.state = CLOSED


class ServerProtocol(SessionState):
    """One server-side connection, from the HTTP request to the closing handshake."""

    __slots__ = (
        "_big", "_big_need", "_big_parts", "_body_need", "_buf", "_clock", "_discard",
        "_frag_cost", "_frag_count", "_frag_op", "_frag_parts", "_head", "_head_only",
        "_out", "_out_bytes", "_pings", "_unmask", "_utf8", "failed", "max_fragments",
        "max_message_size", "max_request_body", "max_request_head", "ping_burst",
        "ping_rate", "request",
    )

    def __init__(
        self, *, max_message_size: int, max_fragments: int = MAX_FRAGMENTS,
        max_request_head: int = 16384, max_request_body: int = MAX_REQUEST_BODY,
        ping_rate: float = PING_RATE, ping_burst: float = PING_BURST,
        unmask_with: Optional[Unmasker] = None, clock: Callable[[], float] = time.monotonic,
        state: State = CONNECTING,
    ) -> None:
        super().__init__(state)
        self.max_message_size = max_message_size
        self.max_fragments = max_fragments
        self.max_request_head = max_request_head
        self.max_request_body = max_request_body
        self.ping_rate = ping_rate
        self.ping_burst = ping_burst
        self._clock = clock
        self._unmask: Unmasker = unmask_with or unmask
        self._buf = bytearray()
        self._out: List[Chunk] = []
        self._out_bytes = 0
        self._discard = False  # after a close frame or a failure: ignore what arrives
        self.failed = False  # we failed the connection: close TCP once our close is out
        self.request: Optional[HttpRequest] = None
        self._head: Optional[HttpRequest] = None
        self._body_need = 0
        self._head_only = False
        self._frag_op = 0
        self._frag_parts: List[bytes] = []
        self._frag_cost = 0
        self._frag_count = 0
        self._utf8: Any = None  # incremental decoder of a fragmented text message
        self._big: Optional[Tuple[int, int, bytes, int]] = None  # opcode, fin, mask, length
        self._big_parts: List[bytes] = []
        self._big_need = 0
        self._pings: Optional[TokenBucket] = None

    # -- receiving ------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> List[Event]:
        """Bytes from the network -> events, in order. Never raises for a peer's frames
        (a violation is the last event, :data:`EV_FAILURE`); in CONNECTING a bad request
        raises :class:`~.http11.HandshakeError` (answer it with :meth:`reject`)."""
        state = self.state
        if state is OPEN or state is CLOSING:
            if self._discard:
                return []
            events: List[Event] = []
            try:
                self._parse(data, events)
            except ProtocolViolation as exc:
                self._stop_reading()
                events.append((EV_FAILURE, close_payload(exc.code, exc.reason)))
            return events
        if state is CONNECTING:
            return self._receive_request(data)
        return []

    def _parse(self, data: bytes, events: List[Event]) -> None:
        if self._big is not None:
            take = data[:self._big_need]
            self._big_parts.append(take)
            self._big_need -= len(take)
            if self._big_need:
                return
            opcode, fin, mask, length = self._big
            joined = b"".join(self._big_parts)
            self._big, self._big_parts = None, []
            self._frame(events, opcode, fin, self._unmask(joined, mask), length)
            del joined
            data = data[len(take):]
            if not data or self._discard:
                return
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        apply_mask = self._unmask
        try:
            while end - pos >= 2:
                b0 = buf[pos]
                b1 = buf[pos + 1]
                if b0 & 0x70:
                    raise ProtocolViolation(1002, "reserved bits set (no extension negotiated)")
                if not b1 & 0x80:
                    raise ProtocolViolation(1002, "client frames must be masked")
                length = b1 & 0x7F
                head = 6
                if length == 126:
                    if end - pos < 8:
                        break
                    length = (buf[pos + 2] << 8) | buf[pos + 3]
                    head = 8
                elif length == 127:
                    if end - pos < 14:
                        break
                    length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                    head = 14
                opcode = b0 & 0x0F
                fin = b0 & 0x80
                if opcode >= 8:
                    if not fin or length > 125:
                        raise ProtocolViolation(1002, "bad control frame")
                elif fin and not self._frag_op:
                    if length > self.max_message_size:
                        raise ProtocolViolation(
                            1009, f"message of {length} bytes exceeds limit of "
                                  f"{self.max_message_size} bytes")
                else:
                    self._check_fragment(length)
                if end - pos < head + length:
                    if length >= BIG_FRAME and end - pos >= head:
                        part = bytes(buf[pos + head:end])
                        self._big = (opcode, fin, bytes(buf[pos + head - 4:pos + head]), length)
                        self._big_parts = [part]
                        self._big_need = length - len(part)
                        pos = end
                    break
                mask = bytes(buf[pos + head - 4:pos + head])
                payload = apply_mask(buf[pos + head:pos + head + length], mask)  # type: ignore[arg-type]
                pos += head + length
                self._frame(events, opcode, fin, payload, length)
                if self._discard:  # a close frame: nothing after it is read
                    return
        finally:
            if pos and not self._discard:
                del buf[:pos]

    def _check_fragment(self, length: int) -> None:
        """Refuse a fragment from its header, before its payload is buffered."""
        cost = self._frag_cost + length + FRAGMENT_OVERHEAD
        if cost > self.max_message_size:
            raise ProtocolViolation(
                1009, f"message of {cost} bytes exceeds limit of {self.max_message_size} "
                      f"bytes (each fragment counts {FRAGMENT_OVERHEAD} bytes more)")
        if self._frag_count >= self.max_fragments:
            raise ProtocolViolation(1009, f"more than {self.max_fragments} fragments")

    def _frame(self, events: List[Event], opcode: int, fin: int, payload: bytes,
               length: int) -> None:
        if opcode == OP_TEXT or opcode == OP_BINARY:
            if self._frag_op:
                raise ProtocolViolation(1002, "expected a continuation frame")
            if fin:
                if opcode == OP_TEXT and not payload.isascii():
                    _check_utf8(payload)
                events.append((opcode, payload))
                return
            self._frag_op = opcode
            self._frag_parts = [payload]
            self._frag_cost = length + FRAGMENT_OVERHEAD
            self._frag_count = 1
            if opcode == OP_TEXT:
                self._utf8 = codecs.getincrementaldecoder("utf-8")()
                self._feed_utf8(payload, False)
        elif opcode == OP_CONT:
            if not self._frag_op:
                raise ProtocolViolation(1002, "unexpected continuation frame")
            self._frag_parts.append(payload)
            self._frag_cost += length + FRAGMENT_OVERHEAD
            self._frag_count += 1
            if self._utf8 is not None:
                self._feed_utf8(payload, bool(fin))
            if fin:
                events.append((self._frag_op, b"".join(self._frag_parts)))
                self._end_fragments()
        elif opcode == OP_PING:
            pings = self._pings
            if pings is None:
                pings = self._pings = TokenBucket(self.ping_rate, self.ping_burst, self._clock)
            if not pings.allow():
                raise ProtocolViolation(
                    1008, f"ping rate limit exceeded: over {self.ping_rate:g} pings/s")
            events.append((opcode, payload))
        elif opcode == OP_PONG:
            events.append((opcode, payload))
        elif opcode == OP_CLOSE:
            parse_close(payload)  # a bad code or reason fails the connection here
            events.append((opcode, payload))
            self._stop_reading()
        else:
            raise ProtocolViolation(1002, f"unknown opcode {opcode}")

    def _feed_utf8(self, payload: bytes, final: bool) -> None:
        try:
            self._utf8.decode(payload, final)
        except UnicodeDecodeError:
            raise ProtocolViolation(1007, "text message is not valid UTF-8") from None

    def _end_fragments(self) -> None:
        self._frag_op = 0
        self._frag_parts = []
        self._frag_cost = 0
        self._frag_count = 0
        self._utf8 = None

    def _stop_reading(self) -> None:
        self._discard = True
        self._buf = bytearray()
        self._big, self._big_parts, self._big_need = None, [], 0
        self._end_fragments()

    @property
    def buffered(self) -> int:
        """Received bytes held: unparsed input and the parts of an unfinished message."""
        return len(self._buf) + self._frag_cost + self._big_need

    # -- the HTTP request -----------------------------------------------------------------

    def _receive_request(self, data: bytes) -> List[Event]:
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
        self._stop_reading()

    # -- sending --------------------------------------------------------------------------

    def send_text(self, payload: bytes) -> None:
        self._send_data(OP_TEXT, payload)

    def send_binary(self, payload: bytes) -> None:
        self._send_data(OP_BINARY, payload)

    def _send_data(self, opcode: int, payload: bytes) -> None:
        if self.state is not OPEN:
            raise ProtocolStateError(f"cannot send: connection is {self.state.name}")
        head = frame_header(opcode, len(payload))
        if len(payload) >= SPLIT_AT:
            self._out.append(head)
            self._out.append(memoryview(payload))
            self._out_bytes += len(head) + len(payload)
        else:
            self._write(head + payload)

    def send_prepared(self, frame: PreparedFrame) -> None:
        """A frame built once for many connections (no copy here)."""
        if self.state is not OPEN:
            raise ProtocolStateError(f"cannot send: connection is {self.state.name}")
        self._out.extend(frame.chunks)
        self._out_bytes += frame.nbytes

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
        """What to write to the network, in order (big payloads as memoryviews)."""
        out, self._out = self._out, []
        self._out_bytes = 0
        return out

    @property
    def bytes_to_send(self) -> int:
        return self._out_bytes

    def connection_lost(self) -> None:
        """TCP is gone: CLOSED, and every buffer is let go at once (no wait for a GC)."""
        self.state = CLOSED
        self._stop_reading()
        self._out = []
        self._out_bytes = 0
        self.request = None


def _check_utf8(payload: bytes) -> None:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation(1007, "text message is not valid UTF-8") from None
