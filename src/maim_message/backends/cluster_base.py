"""The cluster seam: how one WebSocketServer becomes one node of a many-process hub.

The server calls a :class:`ClusterBackend` only where routing may leave the node: sends
(to a pair, to a user, to a platform, to everyone, to one connection), connection open and
close (presence), and the cluster-wide queries (``get_user_count``, ``get_connections``).
``LocalCluster`` is the reference no-op implementation: a single hub, today's behaviour.
The server skips the seam entirely when the backend is local (``distributed`` is False),
so the single-node fast path does no extra per-message work.

``RedisCluster`` (``backends/redis_cluster.py``) implements it on redis-py asyncio; it is
imported only when configured, so ``redis`` stays an optional dependency.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, Dict, Optional, Protocol, Set, Tuple, runtime_checkable

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..core.routing import RoutingTable
    from ..server.delivery import Delivery
    from ..server.peer import Peer

Pair = Tuple[str, str]  # (user_id, platform)

# Who a fan-out reaches: ("all", None), ("platform", name), ("user", id), ("conn", uuid).
Selector = Tuple[str, Optional[str]]


class ClusterHost(Protocol):
    """What a backend needs from the server it is plugged into (WebSocketServer has it)."""

    routes: RoutingTable
    peers: Dict[str, Peer]
    delivery: Delivery

    def _count_sent(self, results: Dict[str, bool], data: bytes) -> None: ...


@runtime_checkable
class ClusterBackend(Protocol):
    """One hub node's view of the cluster."""

    node_id: str
    distributed: bool  # False: the server keeps its local fast path and never calls us

    async def start(self, host: ClusterHost) -> None:
        """Join the cluster (before the server listens); raise ServerStartError if not."""
        ...

    async def stop(self) -> None:
        """Leave the cluster (after the server closed its connections)."""
        ...

    def connection_opened(self, peer: Peer) -> None:
        """A peer was registered in ``host.routes``; the backend sends it its backlog."""
        ...

    def connection_closed(self, peer: Peer) -> None:
        """A peer was removed from ``host.routes``."""
        ...

    async def send_to_pair(self, pair: Pair, msg_id: str, payload: bytes,
                           ack_timeout: Optional[float] = None) -> Dict[str, bool]:
        """``send_message`` semantics for one (user, platform), wherever it is connected."""
        ...

    async def fanout(self, selector: Selector, msg_id: str, payload: bytes) -> Dict[str, bool]:
        """One message to every connection the selector names, on every node."""
        ...

    def user_count(self) -> int: ...

    def connections(self) -> Dict[str, Dict[str, Any]]: ...


def select_local(routes: RoutingTable, selector: Selector) -> Set[str]:
    """The uuids of this node's connections that a selector names."""
    kind, value = selector
    if kind == "all":
        return set(routes.all_connections())
    if value is None:
        return set()
    if kind == "platform":
        return routes.on_platform(value)
    if kind == "user":
        return routes.lookup(value)
    if kind == "conn":
        return {value} if routes.owner(value) is not None else set()
    raise ValueError(f"unknown selector kind {kind!r}")


class LocalCluster:
    """A single hub: everything is local (the default; the server bypasses it)."""

    distributed = False

    def __init__(self, node_id: Optional[str] = None) -> None:
        self.node_id = node_id or default_node_id()
        self._host: Optional[ClusterHost] = None

    def _require_host(self) -> ClusterHost:
        if self._host is None:
            raise RuntimeError("LocalCluster used before start()")
        return self._host

    async def start(self, host: ClusterHost) -> None:
        self._host = host

    async def stop(self) -> None:
        self._host = None

    def connection_opened(self, peer: Peer) -> None:
        self._require_host().delivery.peer_opened(peer)

    def connection_closed(self, peer: Peer) -> None:
        return None

    async def send_to_pair(self, pair: Pair, msg_id: str, payload: bytes,
                           ack_timeout: Optional[float] = None) -> Dict[str, bool]:
        host = self._require_host()
        results = host.delivery.to_pair(pair, host.routes.lookup(*pair), msg_id, payload)
        host._count_sent(results, payload)
        if ack_timeout is not None and host.delivery.enabled:
            acker = await host.delivery.wait_ack(pair, msg_id, ack_timeout)
            return {acker: True} if acker is not None else {}
        return results

    async def fanout(self, selector: Selector, msg_id: str, payload: bytes) -> Dict[str, bool]:
        host = self._require_host()
        results = host.delivery.to_connections(select_local(host.routes, selector), msg_id,
                                               payload)
        host._count_sent(results, payload)
        return results

    def user_count(self) -> int:
        return self._require_host().routes.user_count

    def connections(self) -> Dict[str, Dict[str, Any]]:
        host = self._require_host()
        return {uuid: peer.info() for uuid, peer in host.peers.items()}


def default_node_id() -> str:
    """``<host>-<pid>-<4 random hex>``: unique per process, readable in presence listings."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


def create_cluster(config: Any) -> ClusterBackend:
    """The backend a ServerConfig names: ``cluster_backend`` "local", "redis" or an object."""
    backend = getattr(config, "cluster_backend", "local") or "local"
    node_id = getattr(config, "cluster_node_id", None)
    if not isinstance(backend, str):
        if not isinstance(backend, ClusterBackend):
            raise ConfigError("cluster_backend: expected 'local', 'redis' or a ClusterBackend")
        return backend
    if backend == "local":
        return LocalCluster(node_id)
    if backend == "redis":
        url = getattr(config, "cluster_redis_url", None)
        if not url:
            raise ConfigError("cluster_redis_url: the redis cluster backend needs a URL "
                              "such as redis://127.0.0.1:6379/0")
        try:
            from .redis_cluster import RedisCluster
        except ImportError as exc:  # redis-py not installed
            raise ConfigError("cluster_backend='redis' needs redis-py: "
                              "pip install 'maim_message[cluster]'") from exc
        return RedisCluster(
            url, node_id=node_id or default_node_id(),
            prefix=getattr(config, "cluster_prefix", "maim_hub"),
            heartbeat_interval=getattr(config, "cluster_heartbeat_interval", 1.0),
            node_ttl=getattr(config, "cluster_node_ttl", 5.0),
            outbox_max_per_pair=getattr(config, "outbox_max_per_pair", 10_000),
            outbox_ttl=getattr(config, "outbox_ttl", 86_400.0),
        )
    raise ConfigError(f"cluster_backend: unknown backend {backend!r} (local or redis)")
