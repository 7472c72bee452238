"""The routing table: user -> platform -> connection uuids, plus the reverse maps.

Pure bookkeeping with no I/O; the server owns one and consults it per message.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Set, Tuple


class RoutingTable:
    """Which authenticated connection belongs to which (user, platform)."""

    __slots__ = ("_by_platform", "_by_user", "_owner")

    def __init__(self) -> None:
        self._by_user: Dict[str, Dict[str, Set[str]]] = {}
        self._by_platform: Dict[str, Set[str]] = {}
        self._owner: Dict[str, Tuple[str, str]] = {}

    def add(self, conn_id: str, user_id: str, platform: str) -> None:
        if conn_id in self._owner:
            self.remove(conn_id)
        self._by_user.setdefault(user_id, {}).setdefault(platform, set()).add(conn_id)
        self._by_platform.setdefault(platform, set()).add(conn_id)
        self._owner[conn_id] = (user_id, platform)

    def remove(self, conn_id: str) -> Optional[Tuple[str, str]]:
        """Forget a connection; returns its (user, platform) or None if unknown."""
        owner = self._owner.pop(conn_id, None)
        if owner is None:
            return None
        user_id, platform = owner
        platforms = self._by_user.get(user_id)
        if platforms is not None:
            conns = platforms.get(platform)
            if conns is not None:
                conns.discard(conn_id)
                if not conns:
                    del platforms[platform]
            if not platforms:
                del self._by_user[user_id]
        same_platform = self._by_platform.get(platform)
        if same_platform is not None:
            same_platform.discard(conn_id)
            if not same_platform:
                del self._by_platform[platform]
        return owner

    def first(self, user_id: str, platform: str) -> str:
        """The smallest uuid of a user's connections on a platform ("" when none): one
        stable name for them, without copying the set."""
        conns = self._by_user.get(user_id, {}).get(platform)
        return min(conns) if conns else ""

    def lookup(self, user_id: str, platform: Optional[str] = None) -> Set[str]:
        """Connections of a user, on one platform or on all of them (a new set)."""
        platforms = self._by_user.get(user_id)
        if not platforms:
            return set()
        if platform is not None:
            return set(platforms.get(platform, ()))
        out: Set[str] = set()
        for conns in platforms.values():
            out |= conns
        return out

    def on_platform(self, platform: str) -> Set[str]:
        return set(self._by_platform.get(platform, ()))

    def owner(self, conn_id: str) -> Optional[Tuple[str, str]]:
        return self._owner.get(conn_id)

    def user_platforms(self, user_id: str) -> Dict[str, Set[str]]:
        """A copy of ``{platform: {uuid}}`` for one user (empty when unknown)."""
        return {p: set(c) for p, c in self._by_user.get(user_id, {}).items()}

    def all_connections(self) -> Iterable[str]:
        return self._owner.keys()

    @property
    def user_count(self) -> int:
        return len(self._by_user)

    @property
    def connection_count(self) -> int:
        return len(self._owner)

    def users(self) -> Dict[str, Dict[str, Set[str]]]:
        """A deep copy of the user map (for stats and debugging)."""
        return {u: {p: set(c) for p, c in ps.items()} for u, ps in self._by_user.items()}

    def platforms(self) -> Dict[str, int]:
        return {p: len(c) for p, c in self._by_platform.items()}
