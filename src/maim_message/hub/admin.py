"""The admin plane's operations: list connections, disconnect, revoke keys, outboxes.

Plain methods over the hub's :class:`WebSocketServer` (its public ``peers``, ``delivery``
and ``close_connection``); the HTTP layer (:mod:`.http`) only checks the token and maps
requests onto them. Answers carry user ids, platforms and key fingerprints, never a key.
In cluster mode they cover this node's connections and outbox cache only.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import orjson

from ..core.outbox import Outbox, Pair
from ..core.redact import log_safe
from ..errors import MaimMessageError
from ..server.peer import Peer
from ..sio.socket import SioSocket

if TYPE_CHECKING:
    from .runner import Hub

logger = logging.getLogger("maim_message.hub.admin")

# Close codes the admin plane uses (application range 4000-4999; 4000 is "replaced").
ADMIN_DISCONNECT = 4001  # a kick: the client may reconnect
KEY_REVOKED = 4003  # the key is no longer valid here: reconnecting gets HTTP 403
PREVIEW = 200  # characters of a queued message shown by ``outbox``


class AdminError(MaimMessageError):
    """A request the admin plane cannot do; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _segment_text(seg: Any) -> str:
    if not isinstance(seg, dict):
        return ""
    data = seg.get("data")
    if seg.get("type") == "seglist" and isinstance(data, list):
        return " ".join(_segment_text(s) for s in data)
    return str(data) if seg.get("type") == "text" else f"[{seg.get('type')}]"


def preview(payload: bytes) -> str:
    """What a queued envelope carries, in a few words (its text, or its type)."""
    try:
        env = orjson.loads(payload)
        body = env.get("payload")
        if env.get("type") == "sys_std" and isinstance(body, dict):
            text = _segment_text(body.get("message_segment"))
        else:
            text = f"{env.get('type')}: {orjson.dumps(body).decode('utf-8')}"
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        text = bytes(payload[:PREVIEW]).decode("utf-8", "replace")
    return text[:PREVIEW]


def _generation(peer: Peer) -> str:
    """The wire generation the connection speaks: 0.7 (Socket.IO) or 0.6 (raw WebSocket)."""
    return "0.7" if isinstance(peer.conn, SioSocket) else "0.6"


class AdminPlane:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    # -- connections ------------------------------------------------------------------------

    def connections(self) -> List[Dict[str, Any]]:
        """One row per live connection of this node, oldest first."""
        outbox = self._outbox()
        rows = []
        for peer in sorted(self.hub.server.peers.values(), key=lambda p: p.connected_at):
            rows.append({
                "uuid": peer.uuid,
                "user": peer.user_label,
                "platform": peer.platform,
                "key": peer.key_label,
                "remote": peer.metadata.get("client_ip") or "unknown",
                "generation": _generation(peer),
                "connected_at": peer.connected_at,
                "messages_in": peer.messages_in,
                "messages_out": peer.messages_out,
                "outbox_depth": outbox.depth(peer.pair) if outbox is not None else 0,
            })
        return rows

    def disconnect(self, uuid: Optional[str] = None, user: Optional[str] = None) -> List[str]:
        """Close one connection (``uuid``) or every connection of ``user`` with 4001."""
        if not uuid and not user:
            raise AdminError(400, "give 'uuid' or 'user'")
        peers = self.hub.server.peers
        if uuid:
            targets = [uuid] if uuid in peers else []
        else:
            targets = [u for u, p in peers.items() if user in (p.user_id, p.user_label)]
        if not targets:
            raise AdminError(404, "no such connection")
        for target in targets:
            peer = peers[target]
            logger.info("admin: disconnecting %s", log_safe(target), extra=peer.log_fields())
            self.hub.server.close_connection(target, ADMIN_DISCONNECT,
                                             "disconnected by an administrator")
        return targets

    # -- keys -------------------------------------------------------------------------------

    def keys(self) -> List[Dict[str, Any]]:
        hub = self.hub
        return [
            {"key": e.label, "user": e.user, "platforms": list(e.platforms),
             "forward_to": e.forward_to, "source": e.source,
             "hashed": bool(e.key_sha256), "revoked": e.digest in hub.revoked}
            for e in hub.keys.entries
        ]

    def revoke(self, label: str) -> Dict[str, Any]:
        """Refuse key ``label`` (its fingerprint) from now on and close its connections (4003).

        Lasts until the hub restarts; a reload does not bring the key back. Remove it from
        the configuration too.
        """
        entries = self.hub.keys.by_label(label) if label else []
        if not entries:
            raise AdminError(404, "no configured key has this fingerprint")
        for entry in entries:
            self.hub.revoked.add(entry.digest)
        closed = self.close_key(label, "API key revoked")
        logger.warning("admin: key %s revoked (%d connection(s) closed)", label, len(closed),
                       extra={"key_fingerprint": label, "close_code": KEY_REVOKED})
        return {"key": label, "closed": closed}

    def close_key(self, label: str, reason: str) -> List[str]:
        server = self.hub.server
        closed = [u for u, p in server.peers.items() if p.key_label == label]
        for uuid in closed:
            server.close_connection(uuid, KEY_REVOKED, reason)
        return closed

    # -- outboxes ---------------------------------------------------------------------------

    def _outbox(self) -> Optional[Outbox]:
        return self.hub.server.delivery.outbox

    def outboxes(self) -> List[Dict[str, Any]]:
        """Every (user, platform) with unacked messages: depth, bytes, oldest age."""
        outbox = self._outbox()
        if outbox is None:
            return []
        now = time.time()
        rows = []
        for (user, platform), queue in sorted(outbox.pairs.items()):
            oldest = next(iter(queue.entries.values()), None)
            rows.append({"user": user, "platform": platform, "depth": len(queue.entries),
                         "bytes": queue.bytes,
                         "oldest_age": round(now - oldest.created, 3) if oldest else 0.0})
        return rows

    def outbox(self, user: str, platform: str) -> Dict[str, Any]:
        """The pair's queued messages, oldest first (id, age, size, a short preview)."""
        outbox = self._outbox()
        pair: Pair = (user, platform)
        if outbox is None or pair not in outbox.pairs:
            return {"user": user, "platform": platform, "depth": 0, "messages": []}
        now = time.time()
        messages = [
            {"msg_id": e.msg_id, "seq": e.seq, "age": round(now - e.created, 3),
             "bytes": len(e.payload),
             "preview": preview(e.payload)}
            for e in outbox.pairs[pair].entries.values()
        ]
        return {"user": user, "platform": platform, "depth": len(messages),
                "messages": messages}

    def drain(self, user: str, platform: str) -> int:
        """Drop every queued message of the pair (they will not be delivered)."""
        if not user or not platform:
            raise AdminError(400, "give 'user' and 'platform'")
        outbox = self._outbox()
        pair: Pair = (user, platform)
        if outbox is None or pair not in outbox.pairs:
            return 0
        dropped = outbox.drop_through(pair, outbox.last_seq(pair))
        safe_user, safe_platform = log_safe(user), log_safe(platform)
        logger.warning("admin: drained %d message(s) of user=%s platform=%s", dropped,
                       safe_user, safe_platform,
                       extra={"user": safe_user, "platform": safe_platform})
        return dropped
