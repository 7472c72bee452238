"""The legacy dialect's routing by platform, whatever carries its frames.

0.6.8's ``MessageServer`` keeps one connection per platform (the ``platform`` header, or
the TCP registration); ``"unknown"`` connections are reachable by broadcast only. A frame
is one JSON value handed to the message handlers. :class:`PlatformRouter` owns exactly
that, on top of :class:`Peer` objects that any framing provides (the WebSocket app in
``ws_app``, the encrypted TCP server in ``tcp_server``, a Socket.IO namespace later).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Generic, Iterable, List, Optional, Set, TypeVar

try:  # Python >= 3.8
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore[assignment]

from ..core.codec import loads_compat
from .logsupport import Log, encoded_or_logged

__all__ = ["CLOSE_REPLACED", "CLOSE_SHUTDOWN", "UNKNOWN_PLATFORM", "Peer", "PlatformRouter",
           "PlatformTable", "TokenAuth"]

UNKNOWN_PLATFORM = "unknown"
#: close reasons of 0.6.8 (kept verbatim: peers may log or match them)
CLOSE_REPLACED = "新的连接已建立"
CLOSE_SHUTDOWN = "服务器关闭"

Deliver = Callable[[Any], None]


class TokenAuth:
    """Tokens accepted when ``enabled``; with auth off every token is valid."""

    __slots__ = ("enabled", "valid_tokens")

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = bool(enabled)
        self.valid_tokens: Set[str] = set()

    def verify(self, token: Optional[str]) -> bool:
        if not self.enabled:
            return True
        return isinstance(token, str) and token in self.valid_tokens

    def add(self, token: str) -> None:
        self.valid_tokens.add(token)

    def remove(self, token: str) -> None:
        self.valid_tokens.discard(token)


class Peer(Protocol):
    """One accepted client connection, whatever the framing."""

    platform: str

    @property
    def is_open(self) -> bool: ...

    def send_json(self, data: bytes) -> bool:
        """Queue one encoded JSON value (UTF-8); False when the connection is gone."""
        ...

    async def drained(self) -> None:
        """Return once the connection takes more data (backpressure for senders)."""

    def close(self, code: int = 1000, reason: str = "") -> None: ...


P = TypeVar("P", bound=Peer)


class PlatformTable(Generic[P]):
    """Active peers plus the routing map ``platform -> newest peer``."""

    __slots__ = ("_by_platform", "active")

    def __init__(self) -> None:
        self.active: Set[P] = set()
        self._by_platform: Dict[str, P] = {}

    def add(self, peer: P) -> Optional[P]:
        """Register ``peer``; returns the peer it displaced for that platform, if any."""
        self.active.add(peer)
        if peer.platform == UNKNOWN_PLATFORM:
            return None
        previous = self._by_platform.get(peer.platform)
        self._by_platform[peer.platform] = peer
        return previous if previous is not peer else None

    def remove(self, peer: P) -> None:
        """Forget ``peer``; the routing entry goes only if it still points at this peer."""
        self.active.discard(peer)
        if self._by_platform.get(peer.platform) is peer:
            del self._by_platform[peer.platform]

    def get(self, platform: str) -> Optional[P]:
        return self._by_platform.get(platform)

    def platforms(self) -> List[str]:
        return list(self._by_platform)

    def by_platform(self) -> Dict[str, P]:
        """A copy of the routing map."""
        return dict(self._by_platform)

    def peers(self) -> Iterable[P]:
        return list(self.active)

    def clear(self) -> None:
        self.active.clear()
        self._by_platform.clear()

    def __len__(self) -> int:
        return len(self.active)


class PlatformRouter(Generic[P]):
    """Tokens, the platform table, frames in, send and broadcast out.

    Also ``MessageServer.connection`` (0.6.8 code reached into it for these names).
    A message is encoded once per call, whatever the number of destinations.
    """

    def __init__(self, deliver: Deliver, auth: TokenAuth, log: Log) -> None:
        self._deliver = deliver
        self.auth = auth
        self._log = log
        self.table: PlatformTable[P] = PlatformTable()
        self._running = False

    # -- 0.6.8 names ---------------------------------------------------------------------
    @property
    def enable_token(self) -> bool:
        return self.auth.enabled

    @property
    def valid_tokens(self) -> Set[str]:
        return self.auth.valid_tokens

    async def verify_token(self, token: Optional[str]) -> bool:
        return self.auth.verify(token)

    def add_valid_token(self, token: str) -> None:
        self.auth.add(token)

    def remove_valid_token(self, token: str) -> None:
        self.auth.remove(token)

    def connected_platforms(self) -> List[str]:
        """Platforms that currently have a routable connection."""
        return self.table.platforms()

    # 0.6.8's attributes, read-only snapshots (bot cores read them to list platforms):
    # ws mode had ``platform_websockets``/``active_websockets``, tcp mode
    # ``platform_connections``/``active_connections``; both names work in both modes, the
    # values being this package's connection objects.
    @property
    def platform_websockets(self) -> Dict[str, P]:
        return self.table.by_platform()

    @property
    def platform_connections(self) -> Dict[str, P]:
        return self.table.by_platform()

    @property
    def active_websockets(self) -> Set[P]:
        return set(self.table.peers())

    @property
    def active_connections(self) -> Set[P]:
        return set(self.table.peers())

    # -- connections ---------------------------------------------------------------------
    def attach(self, peer: P, *, close_displaced: bool = True) -> None:
        """Route ``peer``'s platform to it; the displaced connection is closed (ws), or
        kept open but unroutable (tcp, as in 0.6.8)."""
        previous = self.table.add(peer)
        if previous is not None and close_displaced:
            self._log.info("platform %r reconnected; closing its previous connection",
                           peer.platform)
            previous.close(1000, CLOSE_REPLACED)

    def detach(self, peer: P) -> None:
        self.table.remove(peer)

    def frame_received(self, peer: P, data: Any) -> None:
        """One frame: a JSON value for the handlers (invalid JSON is logged and skipped)."""
        try:
            value = loads_compat(data)
        except ValueError as exc:
            self._log.warning("platform %r sent invalid JSON: %s", peer.platform, exc)
            return
        self._deliver(value)

    async def disconnect(self, platform: str, code: int = 1000, reason: str = "") -> bool:
        """Close the connection of ``platform`` (the client will reconnect)."""
        peer = self.table.get(platform)
        if peer is None:
            return False
        self.table.remove(peer)
        peer.close(code, reason)
        return True

    def close_all(self, code: int, reason: str) -> None:
        peers = self.table.peers()
        self.table.clear()
        for peer in peers:
            peer.close(code, reason)

    # -- sending -------------------------------------------------------------------------
    async def send_message(self, target: str, message: Any) -> bool:
        peer = self.table.get(target)
        if peer is None:
            self._log.warning("no connection for platform %r", target)
            return False
        if not peer.is_open:
            self.table.remove(peer)
            self._log.warning("connection of platform %r is closed", target)
            return False
        data = encoded_or_logged(message, self._log)
        if data is None:
            return False
        if not peer.send_json(data):
            self._log.warning("sending to platform %r failed: connection closed", target)
            self.table.remove(peer)
            return False
        await peer.drained()
        return True

    async def broadcast_message(self, message: Any) -> None:
        peers = [p for p in self.table.peers() if p.is_open]
        if not peers:
            return
        data = encoded_or_logged(message, self._log)
        if data is None:
            return
        for peer in peers:
            if not peer.send_json(data):
                self._log.warning("broadcast to platform %r failed: connection closed",
                                  peer.platform)
                self.table.remove(peer)
        for peer in peers:
            await peer.drained()
