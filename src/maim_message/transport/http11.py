"""Sans-I/O HTTP/1.1 for the server side: the request head, its body, the WebSocket
upgrade checks (RFC 6455 4.2) and the responses.

One request per connection: the transport answers it and closes, or upgrades it. Nothing
here reads a socket; :class:`.protocol.ServerProtocol` feeds it bytes.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from ..errors import MaimMessageError

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HTTP_REASONS = {
    101: "Switching Protocols", 200: "OK", 204: "No Content", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 411: "Length Required", 413: "Content Too Large",
    426: "Upgrade Required", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
MAX_REQUEST_BODY = 1024 * 1024  # default bound of a plain request's body (413 above)
MAX_LENGTH_DIGITS = 18  # a longer Content-Length is refused (400), never parsed


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
        value = values[0]
        # ASCII digits only ('\u00b2'.isdigit() is True) and a sane length (int() refuses
        # over 4300 digits; 18 digits already exceed any limit)
        if len(set(values)) != 1 or not (value.isascii() and value.isdigit()
                                          and len(value) <= MAX_LENGTH_DIGITS):
            raise HandshakeError(400, "bad Content-Length")
        length = int(value)
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
            raise HandshakeError(505, "WebSocket upgrade needs HTTP/1.1")
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
