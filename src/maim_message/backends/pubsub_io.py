"""What a distributed cluster backend must provide: publish, listen, store.

:class:`~.pubsub_cluster.PubSubCluster` decides everything and calls these hooks;
``RedisCluster`` implements them on Redis, ``MemoryCluster`` on an in-process bus.
Writes are queued in order (a read queued after a write sees it) and may complete later;
``_written`` waits for them.
"""

from __future__ import annotations

import asyncio
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Awaitable,
    Dict,
    List,
    Optional,
    Tuple,
    Union,
)

from .cluster_base import Pair
from .pubsub_messages import (
    AckMessage,
    AcksMessage,
    AdminMessage,
    FanoutMessage,
    PairMessage,
)

if TYPE_CHECKING:
    from ..server.acks import GatedFrame, Receipt
    from ..server.peer import Peer

# What _listen yields when the subscription was re-established: messages may have been
# missed, so every held pair's stream is read again.
RESUBSCRIBED = None

StoredMessage = Tuple[str, str, bytes]  # (stream id "<ms>-<seq>", msg_id, payload)
Presence = Dict[str, Dict[str, Dict[str, Any]]]  # node -> uuid -> connection info
SendResult = Tuple[str, List[Tuple[str, str]]]  # (stream id, [(uuid, node) elsewhere])


class PubSubIO:
    """The bus and store hooks (each raises NotImplementedError here)."""

    async def _join(self) -> None:
        """Connect, subscribe to this node's and the fan-out channel, announce the node.
        Raise ServerStartError when the bus cannot be used."""
        raise NotImplementedError

    async def _leave(self) -> None:
        """Write what is queued, remove the node's presence, disconnect."""
        raise NotImplementedError

    def _listen(self) -> AsyncIterator[Optional[bytes]]:
        """Channel messages for this node, one payload (``pubsub_messages.encode_*``) at
        a time, forever (``RESUBSCRIBED`` after a reconnect). Not needed by a backend that
        overrides ``_read_loop`` to read its channels itself (``RedisCluster``)."""
        raise NotImplementedError

    def _publish(self, message: Union[FanoutMessage, AdminMessage, AcksMessage]) -> None:
        """Queue a fan-out (or an admin action, or acks for any origin) to every node."""
        raise NotImplementedError

    def _admin_keep(self, record: bytes) -> Optional[Awaitable[Any]]:
        """Keep an admin action in the store for good (a set: the same record once);
        what resolves once the store took it, or fails if it refused (None: taken)."""
        raise NotImplementedError

    def _admin_kept(self) -> Awaitable[List[bytes]]:
        """Every admin action kept so far (read when the node starts)."""
        raise NotImplementedError

    def _send_pair(self, message: PairMessage, persist: bool, mark: Optional[str],
                   deferred: Optional[Receipt] = None) -> Optional[Awaitable[SendResult]]:
        """Append to the pair's stream (if ``persist``) and publish to every other node
        holding the pair, in one atomic store operation (batched per loop turn), together
        with ``mark`` (a handled frame's token, ``frame_dedupe``) when given. Resolves to
        the stream id and the (uuid, node) entries of the pair on other nodes.
        ``message.notify``: the origin wants an :class:`AckMessage` once it is acked.
        ``deferred``: nobody waits (returns None); a failure is put in
        ``deferred.failure`` before :meth:`_confirmation` resolves. Either way the store
        reports the pair's entries on other nodes to ``_routed``."""
        raise NotImplementedError

    def _confirmation(self) -> Optional[asyncio.Future[Any]]:
        """A future that resolves once everything queued so far is in the store (fails
        when it is not), or None when nothing is pending. Shared: add callbacks to it,
        never await it directly (``asyncio.shield``)."""
        raise NotImplementedError

    def _store_delete(self, pair: Pair, stream_ids: List[str], idle: bool) -> None:
        """Delete acked entries of a pair's stream by id; ``idle``: nothing else of the
        pair is unacked here, so drop the stream's keys if it is now empty."""
        raise NotImplementedError

    def _notify_ack(self, origin: str, message: AckMessage) -> None:
        """Tell ``origin`` (waiting in ``send_message(ack_timeout=...)``) about an ack."""
        raise NotImplementedError

    def _check_frame(self, token: str, frame: GatedFrame) -> None:
        """Ask (batched) whether some node recorded frame ``token`` as handled; the store
        answers ``self._frame_checked(token, frame, seen, None)``, or with
        ``(token, frame, False, error)`` when it cannot tell."""
        raise NotImplementedError

    def _mark_frame(self, token: str) -> None:
        """Record a handled frame whose handler sent nothing."""
        raise NotImplementedError

    def _unmark_frame(self, token: str, record: bool = True) -> None:
        """Take a frame out of the record: its handler's sends were not all stored, so it
        is not acked and its re-send must be handled again (rare: a failure path). Only
        this node's claim (and, with ``record``, its record) is taken back."""
        raise NotImplementedError

    def _store_add(self, pair: Pair, msg_id: str, payload: bytes) -> None:
        """Append to the pair's stream unless it is there already."""
        raise NotImplementedError

    def _store_ack(self, pair: Pair, msg_ids: List[str], acker: str,
                   notify: bool = True) -> None:
        """Delete acked messages by msg_id (their stream id is not known here); tell an
        origin that waits on one (AckMessage), unless ``notify`` is False (given up)."""
        raise NotImplementedError

    def _read_pair(self, pair: Pair) -> Awaitable[List[StoredMessage]]:
        """The pair's stream, oldest first (queued behind every earlier write)."""
        raise NotImplementedError

    def _presence_add(self, peer: Peer, info: Dict[str, Any]) -> None:
        raise NotImplementedError

    def _presence_remove(self, peer: Peer) -> None:
        raise NotImplementedError

    async def _written(self) -> None:
        """Return once everything queued so far is in the store (ClusterError if not)."""
        raise NotImplementedError

    async def _heartbeat(self) -> Tuple[bool, List[str]]:
        """Renew this node's liveness, reap dead nodes; (still a member, live others)."""
        raise NotImplementedError

    def _rejoin_store(self) -> None:
        """Make this node a member again (after it was reaped)."""
        raise NotImplementedError

    async def _read_presence(self, nodes: Optional[List[str]]) -> Presence:
        """The connection lists of ``nodes`` (None: every live node but this one)."""
        raise NotImplementedError
