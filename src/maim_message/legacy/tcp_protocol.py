"""Sans-I/O state machines of a legacy TCP connection (wire §2.4), one per role.

Feed received bytes with ``receive_data``; act on the returned events. No sockets, no
asyncio: the shells in ``tcp_server`` / ``tcp_client`` do the I/O.

Server:  AWAIT_HANDSHAKE -> AWAIT_REGISTRATION -> OPEN   (CLOSED on any fatal error)
Client:  (start) AWAIT_HANDSHAKE -> OPEN                 (registration sent on entry)
"""

from __future__ import annotations

import enum
from typing import Any, List, NamedTuple, Optional, Union

from cryptography.exceptions import InvalidTag

from .crypto import PUBLIC_KEY_SIZE, CryptoSession, ReplayError
from .tcp_framing import DEFAULT_MAX_FRAME, FrameDecoder, FrameError, FrameType, encode_frame

__all__ = [
    "HEARTBEAT_FRAME",
    "Dropped",
    "Established",
    "Fatal",
    "Heartbeat",
    "Outgoing",
    "Received",
    "Registration",
    "State",
    "TcpClientProtocol",
    "TcpServerProtocol",
]

HEARTBEAT_FRAME = encode_frame(FrameType.HEARTBEAT, b"")


class State(enum.Enum):
    AWAIT_HANDSHAKE = "await_handshake"
    AWAIT_REGISTRATION = "await_registration"
    OPEN = "open"
    CLOSED = "closed"


class Outgoing(NamedTuple):
    """Bytes the shell must write."""

    data: bytes


class Registration(NamedTuple):
    """Server: the client registered; the shell checks the token and accepts or closes."""

    platform: str
    token: Optional[str]


class Established(NamedTuple):
    """Client: handshake done, registration frame queued."""


class Received(NamedTuple):
    value: Any


class Heartbeat(NamedTuple):
    pass


class Dropped(NamedTuple):
    """A frame was discarded (bad tag, replayed sequence, not JSON); connection stays."""

    reason: str


class Fatal(NamedTuple):
    """Protocol violation: the shell must close the connection (silently, as 0.6.8)."""

    reason: str


Event = Union[Outgoing, Registration, Established, Received, Heartbeat, Dropped, Fatal]


class _Base:
    def __init__(self, crypto: Optional[CryptoSession], max_frame: int) -> None:
        self.crypto = crypto or CryptoSession()
        self.decoder = FrameDecoder(max_frame)
        self.state = State.AWAIT_HANDSHAKE

    def receive_data(self, data: bytes) -> List[Event]:
        if self.state is State.CLOSED:
            return []
        try:
            frames = self.decoder.feed(data)
        except FrameError as exc:
            return self._fatal(str(exc))
        events: List[Event] = []
        for ftype, payload in frames:
            self._on_frame(ftype, payload, events)
            if self.state is State.CLOSED:
                break
        return events

    def _fatal(self, reason: str, events: Optional[List[Event]] = None) -> List[Event]:
        self.state = State.CLOSED
        out = events if events is not None else []
        out.append(Fatal(reason))
        return out

    def _decrypt(self, payload: bytes, events: List[Event]) -> Any:
        """Decrypted value, or ``_DROP`` after appending a ``Dropped`` event."""
        try:
            return self.crypto.decrypt(payload)
        except InvalidTag:
            events.append(Dropped("authentication tag mismatch"))
        except ReplayError as exc:
            events.append(Dropped(str(exc)))
        except (FrameError, ValueError) as exc:
            events.append(Dropped(f"undecodable data frame: {exc}"))
        return _DROP

    def _on_frame(self, ftype: int, payload: bytes, events: List[Event]) -> None:
        raise NotImplementedError

    _ANSWERS_HEARTBEAT = False  # the server echoes a client's heartbeat, the client does not

    def _open_frame(self, ftype: int, payload: bytes, events: List[Event]) -> None:
        """A frame after the handshake: data, heartbeat; other types are ignored (0.6.8)."""
        if ftype == FrameType.DATA:
            value = self._decrypt(payload, events)
            if value is not _DROP:
                events.append(Received(value))
        elif ftype == FrameType.HEARTBEAT:
            events.append(Heartbeat())
            if self._ANSWERS_HEARTBEAT:
                events.append(Outgoing(HEARTBEAT_FRAME))

    def encrypt(self, value: Any) -> bytes:
        return self.crypto.encrypt(value)

    def encrypt_bytes(self, data: bytes) -> bytes:
        return self.crypto.encrypt_bytes(data)


_DROP = object()


class TcpServerProtocol(_Base):
    _ANSWERS_HEARTBEAT = True

    def __init__(
        self, crypto: Optional[CryptoSession] = None, max_frame: int = DEFAULT_MAX_FRAME
    ) -> None:
        super().__init__(crypto, max_frame)
        self.platform: Optional[str] = None

    def _on_frame(self, ftype: int, payload: bytes, events: List[Event]) -> None:
        state = self.state
        if state is State.OPEN:
            self._open_frame(ftype, payload, events)
            return
        if state is State.AWAIT_HANDSHAKE:
            if ftype != FrameType.HANDSHAKE_REQUEST:
                self._fatal(f"expected handshake frame, got type {ftype}", events)
                return
            if len(payload) != PUBLIC_KEY_SIZE:
                self._fatal("handshake public key must be 32 bytes", events)
                return
            try:
                self.crypto.establish(payload)
            except ValueError as exc:
                self._fatal(f"bad public key: {exc}", events)
                return
            events.append(Outgoing(self.crypto.handshake_frame()))
            self.state = State.AWAIT_REGISTRATION
            return
        if state is State.AWAIT_REGISTRATION:
            if ftype != FrameType.DATA:
                self._fatal(f"expected registration data frame, got type {ftype}", events)
                return
            value = self._decrypt(payload, events)
            if value is _DROP:
                self._fatal("registration frame could not be decrypted", events)
                return
            platform = value.get("platform") if isinstance(value, dict) else None
            if platform is None:
                self._fatal("registration without platform", events)
                return
            token = value.get("token")
            self.platform = str(platform)
            self.state = State.OPEN
            events.append(Registration(self.platform, token if isinstance(token, str) else None))


class TcpClientProtocol(_Base):
    def __init__(
        self,
        platform: str,
        token: Optional[str] = None,
        crypto: Optional[CryptoSession] = None,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        super().__init__(crypto, max_frame)
        self.platform = platform
        self.token = token

    def start(self) -> bytes:
        """The client's first bytes: its handshake frame."""
        return self.crypto.handshake_frame()

    def registration(self) -> dict:
        info = {"platform": self.platform}
        if self.token:
            info["token"] = self.token
        return info

    def _on_frame(self, ftype: int, payload: bytes, events: List[Event]) -> None:
        if self.state is State.OPEN:
            self._open_frame(ftype, payload, events)
            return
        # AWAIT_HANDSHAKE: 0.6.8 servers answer with type 1; accept the defined type 2 too
        if ftype not in (FrameType.HANDSHAKE_REQUEST, FrameType.HANDSHAKE_RESPONSE):
            self._fatal(f"expected handshake reply, got type {ftype}", events)
            return
        try:
            self.crypto.establish(payload)
        except (ValueError, FrameError) as exc:
            self._fatal(f"bad server public key: {exc}", events)
            return
        self.state = State.OPEN
        events.append(Outgoing(self.crypto.encrypt(self.registration())))
        events.append(Established())
