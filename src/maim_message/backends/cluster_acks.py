"""Acks in a cluster: batched deletes of acked stream entries, and waiting origins told.

Acks of connections on this node are collected for ``ack_delay`` seconds; then each
pair's acked entries are deleted in one operation (``stream_ids`` knows which entry each
message is in, and deletes an entry once all its messages are acked); messages whose
entry is unknown here are deleted by msg_id; an origin waiting in
``send_message(ack_timeout=...)`` on another node gets an :class:`AckMessage`. Messages
read from a stream (a takeover) have no known origin: their acks go to every node, in
one :class:`AcksMessage` per pair and batch, so a waiting origin resolves wherever the
receiver acked.
"""

from __future__ import annotations

import asyncio
from typing import Dict, List, Optional, Set, Tuple

from .cluster_base import ClusterHost, Pair
from .pubsub_io import PubSubIO
from .pubsub_messages import AckMessage, AcksMessage
from .stream_ids import ANY_ORIGIN, StreamIds


class AckBatching(PubSubIO):
    """Mixin of :class:`~.pubsub_cluster.PubSubCluster` (which sets the attributes)."""

    # s: acks are collected this long before their stream entries are deleted, so a
    # pair's acks cost one delete (a later delete only means a redelivery after a crash)
    ack_delay = 0.0
    node_id: str
    _joined: bool
    _host: Optional[ClusterHost]
    _sids: StreamIds
    _ack_turn: Dict[Pair, Tuple[List[str], str]]
    _unacked_removals: Dict[Pair, Set[str]]  # of this ack turn: removed, not acked

    def _stored(self, pair: Pair, msg_ids: List[str], sid: str) -> None:
        """The store answered with the entry of messages this node sent (called by the
        subclass as soon as the answer arrives, before anything else runs)."""
        if self._sids.acked_while_away(pair, msg_ids):  # acked, then the pair left here
            self._store_delete(pair, [sid], self._sids.idle(pair))
            return
        again = self._sids.stored(pair, msg_ids, sid)
        if again:
            self._acked(pair, again, "")  # acked before the answer: delete them now

    def _acked(self, pair: Pair, msg_ids: List[str], acker: Optional[str] = None,
               notify: bool = True) -> None:
        """Connections here acked these messages: delete them from the stream (batched:
        one delete per pair per ``ack_delay``), tell origins that wait. ``acker``: the
        uuid named as the acking connection (None: the pair's first connection here, looked
        up once per pair and batch: receivers ack one message at a time). ``notify=False``:
        removed but not acked (given up, drained): nobody waiting is told "acked"."""
        if not notify:
            self._unacked_removals.setdefault(pair, set()).update(msg_ids)
        turn = self._ack_turn
        if not turn:
            loop = asyncio.get_running_loop()
            if self.ack_delay > 0:
                loop.call_later(self.ack_delay, self._flush_acks)
            else:
                loop.call_soon(self._flush_acks)
        queued = turn.get(pair)
        if queued is None:
            if acker is None:
                host = self._host
                acker = host.routes.first(*pair) if host is not None else ""
            turn[pair] = (list(msg_ids), acker)
        else:
            queued[0].extend(msg_ids)

    def _flush_acks(self) -> None:
        turn, self._ack_turn = self._ack_turn, {}
        unacked, self._unacked_removals = self._unacked_removals, {}
        if not self._joined or not turn:
            return
        for pair, (msg_ids, acker) in turn.items():
            acked = self._sids.acked(pair, msg_ids)
            if acked.sids:
                self._store_delete(pair, acked.sids, self._sids.idle(pair))
            silent = unacked.get(pair, ())
            if acked.by_msg_id:
                told = [m for m in acked.by_msg_id if m not in silent]
                if told:
                    self._store_ack(pair, told, acker)
                if len(told) < len(acked.by_msg_id):
                    self._store_ack(pair, [m for m in acked.by_msg_id if m in silent], acker,
                                    notify=False)
            anyone: List[str] = []
            for origin, msg_id in acked.notify:
                if msg_id in silent:
                    continue
                if origin == ANY_ORIGIN:
                    anyone.append(msg_id)
                elif origin != self.node_id:
                    self._notify_ack(origin, AckMessage(self.node_id, pair[0], pair[1],
                                                        msg_id, acker))
            if anyone:  # taken over from a stream: the waiting origin is not known here
                self._publish(AcksMessage(self.node_id, pair[0], pair[1], tuple(anyone),
                                          acker))
