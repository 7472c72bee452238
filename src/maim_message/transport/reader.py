"""Client frames -> events: unmasking, reassembly and every check on what a peer sends
(RFC 6455 framing rules, UTF-8 also across fragments, message size, fragment cost and
count, ping rate). Part of :class:`.protocol.ServerProtocol`; no I/O, no clock of its own.
"""

from __future__ import annotations

import codecs
import time
from typing import Any, Callable, List, Optional, Tuple

from ..core.limits import TokenBucket
from .frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ProtocolViolation,
    ReadData,
    Unmasker,
    parse_close,
    unmask,
)

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


class FrameReader:
    """``feed(data, events)`` appends complete events in order: TEXT/BINARY (whole
    messages), PING, PONG, CLOSE. A violation raises :class:`~.frames.ProtocolViolation`
    (the events before it stay in ``events``); after a close frame ``stopped`` is set and
    nothing more is read."""

    __slots__ = (
        "_big", "_big_need", "_big_parts", "_buf", "_clock", "_frag_cost", "_frag_count",
        "_frag_op", "_frag_parts", "_pings", "_unmask", "_utf8", "max_fragments",
        "max_message_size", "ping_burst", "ping_rate", "stopped",
    )

    def __init__(
        self, max_message_size: int, *, max_fragments: int = MAX_FRAGMENTS,
        ping_rate: float = PING_RATE, ping_burst: float = PING_BURST,
        unmask_with: Optional[Unmasker] = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_message_size = max_message_size
        self.max_fragments = max_fragments
        self.ping_rate = ping_rate
        self.ping_burst = ping_burst
        self._clock = clock
        self._unmask: Unmasker = unmask_with or unmask
        self._buf = bytearray()
        self.stopped = False
        self._frag_op = 0
        self._frag_parts: List[bytes] = []
        self._frag_cost = 0
        self._frag_count = 0
        self._utf8: Any = None  # incremental decoder of a fragmented text message
        self._big: Optional[Tuple[int, int, bytes, int]] = None  # opcode, fin, mask, length
        self._big_parts: List[bytes] = []
        self._big_need = 0
        self._pings: Optional[TokenBucket] = None

    def feed(self, data: ReadData, events: List[Event]) -> None:
        """``data`` may be a view of a buffer the caller reuses: what is kept is copied."""
        if self._big is not None:
            take = bytes(data[:self._big_need])
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
            if not data or self.stopped:
                return
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        apply_mask = self._unmask
        view = memoryview(buf)  # payload and mask handed to the unmasker without a copy
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
                start = pos + head
                payload = apply_mask(view[start:start + length], view[start - 4:start])
                pos = start + length
                if opcode == OP_TEXT and fin and not self._frag_op:  # the common case, inline
                    if not payload.isascii():
                        _check_utf8(payload)
                    events.append((OP_TEXT, payload))
                    continue
                self._frame(events, opcode, fin, payload, length)
                if self.stopped:  # a close frame: nothing after it is read
                    return
        finally:
            view.release()  # (a bytearray with a live view cannot be resized)
            if pos and not self.stopped:
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
            self.stop()
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

    def stop(self) -> None:
        """Read nothing more and let every buffer go."""
        self.stopped = True
        self._buf = bytearray()
        self._big, self._big_parts, self._big_need = None, [], 0
        self._end_fragments()

    @property
    def buffered(self) -> int:
        """Unparsed input and the parts of an unfinished message."""
        return len(self._buf) + self._frag_cost + self._big_need


def _check_utf8(payload: bytes) -> None:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation(1007, "text message is not valid UTF-8") from None
