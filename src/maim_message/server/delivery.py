"""At-least-once delivery for the server: outbox, per-connection cursors, ack waiters.

Every server -> client frame is appended to the (user, platform) pair's outbox and written
to that pair's live connections. A connection's cursor is the last outbox sequence it
was sent; a new connection starts at 0, so it receives every unacked message in order.
A connection whose send buffer is full is skipped (its messages wait in the outbox) and
caught up when the transport says it is writable again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Dict, Iterable, List, Optional, Set, Tuple

from ..core.outbox import Outbox, OutboxEntry, Pair
from ..transport.frames import PreparedFrame
from .config import ServerConfig
from .peer import Peer

logger = logging.getLogger(__name__)


_frame = PreparedFrame.text  # built once, written to every connection it goes to


class Delivery:
    def __init__(self, config: ServerConfig, peers: Dict[str, Peer]) -> None:
        self.enabled = bool(config.enable_message_cache)
        self._peers = peers
        self.outbox: Optional[Outbox] = None
        self._waiters: Dict[Tuple[Pair, str], asyncio.Future[str]] = {}
        self.resent = 0
        # Peers that never ack (raw clients written against the bare-payload format) must
        # not get every old message again on each reconnect: until a pair has acked once
        # (or connected with its own x-uuid, as maim_message clients do), only what was
        # never written is re-sent, and what was written is dropped when the connection
        # closes.
        self._acking: Set[Pair] = set()
        self._written: Dict[Pair, int] = {}  # highest seq written to a connection of a pair
        if self.enabled:
            store = None
            if config.outbox_path:
                from ..backends.sqlite_outbox import SqliteOutboxStore

                store = SqliteOutboxStore(config.outbox_path)
            self.outbox = Outbox(
                max_per_pair=config.outbox_max_per_pair, max_bytes=config.outbox_max_bytes,
                ttl=config.outbox_ttl, store=store,
            )

    # -- sending ----------------------------------------------------------------------------

    def to_pair(self, pair: Pair, conn_ids: Iterable[str], msg_id: str,
                payload: bytes) -> Dict[str, bool]:
        """Queue for ``pair`` (even with nobody connected) and push to its live connections."""
        outbox = self.outbox
        if outbox is None:
            return self._direct(conn_ids, _frame(payload))
        entry = outbox.append(pair, msg_id, payload)
        frame = _frame(payload)
        results: Dict[str, bool] = {}
        peers = self._peers
        for uuid in conn_ids:
            peer = peers.get(uuid)
            results[uuid] = peer is not None and self._push(peer, entry, frame)
        return results

    def to_connections(self, conn_ids: Iterable[str], msg_id: str, payload: bytes,
                       only: bool = False) -> Dict[str, bool]:
        """One frame to many connections (broadcast): one outbox entry per pair.

        ``only``: the entry is for exactly these connections, not for their pair's others
        (a message addressed to one connection uuid).
        """
        if self.outbox is None:
            return self._direct(conn_ids, _frame(payload))
        by_pair: Dict[Pair, List[str]] = {}
        results: Dict[str, bool] = {}
        for uuid in conn_ids:
            peer = self._peers.get(uuid)
            if peer is None:
                results[uuid] = False
            else:
                by_pair.setdefault(peer.pair, []).append(uuid)
        frame = _frame(payload)
        for pair, uuids in by_pair.items():
            target = uuids[0] if only and len(uuids) == 1 else None
            entry = self.outbox.append(pair, msg_id, payload, target)
            for uuid in uuids:
                results[uuid] = self._push(self._peers[uuid], entry, frame)
        return results

    def _direct(self, conn_ids: Iterable[str], frame: PreparedFrame) -> Dict[str, bool]:
        peers = self._peers
        results: Dict[str, bool] = {}
        for uuid in conn_ids:
            peer = peers.get(uuid)
            results[uuid] = bool(peer is not None and peer.conn is not None
                                 and peer.conn.send_prepared(frame))
        return results

    def _push(self, peer: Peer, entry: OutboxEntry, frame: PreparedFrame) -> bool:
        conn = peer.conn
        if conn is None or not conn.is_open:
            return False
        if peer.cursor >= entry.prev_seq and conn.is_writable:
            conn.send_prepared(frame)
            peer.cursor = entry.seq
            if entry.seq > self._written.get(peer.pair, 0):
                self._written[peer.pair] = entry.seq
            return True
        self.flush(peer)
        return True

    def flush(self, peer: Peer) -> int:
        """Write the peer's pending messages after its cursor, in order, while writable."""
        outbox, conn = self.outbox, peer.conn
        if outbox is None or conn is None:
            return 0
        written = 0
        for entry in outbox.pending_after(peer.pair, peer.cursor):
            if entry.only is not None and entry.only != peer.uuid:
                peer.cursor = entry.seq  # addressed to another connection of the pair
                continue
            if not conn.is_writable:
                break
            conn.send_prepared(_frame(entry.payload))
            peer.cursor = entry.seq
            written += 1
        if written and peer.cursor > self._written.get(peer.pair, 0):
            self._written[peer.pair] = peer.cursor
        return written

    # -- connection events ------------------------------------------------------------------

    def peer_opened(self, peer: Peer) -> None:
        """A (re)connected peer gets every unacked message of its pair, oldest first.

        (For a pair that never acked: only the messages no connection was sent yet.)
        """
        if peer.resumable:
            self._acking.add(peer.pair)
        peer.cursor = 0 if peer.pair in self._acking else self._written.get(peer.pair, 0)
        resent = self.flush(peer)
        if resent:
            self.resent += resent
            logger.info("resent %d unacked message(s) to %s", resent, peer.uuid)

    def peer_closed(self, peer: Peer, siblings: Iterable[Peer] = ()) -> None:
        """A connection of a pair that never acked is gone: forget what it was sent
        (but not what another live connection of the pair has still to get)."""
        pair = peer.pair
        if self.outbox is None or pair in self._acking or not peer.cursor:
            return
        through = min([peer.cursor, self._written.get(pair, 0), *(p.cursor for p in siblings)])
        if through:
            self.outbox.drop_through(pair, through)

    def acked(self, peer: Peer, msg_id: str) -> None:
        self._acking.add(peer.pair)
        if self.outbox is not None:
            self.outbox.ack(peer.pair, msg_id)
        waiter = self._waiters.pop((peer.pair, msg_id), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(peer.uuid)

    def remote_acked(self, pair: Pair, msg_id: str, uuid: str) -> None:
        """Cluster mode: a connection on another hub node acked ``msg_id``."""
        waiter = self._waiters.pop((pair, msg_id), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(uuid)

    async def wait_ack(self, pair: Pair, msg_id: str, timeout: float) -> Optional[str]:
        """The uuid of the connection that acked ``msg_id`` within ``timeout``, else None."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters[(pair, msg_id)] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self._waiters.pop((pair, msg_id), None)

    def expire(self) -> int:
        return self.outbox.expire() if self.outbox is not None else 0

    def stats(self) -> Dict[str, int]:
        base = self.outbox.stats() if self.outbox is not None else {
            "outbox_depth": 0, "outbox_bytes": 0, "outbox_pairs": 0, "acked": 0,
            "evicted": 0, "expired": 0,
        }
        base["resent"] = self.resent
        base["ack_waiters"] = len(self._waiters)
        return base

    def close(self) -> None:
        if self.outbox is not None:
            self.outbox.close()
