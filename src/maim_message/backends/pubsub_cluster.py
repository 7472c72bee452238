"""The distributed cluster backend, independent of the store: a pub/sub base class.

Everything a node decides lives here: which pairs it holds and whether their backlog is
still being read, what it delivers from a channel message, what a fan-out returns, when
it re-reads, presence snapshots for the hub-wide queries. A subclass only moves data: it
publishes, listens and stores (the hooks of ``pubsub_io.PubSubIO``). ``redis_cluster.RedisCluster``
does it with Redis; ``memory_bus.MemoryCluster`` with an in-process bus, for tests.

Model (docs/cluster.md has the long version):

- **Outbox in the store.** Every message for a (user, platform) pair is appended to the
  pair's stream by the node that sends it, in the same store call that routes it; an ack
  deletes it (any node). A node keeps the streams of the pairs it holds in its ordinary
  Outbox (through :class:`ClusterOutboxStore`) and reads a pair's stream when the pair's
  first connection opens on it, so a client that reconnects elsewhere gets its backlog.
- **Routing.** The store knows which node holds which connection of a pair; the send
  publishes a :class:`PairMessage` to those nodes. Fan-outs go once to every node as a
  :class:`FanoutMessage`; each delivers to its own matching connections.
- **Presence.** A heartbeat keeps the node alive in the store and reads the other nodes'
  connection lists while the queries use them; a node that finds it was declared dead (a
  long pause) registers again and re-reads its pairs' streams.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Coroutine,
    Dict,
    List,
    Optional,
    Set,
    Tuple,
)

from ..core.defaults import DEFAULT_OUTBOX
from ..core.redact import pair_label
from ..errors import ClusterError
from .cluster_acks import AckBatching
from .cluster_base import ClusterHost, Pair, user_key
from .cluster_guard import FrameGuard
from .fanout_log import FanoutLog
from .pubsub_io import RESUBSCRIBED, Presence, StoredMessage
from .pubsub_messages import (
    AckMessage,
    AdminMessage,
    ClusterMessage,
    FanoutMessage,
    PairGroup,
    PairMessage,
    decode_batch,
    decode_groups,
    decode_message,
    encode_message,
)
from .pubsub_send import PairSending
from .pubsub_state import ClusterOutboxStore, PairState, resync_merge, stream_id_key
from .stream_ids import ANY_ORIGIN, StreamIds

if TYPE_CHECKING:
    from ..server.peer import Peer

logger = logging.getLogger(__name__)

SNAPSHOT_DEMAND_WINDOW = 30.0  # s: keep refreshing the presence snapshot this long after use
READ_RETRY_FIRST = 0.1  # s: first wait before a failed stream read is tried again
READ_RETRY_MAX = 5.0  # s: the wait doubles up to this




class PubSubCluster(PairSending, AckBatching, FrameGuard):
    """A hub node in a cluster coordinated through a pub/sub bus with a store."""

    distributed = True

    def __init__(self, *, node_id: str, heartbeat_interval: float = 1.0,
                 node_ttl: float = 5.0, outbox_ttl: float = DEFAULT_OUTBOX.ttl) -> None:
        if node_ttl <= heartbeat_interval:
            raise ValueError("cluster_node_ttl must be longer than cluster_heartbeat_interval")
        self.node_id = node_id
        self.heartbeat_interval = heartbeat_interval
        self.node_ttl = node_ttl
        self.outbox_ttl = outbox_ttl
        self._host: Optional[ClusterHost] = None
        self._tasks: List[asyncio.Task[None]] = []
        self._loads: Set[asyncio.Future[None]] = set()
        self._pairs: Dict[Pair, PairState] = {}
        self._store = ClusterOutboxStore(self)
        self._snapshot: Presence = {}
        self._snapshot_used = 0.0  # last use of the snapshot (the heartbeat refreshes it)
        self._snapshot_at = 0.0  # last refresh
        self._joined = False
        self._sids = StreamIds()  # stream ids of the held pairs' unacked messages
        self._ack_turn: Dict[Pair, Tuple[List[str], str]] = {}  # acks of this loop turn
        self._unacked_removals: Dict[Pair, Set[str]] = {}  # of those: given up, not acked
        self._alive: Optional[Set[str]] = None  # other live nodes (None: not read yet)
        # Nodes seen alive and then gone, until seen alive again: their where-entries are
        # stale until reaped. (A node not in _alive may just have joined since.)
        self._gone: Set[str] = set()
        # pair -> its (uuid, node) entries elsewhere, from its last write (what a send
        # that does not wait for the store returns for other nodes)
        self._remote: Dict[Pair, List[Tuple[str, str]]] = {}
        self.received = 0  # channel messages handled
        self.remote_deliveries = 0  # messages for connections here sent by other nodes
        self.takeovers = 0  # pairs whose stream had a backlog when they connected here
        self.sends_to_offline = 0  # stored for a pair connected on no node when written
        self.duplicate_frames = 0  # re-sent frames another node (or this one) had handled
        self.reaped = 0
        self.rejoins = 0
        self.node_deaths = 0  # other nodes seen dying (each makes this node re-read)
        self.resyncs = 0  # re-reads of the held pairs' streams (node deaths, reconnects)
        self._fanouts = FanoutLog()  # where this node is in the fan-out log (Redis only)
        self.fanouts_recovered = 0  # others' fan-outs read from the log after a reconnect

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: ClusterHost) -> None:
        self._host = host
        await self._join()
        for record in await self._admin_kept():  # before the server listens
            self._admin_replay(record)
        host.delivery.use_store(self._store)
        self._joined = True
        self._tasks = [asyncio.ensure_future(self._read_loop()),
                       asyncio.ensure_future(self._heartbeat_loop())]

    async def stop(self) -> None:
        if not self._joined:
            return
        self._joined = False
        pending = set(self._tasks)
        while pending:  # again until they end: a library may swallow one cancellation
            for task in pending:
                task.cancel()
            _done, pending = await asyncio.wait(pending, timeout=1.0)
        for task in self._tasks:
            if not task.cancelled():
                task.exception()  # retrieved (a crash was logged where it happened)
        self._tasks = []
        host = self._host
        if host is not None:
            for peer in list(host.peers.values()):
                self._presence_remove(peer)
        await self._leave()
        loads, self._loads = list(self._loads), set()
        for load in loads:  # reads (and their retries) of pairs no longer held
            load.cancel()
        await asyncio.gather(*loads, return_exceptions=True)
        self._pairs.clear()
        self._remote.clear()
        self._sids.clear()
        self._snapshot = {}

    def _running(self) -> ClusterHost:
        host = self._host
        if host is None or not self._joined:
            raise ClusterError("cluster backend is not running (server not started)")
        return host

    # -- connections --------------------------------------------------------------------------

    def connection_opened(self, peer: Peer) -> None:
        host = self._host
        if host is None or not self._joined:
            if host is not None:
                host.delivery.peer_opened(peer)
            return
        self._presence_add(peer, self._presence_info(peer))
        pair = peer.pair
        state = self._pairs.get(pair)
        if state is None:
            if not host.delivery.enabled:
                self._pairs[pair] = PairState(loading=False)
                host.delivery.peer_opened(peer)
                return
            state = self._pairs[pair] = PairState(loading=True)
            self._spawn(self._finish_load(pair, state, self._read_pair(pair)))
        elif not state.loading:
            host.delivery.peer_opened(peer)
        # else: every connection of a loading pair gets its backlog when the load ends

    def connection_closed(self, peer: Peer) -> None:
        host = self._host
        if host is None or not self._joined:
            return
        self._presence_remove(peer)
        pair = peer.pair
        # Not Delivery.peer_closed (which drops what a pair that never acked here was
        # written): whether the pair acks is known per node only, and another connection
        # of it, on another node or reconnecting, may still need those messages.
        if not host.routes.lookup(*pair):
            # Last connection of the pair here: the store holds its unacked messages; the
            # next node it connects to (maybe this one) reads them from the stream.
            if pair in self._ack_turn:
                self._flush_acks()  # its acks go out before another node reads its stream
            self._pairs.pop(pair, None)
            self._sids.forget(pair)
            host.delivery.forget_pair(pair)

    def _presence_info(self, peer: Peer) -> Dict[str, Any]:
        info = peer.info()
        info["node"] = self.node_id
        info["uk"] = user_key(peer.user_id)
        return info

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)

    def _holds(self, pair: Pair, state: PairState) -> bool:
        """``state`` is still the pair's here (it did not leave, the node did not stop)."""
        return self._joined and self._pairs.get(pair) is state

    async def _read_held(self, pair: Pair, state: PairState, what: str,
                         read: Awaitable[List[StoredMessage]]) -> Optional[List[StoredMessage]]:
        """The pair's stream (``read``: the first read, queued when it was asked for); a
        failed read (an error reply, a queue closed; a stalled Redis is waited for, the
        read queued once) is tried again with backoff for as
        long as the pair is held here by ``state`` (its channel messages stay buffered
        meanwhile). None once the pair left or the node stopped."""
        delay = READ_RETRY_FIRST
        failures = 0
        while True:
            # a task of its own: a cancelled read is a failed read, this task's own
            # cancellation (the loop shutting down) is not swallowed
            reading = asyncio.ensure_future(read)
            try:
                await asyncio.wait((reading,))
            except asyncio.CancelledError:
                reading.cancel()
                raise
            error: Optional[BaseException] = (
                asyncio.CancelledError() if reading.cancelled() else reading.exception())
            if not self._holds(pair, state):
                return None
            if error is None:
                if failures:
                    logger.info("cluster: %s of pair %s succeeded after %d failure(s)",
                                what, pair_label(pair), failures)
                return reading.result()
            failures += 1
            log = logger.warning if failures == 1 else logger.debug
            log("cluster: %s of pair %s failed (%s, attempt %d); retrying in %.2gs while "
                "it has connections here", what, pair_label(pair), type(error).__name__,
                failures, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, READ_RETRY_MAX)
            if not self._holds(pair, state):
                return None
            read = self._read_pair(pair)

    async def _finish_load(self, pair: Pair, state: PairState,
                           read: Awaitable[List[StoredMessage]]) -> None:
        """A pair's first connection opened here: its backlog (the stream) goes out
        first, then what arrived meanwhile (buffered), then the pair is loaded."""
        entries = await self._read_held(pair, state, "the backlog read", read)
        host = self._host
        if entries is None or host is None:
            return  # the pair left this node meanwhile
        delivery = host.delivery
        cutoff = (time.time() - self.outbox_ttl) * 1000
        acked = self._sids.acked_before_leaving(pair)
        if any(msg_id not in acked for _sid, msg_id, _payload in entries):
            self.takeovers += 1
        for sid, msg_id, payload in entries:
            state.loaded_upto = stream_id_key(sid)
            if msg_id in acked:  # acked here just before the pair left: its delete is
                self._sids.acked_in_entry(pair, sid, msg_id)  # under way, or its entry
                continue  # stays for an unacked one (a re-read leaves it out too)
            self._sids.known(pair, msg_id, sid, ANY_ORIGIN)
            if state.loaded_upto[0] >= cutoff and not delivery.is_queued(pair, msg_id):
                delivery.enqueue(pair, msg_id, payload, persist=False)
        for msg_id, payload, persist in state.buffer:
            if not delivery.is_queued(pair, msg_id):
                delivery.enqueue(pair, msg_id, payload, persist=persist)
        state.buffer.clear()
        state.loading = state.reading = False
        for uuid in host.routes.lookup(*pair):
            peer = host.peers.get(uuid)
            if peer is not None and peer.conn is not None:
                delivery.peer_opened(peer)
        self._reread_if_asked(pair, state)

    # -- the admin plane ----------------------------------------------------------------------

    async def admin(self, action: str, args: Dict[str, str], durable: bool = False) -> None:
        """Have every other node apply an admin action (this node applied it already).
        ``durable``: also kept in the store, and applied by every node when it starts
        (a restart, or a node that joins later). Returns once the store has it."""
        self._running()
        kept = (self._admin_keep(encode_message(AdminMessage("", action, args)))
                if durable else None)
        self._publish(AdminMessage(self.node_id, action, args))
        await self._written()
        if kept is not None:
            try:
                await kept
            except Exception as exc:  # refused (out of memory, a read-only replica)
                raise ClusterError(f"the admin action was applied but not stored for "
                                   f"nodes that start later: {exc}") from exc

    def _admin_replay(self, record: bytes) -> None:
        try:
            message = decode_message(record)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("cluster: unreadable stored admin action skipped: %s", exc)
            return
        if isinstance(message, AdminMessage):
            self._admin_apply(message)

    def _admin_apply(self, message: AdminMessage) -> None:
        apply = getattr(self._host, "apply_admin", None)
        if apply is not None:
            apply(message.action, dict(message.args))

    # -- channel messages ---------------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Act on what ``_listen`` yields, until stopped (cancelled). A backend that reads
        its channels itself overrides this to run its readers, which hand each payload
        to :meth:`_channel_data` as they read it (RedisCluster: no task hop per message)."""
        async for data in self._listen():
            if data is RESUBSCRIBED:
                self._resync_all("channel reconnected")
                continue
            self._channel_data(data)

    def _channel_data(self, data: bytes) -> None:
        """One channel message's payload: decoded and acted on now; an undecodable one is
        logged and dropped."""
        try:
            groups = decode_groups(data)  # the usual one: a pairs batch, per pair
            messages = decode_batch(data) if groups is None else None
        except Exception as exc:
            logger.warning("cluster: undecodable channel message dropped: %s: %s",
                           type(exc).__name__, exc)
            return
        if groups is not None:
            self.handle_groups(groups)
        elif messages is not None:
            self.handle_messages(messages)

    def handle_messages(self, messages: List[ClusterMessage]) -> None:
        """Act on messages from other nodes, in order (consecutive pair messages of one
        origin, pair and entry are handled as one run: :meth:`handle_groups`)."""
        groups: List[PairGroup] = []
        for message in messages:
            if type(message) is not PairMessage:
                if groups:
                    self.handle_groups(groups)
                    groups = []
                try:
                    self.handle_message(message)
                except Exception:  # a bad message must not stop the node's routing
                    logger.exception("cluster: failed to handle a channel message")
                continue
            origin, user, platform, msg_id, sid, payload, notify = message
            last = groups[-1] if groups else None
            if last is None or last[:4] != (origin, user, platform, [sid]):
                groups.append(PairGroup(origin, user, platform, [sid], []))
            groups[-1].items.append((msg_id, payload, notify))
        if groups:
            self.handle_groups(groups)

    def handle_groups(self, groups: List[PairGroup]) -> None:
        """Act on one channel message's pair groups: each pair held here gets its
        messages that are newer than its last stream read (one entry's messages share
        the check), or buffers them while a read of its stream is pending."""
        pairs, node_id = self._pairs, self.node_id
        delivered = 0
        for origin, user, platform, stream_ids, items in groups:
            self.received += len(items)
            if origin == node_id:
                continue
            pair = (user, platform)
            # once per group: a delivery ends no connection and starts no re-read
            # synchronously (a closed connection is dropped on a later loop turn)
            state = pairs.get(pair)
            if state is None:
                continue  # not here any more; the stream keeps it for the next node
            delivered += len(items)
            if len(stream_ids) == 1:  # a send batch's form: one entry holds them all
                self._take_entry(pair, state, origin, stream_ids[0], items)
            else:  # one id per message
                for sid, item in zip(stream_ids, items):
                    self._take_entry(pair, state, origin, sid, [item])
        self.remote_deliveries += delivered

    def _take_entry(self, pair: Pair, state: PairState, origin: str, sid: str,
                    items: List[Tuple[str, bytes, bool]]) -> None:
        """Messages of one stream entry for a pair held here: delivered unless the pair's
        last stream read covered the entry, or held while a read is pending. A bad entry
        or message is logged; the others go on."""
        try:
            if state.reading:  # a read of its stream is pending: after the read
                self._hold(pair, state, origin, sid, items)
                return
            self._sids.known_entry(pair, items, sid, origin)
            if sid and stream_id_key(sid) <= state.loaded_upto:
                return  # the stream read covered this entry
        except Exception:
            logger.exception("cluster: failed to handle a channel message")
            return
        deliver = self._deliver
        for msg_id, payload, _notify in items:
            try:
                deliver(pair, msg_id, payload)
            except Exception:
                logger.exception("cluster: failed to handle a channel message")

    def _hold(self, pair: Pair, state: PairState, origin: str, sid: str,
              items: List[Tuple[str, bytes, bool]]) -> None:
        """A read of the pair's stream is pending: its messages wait for it (while the
        pair loads, known now and buffered; on a re-read, merged with what it finds)."""
        if state.loading:
            self._sids.known_entry(pair, items, sid, origin)
            state.buffer += [(msg_id, payload, False) for msg_id, payload, _n in items]
        else:
            state.rebuffer += [(sid, msg_id, payload, origin if notify else None)
                               for msg_id, payload, notify in items]

    def handle_message(self, message: ClusterMessage) -> None:
        """Act on one message from another node (or, for acks, from the store)."""
        if isinstance(message, PairMessage):
            self.handle_messages([message])
            return
        self.received += 1
        if isinstance(message, FanoutMessage):
            ready = self._fanouts.handle_now(message)
            if len(ready) > 1:
                logger.error("cluster: the fan-out log could not be read while %d fan-outs "
                             "waited: they go out now; the ones missed before are lost",
                             len(ready))
            for fanout in ready:
                self._fanout_arrived(fanout)
        elif isinstance(message, AckMessage):
            host = self._host
            if host is not None:
                host.delivery.remote_acked(message.pair, message.msg_id, message.uuid)
        elif isinstance(message, AdminMessage):
            if message.origin != self.node_id:
                self._admin_apply(message)

    def _fanout_arrived(self, message: FanoutMessage) -> None:
        """A fan-out from the channel, or read from the log after a gap."""
        if message.origin != self.node_id:  # the origin delivered its own connections
            self._fanout_local(message.selector, message.msg_id, message.payload)

    def _resync_all(self, why: str, only: Optional[Callable[[Pair], bool]] = None) -> None:
        """Re-read the streams of every pair held here (``only``: those it keeps) and
        deliver what is missing. A pair whose stream is being read already is read once
        more after that read (what it missed may postdate the pending read)."""
        pairs: List[Tuple[Pair, PairState]] = []
        for pair, state in self._pairs.items():
            if only is not None and not only(pair):
                continue
            if state.reading:
                state.again = True
            else:
                pairs.append((pair, state))
        if not pairs:
            return
        self.resyncs += 1
        logger.info("cluster: re-reading %d pair stream(s) (%s)", len(pairs), why)
        for pair, state in pairs:
            self._start_reread(pair, state)

    def _start_reread(self, pair: Pair, state: PairState) -> None:
        state.reading = True  # its channel messages wait for the re-read (handle_messages)
        self._spawn(self._finish_resync(pair, state, self._read_pair(pair)))

    def _reread_if_asked(self, pair: Pair, state: PairState) -> None:
        if state.again:
            state.again = False
            self._start_reread(pair, state)

    async def _finish_resync(self, pair: Pair, state: PairState,
                             read: Awaitable[List[StoredMessage]]) -> None:
        """Deliver what the re-read found that this node did not deliver yet, merged by
        stream id with the channel messages that arrived meanwhile: per sending node,
        in stream order, each once."""
        entries = await self._read_held(pair, state, "the re-read", read)
        if entries is None:
            return
        merged = resync_merge(entries, state.rebuffer, state.loaded_upto)
        state.rebuffer = []
        state.reading = False
        sids = self._sids
        for sid, msg_id, payload, origin in merged:
            state.loaded_upto = max(state.loaded_upto, stream_id_key(sid))
            if sids.has(pair, msg_id) or sids.was_acked(pair, sid, msg_id):
                continue  # delivered here already (acked, or its ack not applied yet)
            sids.known(pair, msg_id, sid, origin)
            self._deliver(pair, msg_id, payload)
        self._reread_if_asked(pair, state)

    # -- presence -----------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        # while joined: a cancellation that redis-py turns into a connection error while
        # a heartbeat is in flight must not keep the loop (and stop()) going
        while self._joined:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                still_member, alive = await self._heartbeat()
                gone = self._alive - set(alive) if self._alive is not None else set()
                self._alive = set(alive)
                self._gone = (self._gone | gone) - self._alive
                if gone:
                    # A node that died after storing a batch but before publishing it:
                    # what it stored for pairs held here is read from the streams.
                    self.node_deaths += len(gone)
                    self._resync_all(f"node(s) {', '.join(sorted(gone))} gone (died or left)")
                if not still_member:
                    self._rejoin()
                if not alive:
                    self._snapshot = {}
                if time.monotonic() - self._snapshot_used < SNAPSHOT_DEMAND_WINDOW:
                    await self.refresh(alive)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("cluster: heartbeat failed: %s", type(exc).__name__)

    def _rejoin(self) -> None:
        """We were taken for dead (a pause longer than node_ttl): register everything again."""
        host = self._host
        if host is None:
            return
        self.rejoins += 1
        logger.warning("cluster: node %s missed its heartbeat deadline; re-registering",
                       self.node_id)
        self._rejoin_store()
        for peer in list(host.peers.values()):
            if peer.conn is not None:
                self._presence_add(peer, self._presence_info(peer))
        self._resync_all("rejoined")

    async def refresh(self, nodes: Optional[List[str]] = None) -> None:
        """Read the other live nodes' connection lists now (what the sync queries show)."""
        if not self._joined:
            return
        self._snapshot = await self._read_presence(nodes)
        self._snapshot_used = self._snapshot_at = time.monotonic()

    # -- queries ------------------------------------------------------------------------------

    def user_count(self) -> int:
        host = self._host
        if host is None:
            return 0
        self._snapshot_used = time.monotonic()
        users = {user_key(user) for user in host.routes.users()}
        for conns in self._snapshot.values():
            users.update(str(info.get("uk")) for info in conns.values())
        return len(users)

    def connections(self) -> Dict[str, Dict[str, Any]]:
        host = self._host
        if host is None:
            return {}
        self._snapshot_used = time.monotonic()
        out: Dict[str, Dict[str, Any]] = {}
        for conns in self._snapshot.values():
            for uuid, info in conns.items():
                out[uuid] = {k: v for k, v in info.items() if k not in ("pk", "uk")}
        for uuid, peer in host.peers.items():
            info = peer.info()
            info["node"] = self.node_id
            out[uuid] = info
        return out

    async def stored(self, pair: Pair) -> List[StoredMessage]:
        """What the pair's stream holds, oldest first: the admin plane's view of a pair
        that may be connected on no node (its queue lives in Redis, not on a node)."""
        self._running()
        return await self._read_pair(pair)

    async def drop_stored(self, pair: Pair) -> int:
        """Delete everything the pair's stream holds (the admin's drain of a pair that is
        not connected here); nobody waiting for their acks is told "acked". Returns how
        many messages went."""
        entries = await self.stored(pair)
        if entries:
            self._store_delete(pair, sorted({sid for sid, _m, _p in entries}), True)
            await self._written()
        return len(entries)

    def stats(self) -> Dict[str, Any]:
        alive = self._alive
        return {"node_id": self.node_id, "pairs": len(self._pairs),
                "nodes_alive": (len(alive) if alive is not None else len(self._snapshot)) + 1,
                "nodes_seen": len(self._snapshot) + 1, "received": self.received,
                "remote_deliveries": self.remote_deliveries,
                "stream_backlog": len(self._sids), "takeovers": self.takeovers,
                "sends_to_offline": self.sends_to_offline,
                "duplicate_frames": self.duplicate_frames, "node_deaths": self.node_deaths,
                "resyncs": self.resyncs, "fanouts_recovered": self.fanouts_recovered,
                "reaped": self.reaped, "rejoins": self.rejoins}
