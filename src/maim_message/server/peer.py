"""What the server keeps per accepted connection."""

from __future__ import annotations

from typing import Any, Dict, Optional, Set

from ..core.limits import TokenBucket
from ..core.redact import log_safe
from ..transport.base import ServerConnection


class Peer:
    """An authenticated connection: its identity, user and transport handle."""

    __slots__ = (
        "__weakref__", "ack_template", "api_key", "bucket", "conn", "connected_at", "counted",
        "cursor", "key_label", "log_label", "messages_in", "messages_out", "metadata", "pair",
        "platform", "platform_label", "resumable", "user_id", "user_label", "uuid", "uuid_label",
        "warned",
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
        # (reason) pairs already logged at WARNING for this connection: repeats go to DEBUG
        self.warned: Set[str] = set()
        # Labels for logs: every request-derived value escaped once, here (no forged lines)
        self.uuid_label = log_safe(uuid)
        self.platform_label = log_safe(platform)
        # the user id, or the key's fingerprint when the id is the API key (the spec's own
        # example uses ``on_auth_extract_user=lambda m: m["api_key"]``)
        self.user_label = key_label if user_id == api_key else log_safe(user_id)
        # how the transport names this connection in its own log lines (slow consumers)
        self.log_label = f"{self.uuid_label} key={key_label}"
        self.bucket: Optional[TokenBucket] = None  # per-connection rate limit, if any
        self.counted = False  # counted in the per-key connection limit
        self.pair = (user_id, platform)
        self.cursor = 0  # outbox sequence number last written to this connection
        # Sent its own x-uuid, as maim_message clients (ours and 0.6.8) do: it speaks the
        # envelope protocol and acks, so unacked messages are re-sent to it on reconnect.
        self.resumable = False
        self.messages_in = 0  # frames other than acks received (admin listing)
        self.messages_out = 0  # messages written to this connection (admin listing)
        self.ack_template: Optional[bytes] = None  # this connection's sys_ack template

    def log_fields(self) -> Dict[str, Any]:
        """``extra=`` for log records (structured logs): no secret, only the fingerprint."""
        return {"uuid": self.uuid_label, "user": self.user_label, "platform": self.platform_label,
                "key_fingerprint": self.key_label}

    def info(self) -> Dict[str, Any]:
        """A snapshot safe to print: no secret, only the key's fingerprint."""
        return {
            "uuid": self.uuid,
            "user_id": self.user_label,
            "platform": self.platform,
            "api_key": self.key_label,
            "client_ip": self.metadata.get("client_ip", "unknown"),
            "connected_at": self.connected_at,
        }
