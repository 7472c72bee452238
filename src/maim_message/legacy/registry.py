"""Server-side bookkeeping shared by every legacy server transport (ws, ASGI, tcp):
token store and the platform -> connection table (wire §2.1: one connection per platform,
``"unknown"`` connections are reachable by broadcast only).
"""

from __future__ import annotations

from typing import Dict, Generic, Iterable, List, Optional, Set, TypeVar

try:  # Python >= 3.8
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore[assignment]

__all__ = ["UNKNOWN_PLATFORM", "Peer", "PlatformTable", "TokenAuth"]

UNKNOWN_PLATFORM = "unknown"


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
    """One accepted client connection, whatever the transport."""

    platform: str

    @property
    def is_open(self) -> bool: ...

    async def send_json(self, data: bytes) -> None:
        """Send one already-encoded JSON value (UTF-8 bytes)."""

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


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

    def peers(self) -> Iterable[P]:
        return list(self.active)

    def clear(self) -> None:
        self.active.clear()
        self._by_platform.clear()

    def __len__(self) -> int:
        return len(self.active)
