"""At-least-once delivery for the server: outbox, per-connection cursors, ack waiters.

Every server -> client frame is appended to the (user, platform) pair's outbox and written
to that pair's live connections. A connection's cursor is the last outbox sequence it
was sent; a new connection starts at 0, so it receives every unacked message in order.
A connection whose send buffer is full is skipped (its messages wait in the outbox) and
caught up when the transport says it is writable again.

Durable outbox (a store with ``commit``): what is queued is written to connections only
after it is committed, and acks that depend on it (``after_commit``) go out after that
commit; all the writes of one event-loop turn share one commit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from ..core.outbox import Outbox, OutboxEntry, OutboxStore, Pair
from ..core.redact import pair_label
from ..core.size_refusals import SizeRefusals
from ..errors import DeliveryRefused
from ..transport.frames import PreparedFrame
from ..transport.write_batch import write_batch
from .acks import CURRENT_RECEIPT, FrameKey, Receipt, delivery_failed
from .config import ServerConfig
from .peer import Peer

logger = logging.getLogger(__name__)


_frame = PreparedFrame.text  # built once, written to every connection it goes to


class Delivery:
    """Outbox, cursors and ack waiters of one server; the cluster backends call it.

    ``counters`` (the server's stats dict) gets ``messages_sent`` / ``bytes_sent``.
    """

    def __init__(self, config: ServerConfig, peers: Dict[str, Peer],
                 counters: Optional[Dict[str, Any]] = None) -> None:
        self.enabled = bool(config.enable_message_cache)
        self._peers = peers
        self._counters: Dict[str, Any] = (
            counters if counters is not None else {"messages_sent": 0, "bytes_sent": 0})
        self.outbox: Optional[Outbox] = None
        self._waiters: Dict[Tuple[Pair, str], asyncio.Future[str]] = {}
        self.resent = 0
        self.commit_failures = 0
        self.too_big_dropped = 0  # given up: their receiver kept closing over its size limit
        self._too_big = SizeRefusals()
        # Peers that never ack (raw clients written against the bare-payload format) must
        # not get every old message again on each reconnect: until a pair has acked once
        # (or connected with its own x-uuid, as maim_message clients do), only what was
        # never written is re-sent, and what was written is dropped when the connection
        # closes.
        self._acking: Set[Pair] = set()
        self._evicted_logged = 0  # outbox evictions already reported in the log
        self._written: Dict[Pair, int] = {}  # highest seq written to a connection of a pair
        # group commit (durable store only)
        self._commit_handle: Optional[asyncio.Handle] = None
        self._commit_future: Optional[asyncio.Future[None]] = None
        self._committed_seq = 0  # entries up to this seq are committed
        self._later: List[Tuple[Pair, OutboxEntry, List[str]]] = []  # to push after the commit
        self._opened: List[str] = []  # connections opened while a commit was pending
        # to run after the commit (acks), and what to run instead if it fails
        self._after: List[Tuple[Callable[[], Any], Optional[Callable[[BaseException], Any]]]] = []
        if self.enabled:
            store = None
            if config.outbox_path:
                from ..backends.sqlite_outbox import SqliteOutboxStore

                store = SqliteOutboxStore(config.outbox_path, max_seen=config.dedupe_window)
            self.outbox = Outbox(
                max_per_pair=config.outbox_max_per_pair, max_bytes=config.outbox_max_bytes,
                ttl=config.outbox_ttl, store=store,
                max_bytes_per_user=config.outbox_max_bytes_per_user,
                max_pairs_per_user=config.outbox_max_pairs_per_user,
            )
            self._committed_seq = self.outbox.last_assigned_seq
        self._store_changed()

    # -- durability -------------------------------------------------------------------------

    def _store(self) -> Any:
        """The outbox's store when it commits in groups (SQLite), else None (asked several
        times per message: kept, and updated when the store is replaced)."""
        return self._committing

    def _store_changed(self) -> None:
        outbox = self.outbox
        store = outbox.store if outbox is not None else None
        self._committing = store if store is not None and hasattr(store, "commit") else None

    @property
    def durable(self) -> bool:
        return self._store() is not None

    @property
    def commit_pending(self) -> bool:
        """Whether something queued waits for the group commit (:meth:`committed` waits)."""
        return self._commit_handle is not None

    def _touch(self) -> None:
        """Schedule the group commit when the store holds uncommitted writes."""
        if self._commit_handle is not None:
            return
        store = self._store()
        if store is None or not store.dirty:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (tests, shutdown): commit at once
            self._commit()
            return
        self._commit_handle = loop.call_soon(self._commit)

    def _commit(self) -> None:
        """Commit, then write what waited for it, then run the acks that waited for it.

        A commit that fails (disk full, read-only file, database locked) is rolled back by
        the store: what the group queued is taken back from the outbox (not written), the
        acks that waited for it are not sent (their frames are forgotten, so the clients'
        re-sends are handled again) and ``send_message`` callers waiting on it get the
        error. Nothing leaves the process that the store does not hold."""
        self._commit_handle = None
        store, outbox = self._store(), self.outbox
        failure: Optional[BaseException] = None
        if store is not None:
            try:
                store.commit()
            except Exception as exc:
                failure = exc
        if failure is not None:
            self._commit_failed(failure)
            return
        if outbox is not None:
            self._committed_seq = outbox.last_assigned_seq
        later, self._later = self._later, []
        peers = self._peers
        for _pair, entry, conn_ids in later:
            frame = _frame(entry.payload)
            for uuid in conn_ids:
                peer = peers.get(uuid)
                if peer is not None:
                    self._push(peer, entry, frame)
        # A connection that opened after those were queued was flushed only up to the
        # previous commit; it gets the rest now (the list above predates it).
        self._flush_opened()
        after, self._after = self._after, []
        with write_batch:  # the acks that waited for the commit: one write per connection
            for callback, _failed in after:
                try:
                    callback()
                except Exception:
                    logger.exception("callback after the outbox commit failed")
        fut, self._commit_future = self._commit_future, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _flush_opened(self) -> None:
        opened, self._opened = self._opened, []
        for uuid in opened:
            peer = self._peers.get(uuid)
            if peer is not None:
                self.flush(peer)

    def _commit_failed(self, exc: BaseException) -> None:
        self.commit_failures += 1
        later, self._later = self._later, []
        after, self._after = self._after, []
        logger.warning("outbox commit failed (%s: %s): %d message(s) not queued, %d ack(s) "
                       "held back (the clients re-send)", type(exc).__name__, exc,
                       len(later), len(after))
        outbox = self.outbox
        if outbox is not None:
            for pair, entry, _conn_ids in later:
                outbox.withdraw(pair, entry)
        self._flush_opened()  # what was committed before still goes to new connections
        for _callback, failed in after:
            if failed is None:
                continue
            try:
                failed(exc)
            except Exception:
                logger.exception("callback after a failed outbox commit failed")
        fut, self._commit_future = self._commit_future, None
        if fut is not None and not fut.done():
            fut.set_exception(exc)
            fut.exception()  # retrieved here: nobody may be waiting on it

    async def committed(self) -> None:
        """Return once everything queued so far is committed (at once when not durable)."""
        if self._commit_handle is None:
            return
        fut = self._commit_future
        if fut is None:
            fut = self._commit_future = asyncio.get_running_loop().create_future()
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the commit failed: the frame being handled is not acked
            delivery_failed(exc)
            raise

    def after_commit(self, callback: Callable[[], Any],
                     failed: Optional[Callable[[BaseException], Any]] = None) -> None:
        """Run ``callback`` once what is queued now is committed (at once if nothing is
        pending, or when the outbox is not durable); if that commit fails, ``failed(exc)``
        runs instead (when given)."""
        if self._commit_handle is None:
            callback()
        else:
            self._after.append((callback, failed))

    def _record_receipt(self, store: Any) -> None:
        """The received frame being handled (if any) is committed with this message."""
        receipt = CURRENT_RECEIPT.get()
        if receipt is not None and not receipt.recorded:
            receipt.recorded = True
            store.mark_seen(receipt.key, receipt.at)

    def consumed(self, receipt: Receipt) -> None:
        """A frame's handler finished: record it as handled (durable store only)."""
        store = self._store()
        if store is not None and not receipt.recorded:
            receipt.recorded = True
            store.mark_seen(receipt.key, receipt.at)
            self._touch()

    def unhandled(self, receipt: Receipt) -> None:
        """A frame was not handled after all: a re-send, even after a restart or on
        another cluster node, is new (the store that recorded or claimed it takes it
        back)."""
        outbox = self.outbox
        store = outbox.store if outbox is not None else None
        forget = getattr(store, "forget_seen", None)
        forget_frame = getattr(store, "forget_frame", None)  # knows what it may take back
        if forget is not None and (receipt.recorded or receipt.claimed):
            try:
                if forget_frame is not None:
                    forget_frame(receipt)
                else:
                    forget(receipt.key)
            except Exception as exc:  # the store is failing: the re-send is lost on restart only
                logger.debug("could not un-record frame %s: %s", receipt.key[2], exc)
            receipt.recorded = receipt.claimed = False
            if self._store() is not None:
                self._touch()

    def handled_frames(self, ttl: float) -> List[FrameKey]:
        """Frames a previous process handled within ``ttl`` seconds (for dedupe)."""
        import time

        store = self._store()
        return store.load_seen(time.time() - ttl) if store is not None else []

    # -- sending ----------------------------------------------------------------------------

    def to_pair(self, pair: Pair, conn_ids: Iterable[str], msg_id: str,
                payload: bytes, persist: bool = True) -> Dict[str, bool]:
        """Queue for ``pair`` (even with nobody connected) and push to its live connections.

        ``persist=False``: the outbox's store has the message already (cluster mode)."""
        outbox = self.outbox
        if outbox is None:
            return self._count(self._direct(conn_ids, _frame(payload)), payload)
        peers = self._peers
        for uuid in conn_ids:
            if uuid in peers:
                break
        else:  # nobody live: queued only if the receiver may hold one more queue
            if not outbox.admits(pair):
                raise DeliveryRefused(
                    "the receiver has no live connection on this platform and already has "
                    f"messages queued for {outbox.max_pairs_per_user} platforms; not queued",
                    field="message_dim.platform")
        entry = self._append(outbox, pair, msg_id, payload, None, persist)
        if outbox.store is not None:
            store = self._store()
            if store is not None:  # written once committed (end of this loop turn)
                self._record_receipt(store)
                self._later.append((pair, entry, [uuid for uuid in conn_ids if uuid in peers]))
                self._touch()
                return self._count({uuid: uuid in peers for uuid in conn_ids}, payload)
        frame = _frame(payload)
        results: Dict[str, bool] = {}
        sent = 0
        for uuid in conn_ids:
            peer = peers.get(uuid)
            if peer is not None and self._push(peer, entry, frame):
                results[uuid] = True
                sent += 1
            else:
                results[uuid] = False
        if sent:  # the server's messages_sent / bytes_sent (as _count does)
            counters = self._counters
            counters["messages_sent"] += sent
            counters["bytes_sent"] += sent * len(payload)
        return results

    def to_connections(self, conn_ids: Iterable[str], msg_id: str, payload: bytes,
                       only: bool = False) -> Dict[str, bool]:
        """One frame to many connections (broadcast): one outbox entry per pair.

        ``only``: the entry is for exactly these connections, not for their pair's others
        (a message addressed to one connection uuid).
        """
        if self.outbox is None:
            return self._count(self._direct(conn_ids, _frame(payload)), payload)
        by_pair: Dict[Pair, List[str]] = {}
        results: Dict[str, bool] = {}
        for uuid in conn_ids:
            peer = self._peers.get(uuid)
            if peer is None:
                results[uuid] = False
            else:
                by_pair.setdefault(peer.pair, []).append(uuid)
        frame = _frame(payload)
        store = self._store()
        if store is not None:
            self._record_receipt(store)
        for pair, uuids in by_pair.items():
            target = uuids[0] if only and len(uuids) == 1 else None
            entry = self._append(self.outbox, pair, msg_id, payload, target)
            if store is not None:  # written once committed
                self._later.append((pair, entry, uuids))
                for uuid in uuids:
                    results[uuid] = True
                continue
            for uuid in uuids:
                results[uuid] = self._push(self._peers[uuid], entry, frame)
        self._touch()
        return self._count(results, payload)

    def _count(self, results: Dict[str, bool], payload: bytes) -> Dict[str, bool]:
        """Count what was written (the server's ``messages_sent`` / ``bytes_sent``)."""
        sent = sum(results.values())
        if sent:
            counters = self._counters
            counters["messages_sent"] += sent
            counters["bytes_sent"] += sent * len(payload)
        return results

    def _direct(self, conn_ids: Iterable[str], frame: PreparedFrame) -> Dict[str, bool]:
        """No outbox: write now, or not at all when the connection is over its mark."""
        peers = self._peers
        results: Dict[str, bool] = {}
        for uuid in conn_ids:
            peer = peers.get(uuid)
            conn = peer.conn if peer is not None else None
            sent = bool(conn is not None and conn.is_writable and conn.send_prepared(frame))
            results[uuid] = sent
            if sent:
                peer.messages_out += 1  # type: ignore[union-attr]
        return results

    def _push(self, peer: Peer, entry: OutboxEntry, frame: PreparedFrame) -> bool:
        """Write ``entry`` if it is the peer's next one and the connection takes it, else
        catch the peer up (flush); False when the connection is not open."""
        conn = peer.conn
        if conn is None:
            return False
        cursor = peer.cursor
        if cursor >= entry.prev_seq and conn.is_writable:  # writable implies open
            if cursor >= entry.seq:
                return True  # already written (caught up by a flush)
            seq = peer.cursor = entry.seq
            conn.send_prepared(frame)
            peer.messages_out += 1
            written = self._written
            if seq > written.get(peer.pair, 0):
                written[peer.pair] = seq
            return True
        if not conn.is_open:
            return False
        if cursor < entry.seq:
            self.flush(peer)
        return True

    def flush(self, peer: Peer) -> int:
        """Write the peer's pending messages after its cursor, in order, while writable."""
        outbox, conn = self.outbox, peer.conn
        if outbox is None or conn is None:
            return 0
        written = 0
        # durable: only what is committed leaves the process
        limit = self._committed_seq if self._store() is not None else None
        for entry in outbox.pending_after(peer.pair, peer.cursor):
            if limit is not None and entry.seq > limit:
                break
            if entry.only is not None and entry.only != peer.uuid:
                peer.cursor = entry.seq  # addressed to another connection of the pair
                continue
            if not conn.is_writable:
                break
            conn.send_prepared(_frame(entry.payload))
            peer.cursor = entry.seq
            written += 1
        peer.messages_out += written
        if written and peer.cursor > self._written.get(peer.pair, 0):
            self._written[peer.pair] = peer.cursor
        return written

    # -- the cluster seam (docs/cluster.md) --------------------------------------------------

    def enqueue(self, pair: Pair, msg_id: str, payload: bytes, persist: bool = True) -> None:
        """Queue without writing (the pair's connections get it when they are flushed)."""
        if self.outbox is not None:
            self._append(self.outbox, pair, msg_id, payload, None, persist)

    def _append(self, outbox: Outbox, pair: Pair, msg_id: str, payload: bytes,
                target: Optional[str] = None, persist: bool = True) -> OutboxEntry:
        """Into the outbox; a storage failure fails the frame being handled (not acked: the
        client re-sends it); an eviction it caused is logged."""
        try:
            entry = outbox.append(pair, msg_id, payload, target, persist)
        except Exception as exc:
            delivery_failed(exc)
            raise
        if outbox.evicted != self._evicted_logged:
            self._log_evictions(pair)
        return entry

    def _log_evictions(self, pair: Pair) -> None:
        """Messages evicted to keep the outbox in its bounds are lost for their receivers:
        said at WARNING the first time, then once per 1,000 more (counted in stats)."""
        assert self.outbox is not None
        evicted, logged = self.outbox.evicted, self._evicted_logged
        self._evicted_logged = evicted
        if logged == 0 or evicted // 1000 > logged // 1000:
            logger.warning("outbox over its bounds: %d undelivered message(s) evicted so far, "
                           "oldest first (the latest for %s); raise outbox_max_per_pair / "
                           "outbox_max_bytes, or the receiver is not keeping up", evicted,
                           pair_label(pair))

    def is_queued(self, pair: Pair, msg_id: str) -> bool:
        return self.outbox is not None and self.outbox.contains(pair, msg_id)

    def forget_pair(self, pair: Pair) -> int:
        """Drop a pair's queue here only; the store keeps it (another node may serve it)."""
        return self.outbox.discard_pair(pair) if self.outbox is not None else 0

    def use_store(self, store: OutboxStore) -> None:
        """Mirror the outbox into ``store`` (the cluster's) instead of its own store."""
        if self.outbox is None:
            return
        previous = self.outbox.replace_store(store)
        self._store_changed()
        if previous is not None and previous is not store:
            logger.warning("cluster mode keeps the outbox in the cluster store; "
                           "outbox_path is ignored")
            previous.close()

    # -- connection events ------------------------------------------------------------------

    def peer_opened(self, peer: Peer) -> None:
        """A (re)connected peer gets every unacked message of its pair, oldest first.

        (For a pair that never acked: only the messages no connection was sent yet.)
        """
        if peer.resumable:
            self._acking.add(peer.pair)
        peer.cursor = 0 if peer.pair in self._acking else self._written.get(peer.pair, 0)
        resent = self.flush(peer)
        if self._commit_handle is not None:  # what is queued but not committed: later
            self._opened.append(peer.uuid)
        if resent:
            self.resent += resent
            logger.info("sent %d waiting message(s) to %s as it connected (queued while it "
                        "was away, or unacked before)", resent, peer.uuid_label)

    def peer_closed(self, peer: Peer, siblings: Iterable[Peer] = ()) -> None:
        """A connection of a pair that never acked is gone: forget what it was sent
        (but not what another live connection of the pair has still to get)."""
        pair = peer.pair
        siblings = list(siblings)
        if self.outbox is not None and pair not in self._acking and peer.cursor:
            through = min([peer.cursor, self._written.get(pair, 0),
                           *(p.cursor for p in siblings)])
            if through:
                self.outbox.drop_through(pair, through)
                self._touch()
        if not siblings and (self.outbox is None or not self.outbox.depth(pair)):
            # the pair's last connection, nothing queued: nothing to remember about it
            self._acking.discard(pair)
            self._written.pop(pair, None)

    def refused_as_too_big(self, peer: Peer) -> Optional[Tuple[OutboxEntry, int, bool]]:
        """``peer``'s receiver closed the connection over its own size limit (1009). The
        largest message written to it and not acked is the suspect (core/size_refusals.py);
        returns (suspect, closes in a row over it, given up) when there is one: given up
        on the last strike, removed as if acked (the pair's other messages go on)."""
        outbox = self.outbox
        if outbox is None or not peer.cursor:
            return None
        written = [e for e in outbox.pending_after(peer.pair, 0)
                   if e.seq <= peer.cursor and (e.only is None or e.only == peer.uuid)]
        if not written:
            return None
        suspect = max(written, key=lambda e: len(e.payload))
        if not self._too_big.refused(peer.pair, suspect.msg_id):
            return suspect, self._too_big.strikes_of(peer.pair), False
        if outbox.ack(peer.pair, suspect.msg_id, acked=False):  # (cluster: from its stream)
            self.too_big_dropped += 1
            if outbox.store is not None:
                self._touch()
        return suspect, self._too_big.strikes, True

    def acked(self, peer: Peer, msg_id: str) -> bool:
        """Apply a receiver's ack; True when it acked a message that waited for it."""
        pair = peer.pair
        self._acking.add(pair)
        outbox = self.outbox
        matched = outbox is not None and outbox.ack(pair, msg_id)
        if matched and outbox is not None and outbox.store is not None:
            self._touch()  # the store's removal is committed with the group
        if self._waiters:
            waiter = self._waiters.pop((pair, msg_id), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(peer.uuid)
                matched = True
        return matched

    def remote_acked(self, pair: Pair, msg_id: str, uuid: str) -> None:
        """Cluster mode: a connection on another hub node acked ``msg_id``."""
        waiter = self._waiters.pop((pair, msg_id), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(uuid)

    def expect_ack(self, pair: Pair, msg_id: str) -> asyncio.Future[str]:
        """Start waiting for ``msg_id``'s ack now (before the send completes: an ack that
        comes back first must not be missed); :meth:`wait_ack` then waits on it."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters[(pair, msg_id)] = fut
        return fut

    async def wait_ack(self, pair: Pair, msg_id: str, timeout: float,
                       fut: asyncio.Future[str]) -> Optional[str]:
        """The uuid of the connection that acked ``msg_id`` within ``timeout``, else None
        (``fut`` from :meth:`expect_ack`, called before the message was sent)."""
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self.drop_waiter(pair, msg_id)

    async def ack_result(self, pair: Pair, msg_id: str, timeout: float,
                         fut: asyncio.Future[str]) -> Dict[str, bool]:
        """What ``send_message(..., ack_timeout=...)`` returns: ``{uuid: True}`` for the
        connection that acked within ``timeout``, else ``{}``."""
        acker = await self.wait_ack(pair, msg_id, timeout, fut)
        return {acker: True} if acker is not None else {}

    def drop_waiter(self, pair: Pair, msg_id: str) -> None:
        """Stop waiting for ``msg_id``'s ack (its send failed, or the wait ended)."""
        self._waiters.pop((pair, msg_id), None)

    def expire(self) -> int:
        dropped = self.outbox.expire() if self.outbox is not None else 0
        self._touch()
        return dropped

    def stats(self) -> Dict[str, int]:
        base = self.outbox.stats() if self.outbox is not None else {
            "outbox_depth": 0, "outbox_bytes": 0, "outbox_pairs": 0, "acked": 0,
            "evicted": 0, "expired": 0,
        }
        base["resent"] = self.resent
        base["ack_waiters"] = len(self._waiters)
        base["commit_failures"] = self.commit_failures
        base["too_big_dropped"] = self.too_big_dropped
        return base

    def close(self) -> None:
        if self._commit_handle is not None:
            self._commit_handle.cancel()
            self._commit()
        if self.outbox is not None:
            self.outbox.close()
