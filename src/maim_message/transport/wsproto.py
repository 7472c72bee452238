"""Sans-I/O WebSocket (RFC 6455) server side: HTTP upgrade parsing and frame codec.

Owned here rather than taken from a library's connection layer because the hub's hot path
is "bytes in -> frames -> bytes out" and every layer of futures and queues in between
costs more than the hub's own logic. No extensions are negotiated (no compression), so
server frames are plain and a broadcast frame can be built once for every receiver.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

from ..errors import MaimMessageError

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HTTP_REASONS = {
    101: "Switching Protocols", 200: "OK", 204: "No Content", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 411: "Length Required", 413: "Content Too Large",
    426: "Upgrade Required", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
}
MAX_REQUEST_BODY = 1024 * 1024  # default bound of a plain request's body (413 above)


def _pure_unmask(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    if n == 0:
        return b""
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


Unmasker = Callable[[bytes, bytes], bytes]


class ProtocolViolation(MaimMessageError):
    """The peer broke the protocol; close with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class HandshakeError(MaimMessageError):
    """The HTTP request cannot be answered with an upgrade; reply ``status``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass
class HttpRequest:
    method: str
    target: str
    headers: List[Tuple[str, str]]
    lower: dict = field(default_factory=dict)  # lower-cased name -> first value
    version: str = "HTTP/1.1"

    def body_length(self, limit: int = MAX_REQUEST_BODY) -> int:
        """Bytes of body that follow the head (plain requests; Content-Length only).

        A chunked body is refused (411) rather than decoded: no route here needs one, and
        one framing rule keeps request smuggling out. Above ``limit``: 413.
        """
        if "transfer-encoding" in self.lower:
            raise HandshakeError(411, "chunked request bodies are not accepted; "
                                      "send Content-Length")
        values = [v for k, v in self.headers if k.lower() == "content-length"]
        if not values:
            return 0
        if len(set(values)) != 1 or not values[0].isdigit():
            raise HandshakeError(400, "bad Content-Length")
        length = int(values[0])
        if length > limit:
            raise HandshakeError(413, f"request body over {limit} bytes")
        return length

    @property
    def is_websocket_upgrade(self) -> bool:
        return (
            "websocket" in self.lower.get("upgrade", "").lower()
            and "upgrade" in self.lower.get("connection", "").lower()
        )

    def websocket_accept_key(self) -> str:
        """Validate the upgrade headers; returns the Sec-WebSocket-Accept value."""
        if self.method != "GET":
            raise HandshakeError(405, "WebSocket upgrade needs GET")
        if self.version != "HTTP/1.1":
            raise HandshakeError(400, "WebSocket upgrade needs HTTP/1.1")
        if self.lower.get("sec-websocket-version", "") != "13":
            raise HandshakeError(426, "unsupported Sec-WebSocket-Version (need 13)")
        key = self.lower.get("sec-websocket-key", "")
        try:
            if len(base64.b64decode(key, validate=True)) != 16:
                raise ValueError
        except ValueError:
            raise HandshakeError(400, "invalid Sec-WebSocket-Key") from None
        digest = hashlib.sha1(key.encode("ascii") + _GUID).digest()
        return base64.b64encode(digest).decode("ascii")


def parse_http_request(buf: bytearray, max_size: int = 16384) -> Optional[Tuple[HttpRequest, int]]:
    """Parse one request head from ``buf``; None when incomplete.

    Returns the request and the number of bytes it used.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > max_size:
            raise HandshakeError(431, "request head too large")
        return None
    if end > max_size:
        raise HandshakeError(431, "request head too large")
    try:
        head = bytes(buf[:end]).decode("latin-1")
    except Exception:  # pragma: no cover - latin-1 decodes any byte
        raise HandshakeError(400, "bad request head") from None
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1") or not parts[0]:
        raise HandshakeError(400, "bad request line")
    headers: List[Tuple[str, str]] = []
    lower: dict = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HandshakeError(400, "bad header line")
        value = value.strip()
        headers.append((name, value))
        lower.setdefault(name.lower(), value)
    return HttpRequest(parts[0], parts[1], headers, lower, parts[2]), end + 4


def response_headers(
    status: int, body_length: int, content_type: str, headers: Sequence[Tuple[str, str]],
) -> List[Tuple[str, str]]:
    """Header lines of an HTTP answer, shared by the asyncio and the ASGI shell.

    A 426 always names the version we speak (RFC 6455 4.4), whoever built the reply.
    """
    out: List[Tuple[str, str]] = []
    if content_type:
        out.append(("Content-Type", content_type))
    out.append(("Content-Length", str(body_length)))
    out.extend(headers)
    if status == 426 and not any(k.lower() == "sec-websocket-version" for k, _ in headers):
        out.append(("Sec-WebSocket-Version", "13"))
    return out


def http_response(
    status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8",
    headers: Tuple[Tuple[str, str], ...] = (), close: bool = True, head_only: bool = False,
) -> bytes:
    """A whole HTTP/1.1 response; ``head_only`` (HEAD requests) keeps the headers only."""
    lines = [f"HTTP/1.1 {status} {_HTTP_REASONS.get(status, 'Unknown')}"]
    lines.extend(f"{k}: {v}" for k, v in response_headers(status, len(body), content_type,
                                                          headers))
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


def switching_protocols(accept_key: str) -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key}\r\n\r\n"
    ).encode("latin-1")


_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack


def frame_header(opcode: int, length: int) -> bytes:
    """Header of an unmasked final frame (server -> client)."""
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 65536:
        return _pack_short(0x80 | opcode, 126, length)
    return _pack_long(0x80 | opcode, 127, length)


def encode_frame(opcode: int, payload: bytes) -> bytes:
    return frame_header(opcode, len(payload)) + payload


def encode_close(code: int, reason: str = "") -> bytes:
    body = struct.pack("!H", code) + reason.encode("utf-8")[:123]
    return encode_frame(OP_CLOSE, body)


def parse_close(payload: bytes) -> Tuple[int, str]:
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolViolation(1002, "close frame too short")
    (code,) = struct.unpack("!H", payload[:2])
    try:
        return code, payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation(1007, "invalid UTF-8 in close reason") from None


class FrameParser:
    """Client -> server frames: unmasks, reassembles fragments, enforces the size limit.

    ``feed`` returns complete events as ``(opcode, payload)``: data messages (TEXT/BINARY,
    reassembled) and control frames, in order. Violations raise :class:`ProtocolViolation`.
    """

    __slots__ = (
        "_big", "_big_need", "_big_parts", "_buf", "_frag_op", "_frag_parts", "_frag_size",
        "_unmask", "max_size",
    )

    # Frames at least this big are collected as a list of chunks and joined once, instead
    # of growing the read buffer: peak memory stays near 2x the frame, not 3-4x.
    BIG_FRAME = 1 << 20

    def __init__(self, max_size: int, unmask: Optional[Unmasker] = None) -> None:
        self.max_size = max_size
        self._unmask: Unmasker = unmask or _pure_unmask
        self._buf = bytearray()
        self._frag_op = 0
        self._frag_parts: List[bytes] = []
        self._frag_size = 0
        self._big: Optional[Tuple[int, int, bytes, int]] = None  # opcode, fin, mask, length
        self._big_parts: List[bytes] = []
        self._big_need = 0

    def feed(self, data: bytes) -> List[Tuple[int, bytes]]:
        events: List[Tuple[int, bytes]] = []
        if self._big is not None:
            take = data[:self._big_need]
            self._big_parts.append(take)
            self._big_need -= len(take)
            if self._big_need:
                return events
            opcode, fin, mask, length = self._big
            joined = b"".join(self._big_parts)
            self._big, self._big_parts = None, []
            self._emit(events, opcode, fin, self._unmask(joined, mask), length)
            del joined
            data = data[len(take):]
            if not data:
                return events
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        unmask = self._unmask
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
            elif length + self._frag_size > self.max_size:
                raise ProtocolViolation(
                    1009,
                    f"message of {length + self._frag_size} bytes exceeds limit of "
                    f"{self.max_size} bytes",
                )
            if end - pos < head + length:
                if length >= self.BIG_FRAME and end - pos >= head:
                    part = bytes(buf[pos + head:end])
                    self._big = (opcode, fin, bytes(buf[pos + head - 4:pos + head]), length)
                    self._big_parts = [part]
                    self._big_need = length - len(part)
                    pos = end
                break
            mask = bytes(buf[pos + head - 4:pos + head])
            payload = unmask(buf[pos + head:pos + head + length], mask)  # type: ignore[arg-type]
            pos += head + length
            self._emit(events, opcode, fin, payload, length)
        if pos:
            del buf[:pos]
        return events

    def _emit(self, events: List[Tuple[int, bytes]], opcode: int, fin: int, payload: bytes,
              length: int) -> None:
        if opcode >= 8:
            if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                raise ProtocolViolation(1002, f"unknown opcode {opcode}")
            events.append((opcode, payload))
        elif opcode == OP_CONT:
            if not self._frag_op:
                raise ProtocolViolation(1002, "unexpected continuation frame")
            self._frag_parts.append(payload)
            self._frag_size += length
            if fin:
                events.append((self._frag_op, b"".join(self._frag_parts)))
                self._frag_op = 0
                self._frag_parts = []
                self._frag_size = 0
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._frag_op:
                raise ProtocolViolation(1002, "expected a continuation frame")
            if fin:
                events.append((opcode, payload))
            else:
                self._frag_op = opcode
                self._frag_parts = [payload]
                self._frag_size = length
        else:
            raise ProtocolViolation(1002, f"unknown opcode {opcode}")

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._frag_size + self._big_need
