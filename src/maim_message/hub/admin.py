"""The admin plane's operations: list connections, disconnect, revoke keys, outboxes.

Plain methods over the hub's :class:`WebSocketServer` (its public ``peers``, ``delivery``
and ``close_connection``); the HTTP layer (:mod:`.http`) only checks the token and maps
requests onto them. Answers carry user ids, platforms and key fingerprints, never a key.

In cluster mode the actions that change who may connect (revoke, disconnect, reload)
reach every node through the cluster (``ClusterBackend.admin``; :meth:`AdminPlane.apply`
runs them on the others), and a revocation is kept in the cluster's store, so a node
that restarts or joins later refuses the key too. Listings and outbox calls cover this
node only.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import orjson

from ..backends.cluster_base import admin_everywhere
from ..core.outbox import Outbox, Pair
from ..core.redact import log_safe
from ..errors import MaimMessageError
from ..server.peer import Peer
from ..sio.socket import SioSocket
from .key_config import is_sha256_hex
from .settings import key_digest

if TYPE_CHECKING:
    from .runner import Hub

logger = logging.getLogger("maim_message.hub.admin")

# Close codes the admin plane uses (application range 4000-4999; 4000 is "replaced").
ADMIN_DISCONNECT = 4001  # a kick: the client may reconnect
KEY_REVOKED = 4003  # the key is no longer valid here: reconnecting gets HTTP 403
# admin actions other cluster nodes apply (AdminMessage.action)
REVOKE, DISCONNECT, RELOAD = "revoke", "disconnect", "reload"
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

    async def disconnect(self, uuid: Optional[str] = None,
                         user: Optional[str] = None) -> List[str]:
        """Close one connection (``uuid``) or every connection of ``user`` with 4001, on
        every node; the uuids closed here and those other nodes show in their presence."""
        if not uuid and not user:
            raise AdminError(400, "give 'uuid' or 'user'")
        targets = self._disconnect_here(uuid, user)
        cluster = self.hub.server.cluster
        if cluster.distributed:
            refresh = getattr(cluster, "refresh", None)
            if refresh is not None:  # read before the others close (and forget) them
                await refresh()
            for other, info in cluster.connections().items():
                if other not in targets and info.get("node") != cluster.node_id and (
                        other == uuid if uuid else info.get("user_id") == user):
                    targets.append(other)
            await admin_everywhere(cluster, DISCONNECT, {"uuid": uuid or "", "user": user or ""})
        if not targets:
            raise AdminError(404, "no such connection")
        return targets

    def _disconnect_here(self, uuid: Optional[str], user: Optional[str]) -> List[str]:
        peers = self.hub.server.peers
        if uuid:
            targets = [uuid] if uuid in peers else []
        else:
            targets = [u for u, p in peers.items() if user in (p.user_id, p.user_label)]
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

    async def revoke(self, label: str) -> Dict[str, Any]:
        """Refuse key ``label`` (its fingerprint) from now on and close its connections
        (4003), on every node. Kept in ``[admin] revoked_file`` and, in cluster mode, in
        the cluster's store: it outlives restarts and reloads (remove the key from the
        configuration too)."""
        entries = self.hub.keys.by_label(label) if label else []
        if not entries:
            raise AdminError(404, "no configured key has this fingerprint")
        closed: List[str] = []
        cluster = self.hub.server.cluster
        told = False
        for digest in sorted({e.digest for e in entries}):
            closed += self._revoke_here(digest, label)
            told = await admin_everywhere(cluster, REVOKE, {"key_sha256": digest.hex(),
                                                            "key": label}, durable=True)
        kept = [name for name, yes in (("file", bool(self.hub.revoked_file.path)),
                                       ("cluster", told and cluster.distributed)) if yes]
        logger.warning("admin: key %s revoked (%d connection(s) closed here; kept in: %s)",
                       label, len(closed), ", ".join(kept) or "memory only, until restart",
                       extra={"key_fingerprint": label, "close_code": KEY_REVOKED})
        return {"key": label, "closed": closed, "kept": kept}

    def _revoke_here(self, digest: bytes, label: str) -> List[str]:
        """Refuse the key with this SHA-256 on this node and close its connections."""
        hub = self.hub
        if digest not in hub.revoked:
            hub.revoked.add(digest)
            hub.revoked_file.add(digest, label)
        hub.server.invalidate_auth()  # a Socket.IO session between handshake and CONNECT
        server = hub.server
        label = "key#" + digest.hex()[:8]  # a key's fingerprint is its digest's start
        closed = [u for u, p in server.peers.items()
                  if p.key_label == label and key_digest(p.api_key) == digest]
        for uuid in closed:
            server.close_connection(uuid, KEY_REVOKED, "API key revoked")
        return closed

    # -- actions from other nodes -----------------------------------------------------------

    def apply(self, action: str, args: Dict[str, str]) -> None:
        """An admin action another node took (or a kept one, when this node starts)."""
        if action == REVOKE:
            digest_hex = args.get("key_sha256", "")
            if is_sha256_hex(digest_hex):
                closed = self._revoke_here(bytes.fromhex(digest_hex), args.get("key", ""))
                if closed:
                    logger.warning("admin (another node): key %s revoked, %d connection(s) "
                                   "closed here", log_safe(args.get("key", "")), len(closed))
        elif action == DISCONNECT:
            self._disconnect_here(args.get("uuid") or None, args.get("user") or None)
        elif action == RELOAD:
            self.hub.reload()
        else:
            logger.warning("admin: unknown action %s from another node", log_safe(action))

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

    def _streams(self) -> Any:
        """The cluster backend when it keeps queues in streams (None: not in cluster mode)."""
        cluster = self.hub.server.cluster
        return cluster if hasattr(cluster, "stored") else None

    async def outbox(self, user: str, platform: str) -> Dict[str, Any]:
        """The pair's queued messages, oldest first (id, age, size, a short preview). In
        cluster mode a pair not connected here is read from its stream in Redis."""
        outbox = self._outbox()
        pair: Pair = (user, platform)
        streams = self._streams()
        if (outbox is None or pair not in outbox.pairs) and streams is not None and user \
                and platform:
            now_ms = time.time() * 1000
            messages = [
                {"msg_id": msg_id, "stream_id": sid,
                 "age": round(max(0.0, now_ms - int(sid.split("-")[0])) / 1000, 3),
                 "bytes": len(payload), "preview": preview(payload)}
                for sid, msg_id, payload in await streams.stored(pair)]
            return {"user": user, "platform": platform, "depth": len(messages),
                    "messages": messages, "source": "cluster stream"}
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

    async def drain(self, user: str, platform: str) -> int:
        """Drop every queued message of the pair (they will not be delivered). In cluster
        mode a pair not connected here is drained in its stream in Redis."""
        if not user or not platform:
            raise AdminError(400, "give 'user' and 'platform'")
        outbox, streams = self._outbox(), self._streams()
        pair: Pair = (user, platform)
        if outbox is not None and pair in outbox.pairs:
            dropped = outbox.drop_through(pair, outbox.last_seq(pair))
        elif streams is not None:
            dropped = await streams.drop_stored(pair)
        else:
            return 0
        safe_user, safe_platform = log_safe(user), log_safe(platform)
        logger.warning("admin: drained %d message(s) of user=%s platform=%s", dropped,
                       safe_user, safe_platform,
                       extra={"user": safe_user, "platform": safe_platform})
        return dropped
