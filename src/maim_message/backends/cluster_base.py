"""The cluster seam: how one WebSocketServer becomes one node of a many-process hub.

Every send of the server goes through its :class:`ClusterBackend` (to a pair, or to the
connections a :class:`Selector` names), and so do connection open / close (presence) and
the hub-wide queries (``get_user_count``, ``get_connections``). :class:`LocalCluster` is
the single-node backend and the default: its methods are the server's fast path, one call
into :class:`~maim_message.server.delivery.Delivery` each.

Distributed backends build on ``pubsub_cluster.PubSubCluster`` (``redis_cluster`` is the
Redis one); they are imported only when configured, so ``redis`` stays optional.
"""

from __future__ import annotations

import os
import socket
from hashlib import blake2b
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Mapping,
    NamedTuple,
    Optional,
    Protocol,
    Set,
    Tuple,
    runtime_checkable,
)

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..core.routing import RoutingTable
    from ..server.delivery import Delivery
    from ..server.peer import Peer

Pair = Tuple[str, str]  # (user_id, platform)

ALL, PLATFORM, USER, CONN = "all", "platform", "user", "conn"


def user_key(user: str) -> str:
    """A user id as it appears in cluster presence (a hash: user ids may be API keys)."""
    return blake2b(user.encode(), digest_size=12).hexdigest()


class Selector(NamedTuple):
    """Who a fan-out reaches: every connection, a platform's, a user's, or one connection.

    A plain ``(kind, value)`` tuple, so it travels between nodes as two JSON fields.
    """

    kind: str  # ALL, PLATFORM, USER or CONN
    value: Optional[str] = None

    @classmethod
    def for_target(cls, user: Optional[str], platform: Optional[str],
                   connection_uuid: Optional[str]) -> Optional[Selector]:
        """``send_custom_message``'s addressing (a connection beats a user beats a platform)."""
        if connection_uuid is not None:
            return cls(CONN, connection_uuid)
        if user is not None:
            return cls(USER, user)
        if platform is not None:
            return cls(PLATFORM, platform)
        return None

    def local_targets(self, routes: RoutingTable) -> Set[str]:
        """The uuids of this node's connections it names (through the routing indexes)."""
        kind, value = self
        if kind == ALL:
            return set(routes.all_connections())
        if value is None:
            return set()
        if kind == PLATFORM:
            return routes.on_platform(value)
        if kind == USER:
            return routes.lookup(value)
        if kind == CONN:
            return {value} if routes.owner(value) is not None else set()
        raise ValueError(f"unknown selector kind {kind!r}")

    def matches(self, uuid: str, info: Mapping[str, Any]) -> bool:
        """Whether a presence entry (``platform`` and ``uk``, the user's key) is named."""
        kind, value = self
        if kind == ALL:
            return True
        if kind == PLATFORM:
            return bool(info.get("platform") == value)
        if kind == USER:
            return value is not None and info.get("uk") == user_key(value)
        return uuid == value


class ClusterHost(Protocol):
    """What a backend needs from the server it is plugged into (WebSocketServer has it)."""

    routes: RoutingTable
    peers: Dict[str, Peer]
    delivery: Delivery


@runtime_checkable
class ClusterBackend(Protocol):
    """One hub node's view of the cluster."""

    node_id: str
    distributed: bool  # False: one process (no presence or store outside it)

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

    # Optional (backends written before it need not have it): ``async def admin(action,
    # args, durable=False)`` has every other node apply an admin action (their
    # ``host.apply_admin``); ``durable``: kept in the cluster's store and applied by each
    # node when it starts. Called through :func:`admin_everywhere`.


async def admin_everywhere(cluster: ClusterBackend, action: str, args: Dict[str, str],
                           durable: bool = False) -> bool:
    """Pass an admin action to the other nodes; False when the backend cannot."""
    admin = getattr(cluster, "admin", None)
    if admin is None:
        return False
    await admin(action, args, durable)
    return True


class LocalCluster:
    """A single hub (the default): the server's send path, straight into Delivery."""

    distributed = False

    def __init__(self, node_id: Optional[str] = None) -> None:
        self.node_id = node_id or default_node_id()
        self._host: Optional[ClusterHost] = None

    def _require_host(self) -> ClusterHost:
        if self._host is None:
            raise RuntimeError("LocalCluster used before start()")
        return self._host

    def attach(self, host: ClusterHost) -> None:
        """Serve ``host`` now (a single node has nothing to join)."""
        self._host = host

    async def start(self, host: ClusterHost) -> None:
        self._host = host

    async def stop(self) -> None:
        return None  # nothing to leave; the host may still queue into its outbox

    def connection_opened(self, peer: Peer) -> None:
        self._require_host().delivery.peer_opened(peer)

    def connection_closed(self, peer: Peer) -> None:
        host = self._require_host()
        peers = host.peers
        siblings = [peers[u] for u in host.routes.lookup(*peer.pair) if u in peers]
        host.delivery.peer_closed(peer, siblings)

    async def send_to_pair(self, pair: Pair, msg_id: str, payload: bytes,
                           ack_timeout: Optional[float] = None) -> Dict[str, bool]:
        host = self._host or self._require_host()
        delivery = host.delivery
        # Waiting starts before the send: an ack that comes back first is not missed.
        waiter = (delivery.expect_ack(pair, msg_id)
                  if ack_timeout is not None and delivery.enabled else None)
        try:
            results = delivery.to_pair(pair, host.routes.lookup(*pair), msg_id, payload)
            if delivery.commit_pending:
                await delivery.committed()  # durable outbox: in SQLite before we return
        except BaseException:
            if waiter is not None:
                delivery.drop_waiter(pair, msg_id)
            raise
        if waiter is not None:
            assert ack_timeout is not None
            return await delivery.ack_result(pair, msg_id, ack_timeout, waiter)
        return results

    async def fanout(self, selector: Selector, msg_id: str, payload: bytes) -> Dict[str, bool]:
        host = self._host or self._require_host()
        delivery = host.delivery
        kind, value = selector
        if kind == CONN and value is not None:  # that connection only (unknown: False)
            results = delivery.to_connections([value], msg_id, payload, only=True)
        else:
            results = delivery.to_connections(Selector.local_targets(selector, host.routes),
                                              msg_id, payload)
        if delivery.commit_pending:
            await delivery.committed()  # durable outbox: a failed commit raises here too
        return results

    def user_count(self) -> int:
        return self._require_host().routes.user_count

    def connections(self) -> Dict[str, Dict[str, Any]]:
        host = self._require_host()
        return {uuid: peer.info() for uuid, peer in host.peers.items()}

    async def admin(self, action: str, args: Dict[str, str], durable: bool = False) -> None:
        return None  # no other node; a single hub keeps what must last itself


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
            outbox_max_per_pair=config.outbox_max_per_pair,
            outbox_ttl=config.outbox_ttl,
            dedupe_ttl=getattr(config, "cluster_dedupe_ttl", 60.0),
            frame_claims=bool(getattr(config, "cluster_frame_claims", False)),
            write_timeout=getattr(config, "cluster_write_timeout", 10.0),
        )
    raise ConfigError(f"cluster_backend: unknown backend {backend!r} (local or redis)")
