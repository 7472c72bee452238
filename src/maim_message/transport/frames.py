"""RFC 6455 frames as bytes: opcodes, server frame headers, close payloads, prepared frames.

Server frames are never masked and no extension is negotiated, so the bytes of a frame do
not depend on the connection: a :class:`PreparedFrame` is built once and written to any
number of connections.
"""

from __future__ import annotations

import struct
from typing import Callable, Tuple, Union

from ..errors import MaimMessageError

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

Chunk = Union[bytes, memoryview]
# Received bytes: a view of a shared read buffer is valid only while it is being fed
ReadData = Union[bytes, bytearray, memoryview]
# (payload, 4-byte mask) -> unmasked payload; both arguments may be any bytes-like object
Unmasker = Callable[[Union[bytes, bytearray, memoryview], Union[bytes, bytearray, memoryview]],
                    bytes]

# At or above this size a payload is kept apart from its header (as a memoryview), so a
# big message is copied once into the socket's buffer instead of joined first.
SPLIT_AT = 64 * 1024


def _pure_unmask(data: Union[bytes, bytearray, memoryview],
                 mask: Union[bytes, bytearray, memoryview]) -> bytes:
    n = len(data)
    if n == 0:
        return b""
    key = int.from_bytes((bytes(mask) * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


unmask: Unmasker
try:  # the C helper of the websockets package, when installed
    # (typed as taking bytes/bytearray masks; it takes any buffer, memoryviews included)
    from websockets.speedups import apply_mask as unmask  # type: ignore[assignment]
except ImportError:  # pragma: no cover
    unmask = _pure_unmask


class ProtocolViolation(MaimMessageError):
    """The peer broke the protocol; fail the connection with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


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


def close_code_is_valid(code: int) -> bool:
    """Codes a peer may send (RFC 6455 7.4; 1004-1006 and 1015 never go on the wire)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def close_payload(code: int, reason: str = "") -> bytes:
    """Body of a close frame; the reason is cut to fit 125 bytes on a character boundary."""
    data = reason.encode("utf-8")
    if len(data) > 123:
        data = data[:123].decode("utf-8", "ignore").encode("utf-8")
    return struct.pack("!H", code) + data


def encode_close(code: int, reason: str = "") -> bytes:
    return encode_frame(OP_CLOSE, close_payload(code, reason))


def parse_close(payload: bytes) -> Tuple[int, str]:
    """Code and reason of a received close frame (1005 when it has no body)."""
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolViolation(1002, "close frame too short")
    (code,) = struct.unpack("!H", payload[:2])
    if not close_code_is_valid(code):
        raise ProtocolViolation(1002, f"invalid close code {code}")
    try:
        return code, payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation(1007, "invalid UTF-8 in close reason") from None


class PreparedFrame:
    """One data frame built once, sent to many connections (a broadcast, an outbox entry).

    ``chunks`` is what goes on the wire: the whole frame as one ``bytes``, or for a big
    payload its header and a memoryview of the payload (never copied here). ``payload``
    stays available for transports that frame messages themselves (ASGI).
    """

    __slots__ = ("chunks", "nbytes", "opcode", "payload")

    def __init__(self, opcode: int, payload: bytes) -> None:
        self.opcode = opcode
        self.payload = payload
        head = frame_header(opcode, len(payload))
        self.nbytes = len(head) + len(payload)
        if len(payload) >= SPLIT_AT:
            self.chunks: Tuple[Chunk, ...] = (head, memoryview(payload))
        else:
            self.chunks = (head + payload,)

    @classmethod
    def text(cls, payload: bytes) -> PreparedFrame:
        return cls(OP_TEXT, payload)

    @classmethod
    def from_raw(cls, frame: bytes, body: bytes = b"") -> PreparedFrame:
        """From the older ``send_raw(frame, body)`` form: a whole unmasked frame, or its
        header and ``body``."""
        size = frame[1] & 0x7F
        start = 2 if size < 126 else (4 if size == 126 else 10)
        prepared = cls.__new__(cls)
        prepared.opcode = frame[0] & 0x0F
        prepared.payload = body if body else frame[start:]
        prepared.nbytes = len(frame) + len(body)
        prepared.chunks = (frame, memoryview(body)) if body else (frame,)
        return prepared

    def __bytes__(self) -> bytes:
        """The whole frame as one ``bytes`` (a copy for a big payload)."""
        return b"".join(self.chunks)

    def __repr__(self) -> str:
        return f"PreparedFrame(opcode={self.opcode}, {len(self.payload)} bytes)"

