"""What the server keeps per accepted connection."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ..transport.base import ServerConnection


class Peer:
    """An authenticated connection: its identity, user and transport handle."""

    __slots__ = (
        "api_key", "conn", "connected_at", "key_label", "metadata", "platform", "user_id",
        "uuid", "warned",
    )

    def __init__(
        self, uuid: str, api_key: str, platform: str, user_id: str,
        metadata: Dict[str, Any], key_label: str, connected_at: float,
    ) -> None:
        self.uuid = uuid
        self.api_key = api_key
        self.platform = platform
        self.user_id = user_id
        self.metadata = metadata
        self.key_label = key_label
        self.connected_at = connected_at
        self.conn: Optional[ServerConnection] = None
        self.warned = False

    def info(self) -> Dict[str, Any]:
        """A snapshot safe to print: no secret, only the key's fingerprint."""
        return {
            "uuid": self.uuid,
            "user_id": self.user_id,
            "platform": self.platform,
            "api_key": self.key_label,
            "client_ip": self.metadata.get("client_ip", "unknown"),
            "connected_at": self.connected_at,
        }
