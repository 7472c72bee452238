"""Sending from a pub/sub cluster node: to a pair, and fan-outs (a mixin, no I/O here).

A send to a pair is delivered at once to the pair's connections on this node and handed
to the store (``_send_pair``: appended to the pair's stream, published to the other nodes
holding it). Inside a handler behind the cluster gate (``cluster_guard``) the send does
not wait for the store: the frame's ack does. It then returns the pair's connections
elsewhere as of the pair's last write (``_routed``), not as of this one.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Set, Tuple

from .cluster_base import CONN, ClusterHost, Pair, Selector
from .cluster_guard import frame_for_send
from .pubsub_io import Presence, PubSubIO
from .pubsub_messages import FanoutMessage, PairMessage
from .pubsub_state import PairState
from .stream_ids import StreamIds

REMOTE_CACHE = 100_000  # pairs whose connections on other nodes are remembered


class PairSending(PubSubIO):
    """Mixin of :class:`~.pubsub_cluster.PubSubCluster`."""

    node_id: str
    heartbeat_interval: float
    _host: Optional[ClusterHost]
    _pairs: Dict[Pair, PairState]
    _sids: StreamIds
    _gone: Set[str]
    _remote: Dict[Pair, List[Tuple[str, str]]]
    _snapshot: Presence
    _snapshot_at: float
    _snapshot_used: float
    sends_to_offline: int

    def _running(self) -> ClusterHost:
        raise NotImplementedError

    async def refresh(self, nodes: Optional[List[str]] = None) -> None:
        raise NotImplementedError

    async def send_to_pair(self, pair: Pair, msg_id: str, payload: bytes,
                           ack_timeout: Optional[float] = None) -> Dict[str, bool]:
        host = self._running()
        delivery = host.delivery
        notify = ack_timeout is not None
        persist = delivery.enabled
        # the handled frame, recorded atomically with its first send; under the gate the
        # frame's ack waits for the store, so the send need not
        mark, deferred = frame_for_send(notify)
        waiter = delivery.expect_ack(pair, msg_id) if notify and delivery.enabled else None
        try:
            # tuple.__new__: the NamedTuple's generated __new__ is a Python call per message
            message = tuple.__new__(PairMessage, (self.node_id, pair[0], pair[1], msg_id, "",
                                                  payload, notify))
            sent = self._send_pair(message, persist, mark, deferred)
            results: Dict[str, bool] = {}
            state = self._pairs.get(pair)
            if state is not None:
                if persist:
                    self._sids.pending(pair, msg_id)
                if state.loading:
                    state.buffer.append((msg_id, payload, False))
                    results = {uuid: True for uuid in host.routes.lookup(*pair)}
                else:  # a new message of this node's: not queued here yet
                    results = delivery.to_pair(pair, host.routes.lookup(*pair), msg_id,
                                               payload, persist=False)
            if sent is None:  # the pair's connections elsewhere as of its last write
                remote = self._remote.get(pair, [])
            else:
                _sid, remote = await sent
        except BaseException:
            if waiter is not None:
                delivery.drop_waiter(pair, msg_id)
            raise
        if waiter is not None:
            assert ack_timeout is not None
            return await delivery.ack_result(pair, msg_id, ack_timeout, waiter)
        gone = self._gone
        for uuid, node in remote:
            if node not in gone:  # not a node that just joined and is not in _alive yet
                results.setdefault(uuid, True)
        return results

    def _routed(self, pair: Pair, remote: List[Tuple[str, str]], stored: int = 0) -> None:
        """The store wrote to ``pair`` (``stored`` messages into its stream): its (uuid,
        node) entries on other nodes."""
        if stored and not remote and pair not in self._pairs:
            self.sends_to_offline += stored  # connected nowhere: kept for its next connection
        if remote:
            if len(self._remote) >= REMOTE_CACHE and pair not in self._remote:
                self._remote.clear()
            self._remote[pair] = remote
        else:
            self._remote.pop(pair, None)

    def _deliver(self, pair: Pair, msg_id: str, payload: bytes) -> Dict[str, bool]:
        """Queue (the store has it already) and push to the pair's connections here."""
        host = self._host
        assert host is not None
        delivery = host.delivery
        if delivery.is_queued(pair, msg_id):
            return {}
        return delivery.to_pair(pair, host.routes.lookup(*pair), msg_id, payload, persist=False)

    async def fanout(self, selector: Selector, msg_id: str, payload: bytes) -> Dict[str, bool]:
        host = self._running()
        selector = Selector(*selector)
        kind, value = selector
        local_conn = kind == CONN and value is not None and host.routes.owner(value)
        if not local_conn:
            self._publish(FanoutMessage(self.node_id, selector, msg_id, payload))
        results = self._fanout_local(selector, msg_id, payload)
        await self._written()
        if not local_conn:
            if time.monotonic() - self._snapshot_at > 2 * self.heartbeat_interval:
                await self.refresh()  # not kept fresh by the heartbeat lately: read it now
            self._snapshot_used = time.monotonic()
            for node, conns in self._snapshot.items():
                if node == self.node_id:
                    continue
                for uuid, info in conns.items():
                    if selector.matches(uuid, info):
                        results.setdefault(uuid, True)
        return results

    def _fanout_local(self, selector: Selector, msg_id: str, payload: bytes) -> Dict[str, bool]:
        host = self._host
        assert host is not None
        targets = selector.local_targets(host.routes)
        if not targets:
            return {}
        ready: List[str] = []
        results: Dict[str, bool] = {}
        held: Set[Pair] = set()
        for uuid in targets:
            owner = host.routes.owner(uuid)
            state = self._pairs.get(owner) if owner is not None else None
            if owner is not None and state is not None and state.loading:
                if owner not in held:
                    held.add(owner)
                    state.buffer.append((msg_id, payload, True))
                results[uuid] = True
            else:
                ready.append(uuid)
        if ready:
            results.update(host.delivery.to_connections(ready, msg_id, payload,
                                                        only=selector.kind == CONN))
        return results
