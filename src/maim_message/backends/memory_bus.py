"""An in-process bus for :class:`~.pubsub_cluster.PubSubCluster`: a cluster in one process.

:class:`MemoryBus` plays the store and the channels (what Redis is for ``RedisCluster``);
each :class:`MemoryCluster` is one node on it. Messages cross the bus encoded, as they
cross Redis, so the message codec is exercised too. Meant for tests and for trying a
backend's behaviour without a server; it gives no durability and one process only.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Awaitable,
    Dict,
    List,
    Optional,
    Set,
    Tuple,
    Union,
)

from ..core.defaults import DEFAULT_OUTBOX
from .cluster_base import Pair
from .pubsub_cluster import PubSubCluster
from .pubsub_io import Presence, SendResult, StoredMessage
from .pubsub_messages import (
    AckMessage,
    AcksMessage,
    AdminMessage,
    ClusterMessage,
    FanoutMessage,
    PairMessage,
    encode_message,
    encode_pairs,
)

if TYPE_CHECKING:
    from ..server.acks import GatedFrame, Receipt
    from ..server.peer import Peer


class _Stream:
    __slots__ = ("entries", "waiting")

    def __init__(self) -> None:
        self.entries: OrderedDict[str, Tuple[str, bytes]] = OrderedDict()  # msg_id -> (sid, p)
        self.waiting: Dict[str, str] = {}  # msg_id -> origin node awaiting its ack


class MemoryBus:
    """Streams, routing, presence and channels shared by the nodes of one process."""

    def __init__(self) -> None:
        self.streams: Dict[Pair, _Stream] = {}
        self.where: Dict[Pair, Dict[str, str]] = {}  # pair -> uuid -> node
        self.presence: Dict[str, Dict[str, Dict[str, Any]]] = {}  # node -> uuid -> info
        self.members: Set[str] = set()
        self.channels: Dict[str, asyncio.Queue[bytes]] = {}
        self.frames: Set[str] = set()  # handled frames (frame_dedupe tokens)
        self.admin: Set[bytes] = set()  # admin actions kept for good
        self._last_id = (0, 0)

    def next_id(self) -> str:
        ms = int(time.time() * 1000)
        last_ms, seq = self._last_id
        self._last_id = (ms, 0) if ms > last_ms else (last_ms, seq + 1)
        return f"{self._last_id[0]}-{self._last_id[1]}"

    def publish(self, node: str, message: Union[ClusterMessage, AcksMessage]) -> None:
        channel = self.channels.get(node)
        if channel is not None:
            channel.put_nowait(encode_pairs(message.origin, [message])
                               if isinstance(message, PairMessage) else encode_message(message))

    def append(self, pair: Pair, msg_id: str, payload: bytes) -> str:
        stream = self.streams.setdefault(pair, _Stream())
        sid = self.next_id()
        stream.entries[msg_id] = (sid, payload)
        return sid


def _done(value: Any) -> Awaitable[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut


class MemoryCluster(PubSubCluster):
    """One node on a :class:`MemoryBus`."""

    def __init__(self, bus: MemoryBus, node_id: str, *, heartbeat_interval: float = 0.05,
                 node_ttl: float = 1.0, outbox_ttl: float = DEFAULT_OUTBOX.ttl) -> None:
        super().__init__(node_id=node_id, heartbeat_interval=heartbeat_interval,
                         node_ttl=node_ttl, outbox_ttl=outbox_ttl)
        self.bus = bus

    async def _join(self) -> None:
        self.bus.channels[self.node_id] = asyncio.Queue()
        self.bus.members.add(self.node_id)
        self.bus.presence[self.node_id] = {}

    async def _leave(self) -> None:
        bus = self.bus
        bus.members.discard(self.node_id)
        bus.presence.pop(self.node_id, None)
        bus.channels.pop(self.node_id, None)

    async def _listen(self) -> AsyncIterator[Optional[bytes]]:
        channel = self.bus.channels[self.node_id]
        while True:
            yield await channel.get()

    def _publish(self, message: Union[FanoutMessage, AdminMessage, AcksMessage]) -> None:
        for node in list(self.bus.members):
            self.bus.publish(node, message)

    def _admin_keep(self, record: bytes) -> None:
        self.bus.admin.add(record)
        return None

    def _admin_kept(self) -> Awaitable[List[bytes]]:
        return _done(sorted(self.bus.admin))

    async def _written(self) -> None:
        return None  # every bus operation is done when it returns

    def _send_pair(self, message: PairMessage, persist: bool, mark: Optional[str],
                   deferred: Optional[Receipt] = None) -> Optional[Awaitable[SendResult]]:
        bus, pair = self.bus, message.pair
        if mark is not None:
            bus.frames.add(mark)
        sid = bus.append(pair, message.msg_id, message.payload) if persist else ""
        if sid and message.notify:  # as the Redis index records "id|origin"
            bus.streams[pair].waiting[message.msg_id] = message.origin
        if sid:
            asyncio.get_running_loop().call_soon(self._stored, pair, [message.msg_id], sid)
        remote: List[Tuple[str, str]] = []
        nodes: Set[str] = set()
        for uuid, node in list(bus.where.get(pair, {}).items()):
            if node != self.node_id:
                remote.append((uuid, node))
                nodes.add(node)
        stored = PairMessage(message.origin, message.user, message.platform, message.msg_id,
                             sid, message.payload, message.notify)
        for node in nodes:
            bus.publish(node, stored)
        self._routed(pair, remote, 1 if sid else 0)
        return None if deferred is not None else _done((sid, remote))

    def _confirmation(self) -> Optional[asyncio.Future[Any]]:
        return None  # every bus operation is done when it returns

    def _store_delete(self, pair: Pair, stream_ids: List[str], idle: bool) -> None:
        stream = self.bus.streams.get(pair)
        if stream is None:
            return
        gone = set(stream_ids)
        for msg_id in [m for m, (sid, _p) in stream.entries.items() if sid in gone]:
            del stream.entries[msg_id]
        if not stream.entries:
            del self.bus.streams[pair]

    def _notify_ack(self, origin: str, message: AckMessage) -> None:
        self.bus.publish(origin, message)

    def _check_frame(self, token: str, frame: GatedFrame) -> None:
        self._frame_checked(token, frame, token in self.bus.frames, None)

    def _mark_frame(self, token: str) -> None:
        self.bus.frames.add(token)

    def _unmark_frame(self, token: str, record: bool = True) -> None:
        if record:
            self.bus.frames.discard(token)

    def _store_add(self, pair: Pair, msg_id: str, payload: bytes) -> None:
        stream = self.bus.streams.get(pair)
        if stream is None or msg_id not in stream.entries:
            self.bus.append(pair, msg_id, payload)

    def _store_ack(self, pair: Pair, msg_ids: List[str], acker: str,
                   notify: bool = True) -> None:
        stream = self.bus.streams.get(pair)
        if stream is None:
            return
        for msg_id in msg_ids:
            if stream.entries.pop(msg_id, None) is None:
                continue
            origin = stream.waiting.pop(msg_id, None)
            if origin is not None and notify:
                self.bus.publish(origin, AckMessage(self.node_id, pair[0], pair[1], msg_id,
                                                    acker))
        if not stream.entries:
            del self.bus.streams[pair]

    def _read_pair(self, pair: Pair) -> Awaitable[List[StoredMessage]]:
        stream = self.bus.streams.get(pair)
        entries = [] if stream is None else [
            (sid, msg_id, payload) for msg_id, (sid, payload) in stream.entries.items()]
        return _done(entries)

    def _presence_add(self, peer: Peer, info: Dict[str, Any]) -> None:
        self.bus.where.setdefault(peer.pair, {})[peer.uuid] = self.node_id
        self.bus.presence.setdefault(self.node_id, {})[peer.uuid] = info

    def _presence_remove(self, peer: Peer) -> None:
        where = self.bus.where.get(peer.pair, {})
        if where.get(peer.uuid) == self.node_id:
            del where[peer.uuid]
        self.bus.presence.get(self.node_id, {}).pop(peer.uuid, None)

    async def _heartbeat(self) -> Tuple[bool, List[str]]:
        bus = self.bus
        member = self.node_id in bus.members
        bus.members.add(self.node_id)
        return member, sorted(m for m in bus.members if m != self.node_id)

    def _rejoin_store(self) -> None:
        self.bus.members.add(self.node_id)

    async def _read_presence(self, nodes: Optional[List[str]]) -> Presence:
        bus = self.bus
        if nodes is None:
            nodes = sorted(m for m in bus.members if m != self.node_id)
        return {node: {u: dict(i) for u, i in bus.presence.get(node, {}).items()}
                for node in nodes}
