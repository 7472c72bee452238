"""Engine.IO v4 and Socket.IO v5 packets as bytes (wire-0.7.md §1, §9): no I/O.

Two layers, both text: an Engine.IO packet is one type digit and its data
(``4`` = message); a Socket.IO packet travels inside an Engine.IO message as a type
digit, an optional ``/namespace,``, an optional ack id and JSON data. maim speaks one
event, ``"message"``, with one argument, the same JSON body the 0.6 wire sends as a raw
text frame, so the hot path is a prefix check and a slice: ``42["message",<body>]``.

Polling bodies carry several Engine.IO packets separated by ``\\x1e``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from ..core.codec import dumps, loads
from ..errors import EnvelopeError, MaimMessageError

__all__ = [
    "MESSAGE_EVENT",
    "RECORD_SEPARATOR",
    "EioType",
    "PacketError",
    "SioPacket",
    "SioType",
    "decode_eio",
    "decode_sio",
    "encode_eio",
    "encode_sio",
    "event_argument",
    "join_payload",
    "message_body",
    "message_frame",
    "open_packet",
    "split_payload",
]

RECORD_SEPARATOR = b"\x1e"
MAX_ACK_ID_DIGITS = 15  # a longer ack id is a PacketError (int() refuses over 4300 digits)
MESSAGE_EVENT = "message"
_EVENT_PREFIX = b'42["message",'  # Engine.IO message + Socket.IO EVENT on "/", no ack id


class PacketError(MaimMessageError, ValueError):
    """The peer sent something that is not an Engine.IO / Socket.IO packet (its fault)."""


class EioType(enum.IntEnum):
    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


class SioType(enum.IntEnum):
    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


@dataclass(frozen=True)
class SioPacket:
    """One Socket.IO packet; ``data`` is the decoded JSON (None when absent)."""

    type: SioType
    namespace: str = "/"
    data: Any = None
    ack_id: Optional[int] = None


# -- Engine.IO ----------------------------------------------------------------------------


def encode_eio(kind: EioType, data: bytes = b"") -> bytes:
    return b"%d" % kind + data


def decode_eio(packet: bytes) -> Tuple[EioType, bytes]:
    """``b"4..."`` -> (MESSAGE, b"..."); raises PacketError for anything else."""
    if not packet:
        raise PacketError("empty Engine.IO packet")
    digit = packet[0] - 48
    if not 0 <= digit <= 6:
        if packet[:1] == b"b":
            raise PacketError("binary Engine.IO packets are not supported")
        raise PacketError(f"unknown Engine.IO packet type {packet[:1]!r}")
    return EioType(digit), packet[1:]


def open_packet(sid: str, upgrades: List[str], ping_interval: float, ping_timeout: float,
                max_payload: int) -> bytes:
    """The OPEN packet a server sends first (§1.2); intervals in seconds."""
    return encode_eio(EioType.OPEN, dumps({
        "sid": sid, "upgrades": upgrades, "pingTimeout": int(ping_timeout * 1000),
        "pingInterval": int(ping_interval * 1000), "maxPayload": max_payload,
    }))


def split_payload(body: bytes) -> List[bytes]:
    """A polling body -> its Engine.IO packets."""
    return body.split(RECORD_SEPARATOR) if body else []


def join_payload(packets: List[bytes]) -> bytes:
    return RECORD_SEPARATOR.join(packets)


# -- Socket.IO ----------------------------------------------------------------------------


def encode_sio(packet: SioPacket) -> bytes:
    """A Socket.IO packet as the data of an Engine.IO MESSAGE (without the leading ``4``)."""
    out = b"%d" % packet.type
    if packet.namespace != "/":
        out += packet.namespace.encode("utf-8") + b","
    if packet.ack_id is not None:
        out += b"%d" % packet.ack_id
    if packet.data is not None:
        out += dumps(packet.data)
    return out


def decode_sio(data: bytes) -> SioPacket:
    """The data of an Engine.IO MESSAGE -> a Socket.IO packet (text packets only)."""
    if not data:
        raise PacketError("empty Socket.IO packet")
    digit = data[0] - 48
    if not 0 <= digit <= 6:
        raise PacketError(f"unknown Socket.IO packet type {data[:1]!r}")
    kind = SioType(digit)
    if kind in (SioType.BINARY_EVENT, SioType.BINARY_ACK):
        raise PacketError("binary Socket.IO packets are not supported")
    pos = 1
    namespace = "/"
    if data[pos:pos + 1] == b"/":
        comma = data.find(b",", pos)
        end = comma if comma >= 0 else len(data)
        namespace = data[pos:end].decode("utf-8", "replace")
        pos = end + 1 if comma >= 0 else end
    start = pos
    while pos < len(data) and 48 <= data[pos] <= 57:
        pos += 1
    if pos - start > MAX_ACK_ID_DIGITS:
        raise PacketError("Socket.IO ack id too long")
    ack_id = int(data[start:pos]) if pos > start else None
    payload: Any = None
    if pos < len(data):
        try:
            payload = loads(data[pos:])
        except EnvelopeError as exc:
            raise PacketError(f"Socket.IO packet data is not JSON: {exc}") from None
    return SioPacket(kind, namespace, payload, ack_id)


# -- the maim "message" event (the hot path) ---------------------------------------------


def message_frame(body: bytes) -> bytes:
    """``42["message",<body>]``: one JSON body (bytes) as an Engine.IO + Socket.IO packet."""
    return _EVENT_PREFIX + body + b"]"


def message_body(packet: bytes) -> Optional[bytes]:
    """The JSON object of a ``42["message",{...}]`` packet without parsing it, else None.

    None means "not the common shape" (an ack id, a namespace, a string argument, another
    event): the caller then decodes the packet with :func:`decode_sio`. A body sliced here
    may still be bad JSON; the envelope decoder above reports that as for a 0.6 frame.
    """
    if not packet.startswith(_EVENT_PREFIX) or not packet.endswith(b"}]"):
        return None
    return packet[len(_EVENT_PREFIX):-1].lstrip(b" \t\r\n")


def event_argument(packet: SioPacket) -> Optional[bytes]:
    """The ``"message"`` event's argument as JSON bytes (a string argument is parsed as
    JSON, as 0.7.5 does); None for any other event or shape."""
    data = packet.data
    if type(data) is not list or len(data) < 2 or data[0] != MESSAGE_EVENT:
        return None
    arg = data[1]
    if isinstance(arg, str):
        return arg.encode("utf-8")
    return dumps(arg)
