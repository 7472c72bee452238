"""Socket-free stand-ins for unit tests of the delivery and cluster layers."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from maim_message.core.routing import RoutingTable
from maim_message.server.config import ServerConfig
from maim_message.server.delivery import Delivery
from maim_message.server.peer import Peer


def frame_payload(data: bytes) -> bytes:
    """The payload of one unmasked server text frame."""
    size = data[1] & 0x7F
    start = 2
    if size == 126:
        start = 4
    elif size == 127:
        start = 10
    return data[start:]


class FakeConnection:
    """Records what the server writes; ``writable`` can be switched off (backpressure)."""

    def __init__(self, uuid: str) -> None:
        self.context: Any = None
        self.uuid = uuid
        self.is_open = True
        self.is_writable = True
        self.client_ip = "127.0.0.1"
        self.frames: List[bytes] = []
        self.closed: Optional[int] = None

    def send_raw(self, frame: Any, body: bytes = b"") -> bool:
        if not isinstance(frame, (bytes, bytearray, memoryview)):  # a prepared frame object
            frame = bytes(frame)
        self.frames.append(bytes(frame) + bytes(body))
        return True

    def send_prepared(self, frame: Any) -> bool:
        self.frames.append(bytes(frame))
        return True

    def send_text(self, payload: bytes) -> bool:
        self.frames.append(b"\x81\x7e" + len(payload).to_bytes(2, "big") + payload)
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = code
        self.is_open = False

    def write_buffer_size(self) -> int:
        return 0


def make_peer(uuid: str, user: str, platform: str = "qq", resumable: bool = True) -> Peer:
    peer = Peer(uuid, f"key-{user}", platform, user, {"client_ip": "127.0.0.1"}, "fp",
                0.0)
    peer.resumable = resumable
    conn = FakeConnection(uuid)
    conn.context = peer
    peer.conn = conn  # type: ignore[assignment]
    return peer


def conn_of(peer: Peer) -> FakeConnection:
    assert isinstance(peer.conn, FakeConnection)
    return peer.conn


class FakeHost:
    """What a cluster backend needs from a server (routes, peers, delivery), no sockets."""

    def __init__(self, **config: Any) -> None:
        self.routes = RoutingTable()
        self.peers: Dict[str, Peer] = {}
        self.stats: Dict[str, Any] = {"messages_sent": 0, "bytes_sent": 0}
        self.delivery = Delivery(ServerConfig(**config), self.peers, self.stats)
        self.cluster: Any = None

    def open(self, peer: Peer) -> Peer:
        self.peers[peer.uuid] = peer
        self.routes.add(peer.uuid, peer.user_id, peer.platform)
        self.cluster.connection_opened(peer)
        return peer

    def close(self, peer: Peer) -> None:
        del self.peers[peer.uuid]
        self.routes.remove(peer.uuid)
        conn_of(peer).is_open = False
        self.cluster.connection_closed(peer)

    def ack(self, peer: Peer, msg_id: str) -> None:
        self.delivery.acked(peer, msg_id)
