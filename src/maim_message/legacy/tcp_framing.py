"""Sans-I/O codec for the legacy TCP framing (wire §2.4).

A frame is ``u32 total length (header included) | u8 type | payload``, big-endian. Data
frames carry ``nonce (12) | seq (u64) | ciphertext``. Nothing here touches a socket: the
decoder is fed bytes and yields complete frames.
"""

from __future__ import annotations

import enum
import struct
from typing import List, NamedTuple, Tuple

from ..core.defaults import MAX_MESSAGE_SIZE
from ..errors import MaimMessageError

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HEADER",
    "NONCE_SIZE",
    "FrameDecoder",
    "FrameError",
    "FrameType",
    "RawFrame",
    "encode_frame",
    "pack_data_payload",
    "unpack_data_payload",
]

_HEADER = struct.Struct("!IB")
_SEQ = struct.Struct("!Q")
HEADER = _HEADER.size  # 5
NONCE_SIZE = 12
_DATA_PREFIX = NONCE_SIZE + _SEQ.size  # 20
#: 100 MiB of JSON plus encryption overhead; 0.6.8 had no limit at all.
DEFAULT_MAX_FRAME = MAX_MESSAGE_SIZE + 1024


class FrameType(enum.IntEnum):
    """Frame types; 0.6.8 answers the handshake with type 1 too and never sends 2."""

    HANDSHAKE_REQUEST = 1
    HANDSHAKE_RESPONSE = 2
    DATA = 3
    HEARTBEAT = 4


class FrameError(MaimMessageError, ValueError):
    """The byte stream is not valid legacy TCP framing; the connection must be closed."""


class RawFrame(NamedTuple):
    type: int
    payload: bytes


def encode_frame(frame_type: int, payload: bytes = b"") -> bytes:
    """One complete frame."""
    return _HEADER.pack(len(payload) + HEADER, frame_type) + payload


def pack_data_payload(nonce: bytes, seq: int, ciphertext: bytes) -> bytes:
    if len(nonce) != NONCE_SIZE:
        raise ValueError("nonce must be 12 bytes")
    return nonce + _SEQ.pack(seq) + ciphertext


def unpack_data_payload(payload: bytes) -> Tuple[bytes, int, bytes]:
    """``(nonce, seq, ciphertext)`` of a data frame payload."""
    if len(payload) < _DATA_PREFIX + 16:  # 16 = Poly1305 tag
        raise FrameError(f"data frame payload too short ({len(payload)} bytes)")
    return payload[:NONCE_SIZE], _SEQ.unpack_from(payload, NONCE_SIZE)[0], payload[_DATA_PREFIX:]


class FrameDecoder:
    """Incremental decoder: ``feed(bytes)`` returns the frames completed by those bytes."""

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> List[RawFrame]:
        buf = self._buf
        buf += data
        frames: List[RawFrame] = []
        pos = 0
        end = len(buf)
        while end - pos >= HEADER:
            length, ftype = _HEADER.unpack_from(buf, pos)
            if length < HEADER:
                raise FrameError(f"frame length {length} is smaller than the header")
            if length > self.max_frame:
                raise FrameError(f"frame of {length} bytes exceeds limit {self.max_frame}")
            if end - pos < length:
                break
            frames.append(RawFrame(ftype, bytes(buf[pos + HEADER : pos + length])))
            pos += length
        if pos:
            del buf[:pos]
        return frames

    def needed(self) -> int:
        """Bytes still missing for the frame being assembled (at least 1 when unknown)."""
        buf = self._buf
        if len(buf) < HEADER:
            return HEADER - len(buf)
        length = _HEADER.unpack_from(buf, 0)[0]
        return max(1, length - len(buf))
