"""One Engine.IO v4 session on the server, with its Socket.IO namespace: no I/O.

The shell (``sio.server``) feeds packets in with :meth:`ServerSession.receive` (one
WebSocket text frame) or :meth:`ServerSession.receive_payload` (one polling POST body)
and acts on the returned events; what the session wants sent waits in ``queue`` until
the shell writes it (to the WebSocket once upgraded, else into the next polling GET).

States::

    POLLING --(2probe on a WebSocket)--> UPGRADING --(5)--> WEBSOCKET
       |  \\________________________________________________________/  |
       +-----------------------(1, 41, timeout, error)----------------> CLOSED

A session created by a direct WebSocket handshake starts in WEBSOCKET. The namespace
(``/`` only) is connected when the app accepted the client's CONNECT packet.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, List, NamedTuple, Optional, Union

from .packets import (
    EioType,
    PacketError,
    SioPacket,
    SioType,
    decode_eio,
    decode_sio,
    encode_eio,
    encode_sio,
    event_argument,
    message_body,
    message_frame,
    split_payload,
)

__all__ = [
    "Closed",
    "ConnectRequest",
    "Event",
    "Message",
    "ProbeAnswer",
    "ServerSession",
    "State",
    "Upgraded",
]

PROBE = b"probe"


class State(enum.Enum):
    POLLING = "polling"
    UPGRADING = "upgrading"  # probe answered on the WebSocket, polling still carries data
    WEBSOCKET = "websocket"
    CLOSED = "closed"


class ConnectRequest(NamedTuple):
    """The client asked to join namespace ``/``: the app answers with accept()/refuse()."""

    auth: Any


class Message(NamedTuple):
    """A ``"message"`` event: ``body`` is the JSON argument (an envelope) as bytes."""

    body: bytes
    ack_id: Optional[int]


class ProbeAnswer(NamedTuple):
    """Write ``data`` on the WebSocket that sent the probe (not into the queue)."""

    data: bytes


class Upgraded(NamedTuple):
    """The WebSocket carries the session from now on; answer a held poll with a noop."""


class Closed(NamedTuple):
    """The session is over (client close or disconnect, timeout, protocol error)."""

    reason: str


Event = Union[ConnectRequest, Message, ProbeAnswer, Upgraded, Closed]


class ServerSession:
    """Engine.IO session state, heartbeat bookkeeping and the Socket.IO namespace."""

    def __init__(self, sid: str, *, ping_interval: float, ping_timeout: float,
                 clock: Callable[[], float], websocket: bool = False) -> None:
        self.sid = sid
        self.state = State.WEBSOCKET if websocket else State.POLLING
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.queue: List[bytes] = []
        self.queued_bytes = 0
        self.namespace_connected = False
        self.namespace_refused = False
        self._clock = clock
        self.ping_sent_at = 0.0
        self.ping_unread = False  # the PING still waits in the queue: a PONG answers nothing
        self.last_ping = clock()

    @property
    def upgraded(self) -> bool:
        return self.state is State.WEBSOCKET

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    # -- sending ------------------------------------------------------------------------

    def send(self, packet: bytes) -> None:
        """Queue one Engine.IO packet for the shell to write."""
        if self.state is not State.CLOSED:
            self.queue.append(packet)
            self.queued_bytes += len(packet)

    def send_message(self, body: bytes) -> None:
        self.send(message_frame(body))

    def take(self) -> List[bytes]:
        """Everything queued, in order (the shell writes it now)."""
        out, self.queue = self.queue, []
        self.queued_bytes = 0
        self.ping_unread = False
        return out

    def accept(self, namespace_sid: str) -> None:
        """Answer the CONNECT: ``40{"sid":...}``."""
        self.namespace_connected = True
        self.send(encode_eio(EioType.MESSAGE, encode_sio(
            SioPacket(SioType.CONNECT, data={"sid": namespace_sid}))))

    def refuse(self, message: str) -> None:
        """Answer the CONNECT with ``44{"message":...}`` (the client gives up, readably)."""
        self.namespace_refused = True
        self.send(encode_eio(EioType.MESSAGE, encode_sio(
            SioPacket(SioType.CONNECT_ERROR, data={"message": message}))))

    def disconnect(self) -> None:
        """Socket.IO DISCONNECT (``41``): 0.7.5 clients never come back after it."""
        if self.namespace_connected:
            self.send(encode_eio(EioType.MESSAGE, encode_sio(SioPacket(SioType.DISCONNECT))))
        self.namespace_connected = False

    def close(self) -> None:
        self.state = State.CLOSED
        self.namespace_connected = False

    # -- heartbeat ------------------------------------------------------------------------

    def heartbeat(self) -> bool:
        """Called by the shell's sweep: queue a ping when due; False when the peer missed
        the last one (the shell then closes the session)."""
        if self.state is State.CLOSED:
            return False
        now = self._clock()
        if self.ping_sent_at:
            return now - self.ping_sent_at <= self.ping_timeout
        if now - self.last_ping >= self.ping_interval:
            self.ping_sent_at = self.last_ping = now
            self.send(encode_eio(EioType.PING))
            self.ping_unread = True
        return True

    # -- receiving ------------------------------------------------------------------------

    def receive_payload(self, body: bytes) -> List[Event]:
        """One polling POST body (packets separated by ``\\x1e``)."""
        events: List[Event] = []
        for packet in split_payload(body):
            events.extend(self.receive(packet, websocket=False))
            if self.state is State.CLOSED:
                break
        return events

    def receive(self, packet: bytes, websocket: bool = True) -> List[Event]:
        """One Engine.IO packet; a protocol error closes the session (Closed event)."""
        if self.state is State.CLOSED:
            return []
        body = message_body(packet)
        if body is not None and self.namespace_connected:  # the hot path
            return [Message(body, None)]
        try:
            kind, data = decode_eio(packet)
            if kind is EioType.MESSAGE:
                return self._sio(decode_sio(data))
        except (PacketError, ValueError) as exc:  # ValueError: a parse the checks missed
            self.close()
            return [Closed(f"protocol error: {exc}")]
        if kind is EioType.PONG:
            if not self.ping_unread:  # a client that never reads cannot keep itself alive
                self.ping_sent_at = 0.0
        elif kind is EioType.PING and websocket and data == PROBE:
            if self.state is State.POLLING:
                self.state = State.UPGRADING
            return [ProbeAnswer(encode_eio(EioType.PONG, PROBE))]
        elif kind is EioType.UPGRADE and websocket:
            if self.state is State.UPGRADING:
                self.state = State.WEBSOCKET
                return [Upgraded()]
        elif kind is EioType.CLOSE:
            self.close()
            return [Closed("client closed the session")]
        return []

    def _sio(self, packet: SioPacket) -> List[Event]:
        kind = packet.type
        if packet.namespace != "/":
            if kind is SioType.CONNECT:  # only "/" exists, as on a 0.7.5 server
                self.send(encode_eio(EioType.MESSAGE, encode_sio(SioPacket(
                    SioType.CONNECT_ERROR, packet.namespace, {"message": "Invalid namespace"}))))
            return []
        if kind is SioType.CONNECT:
            if self.namespace_connected or self.namespace_refused:
                return []
            return [ConnectRequest(packet.data)]
        if kind is SioType.DISCONNECT:
            self.close()
            return [Closed("client disconnected")]
        if kind is SioType.EVENT and self.namespace_connected:
            arg = event_argument(packet)
            if packet.ack_id is not None:  # maim has its own acks; answer the Socket.IO one
                self.send(encode_eio(EioType.MESSAGE, encode_sio(
                    SioPacket(SioType.ACK, data=[], ack_id=packet.ack_id))))
            if arg is not None:
                return [Message(arg, packet.ack_id)]
        return []
