"""The cluster backend on Redis (redis-py asyncio): publish, listen, store.

:class:`~.pubsub_cluster.PubSubCluster` decides everything; this class maps its hooks onto
one or more Redis primaries (``redis_shards``: which shard holds a pair;
``redis_presence``: presence and liveness). Sends and frame checks collected for
``flush_delay`` go to each shard as one MULTI/EXEC transaction of plain commands
(``redis_batch``: a pair's messages become one stream entry; acked entries are deleted in
the same write, outside the transaction) and the batch's frame checks (two HMGETs, or with
claims one ``CHECK_FRAMES`` call); once Redis answered, the node publishes one "pairs"
message to each other node holding any of the pairs. A node subscribes to its own channel
on every shard (``redis_channel``: payloads handled as read). Commands are pipelined in
order per shard through ``redis_pipeline.CommandQueue``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from functools import partial
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..core.defaults import DEFAULT_OUTBOX
from ..errors import ClusterError, ServerStartError
from ..server.acks import CURRENT_RECEIPT
from .cluster_base import Pair
from .frame_dedupe import (
    ASK,
    CLAIM,
    FRESH,
    HANDLED,
    HELD,
    INCARNATION_SEP,
    SEEN,
    STARTED,
    ClaimRenewals,
    DedupeBuckets,
    home_shard,
    merge_answers,
    records_answer,
    split_asks,
)
from .pubsub_cluster import PubSubCluster
from .pubsub_io import SendResult, StoredMessage
from .pubsub_messages import (
    AckMessage,
    AcksMessage,
    AdminMessage,
    FanoutMessage,
    PairMessage,
    encode_message,
    encode_pair_groups,
)
from .redis_batch import MAX_TURN, SendTurn
from .redis_channel import RedisChannel
from .redis_fanout_log import RedisFanoutLog
from .redis_keys import (
    ACK,
    ADD_ONCE,
    CHECK_FRAMES,
    DROP_EMPTY,
    LOG_FANOUT,
    REAP,
    REAP_WHERE,
    UNMARK_FRAME,
    UNREGISTER,
    Keys,
)
from .redis_pipeline import CommandQueue, Script
from .redis_presence import RedisPresence
from .redis_shards import Shard, safe_url, split_urls, url_problem
from .resp_pack import PackedArgs
from .resp_reader import reply_text as _text
from .shard_ring import ShardRing

if TYPE_CHECKING:
    from ..server.acks import GatedFrame, Receipt

__all__ = ["ClusterError", "RedisCluster", "split_urls"]  # ClusterError lives in errors.py

logger = logging.getLogger(__name__)

MAX_CHECK = 2000  # frames per check call (its claims unpack two arguments per frame)


class RedisCluster(PubSubCluster, RedisPresence, RedisFanoutLog):
    """A hub node on one or more Redis primaries (pairs sharded over them)."""

    ack_delay = 0.02
    # s: sends and frame checks are collected this long (several loop turns) into one
    # transaction per shard: fewer, larger batches cost less CPU per message on both sides
    flush_delay = 0.002
    # s: a frame another live node is handling is checked again this often (until that
    # node records it: then acked as a duplicate; or is gone: then handled here)
    held_recheck = 0.1

    def __init__(
        self, url: Union[str, Sequence[str]], *, node_id: str, prefix: str = "maim_hub",
        heartbeat_interval: float = 1.0, node_ttl: float = 5.0,
        outbox_max_per_pair: int = DEFAULT_OUTBOX.max_per_pair,
        outbox_ttl: float = DEFAULT_OUTBOX.ttl,
        write_timeout: float = 10.0, dedupe_ttl: float = 60.0, frame_claims: bool = False,
    ) -> None:
        super().__init__(node_id=node_id, heartbeat_interval=heartbeat_interval,
                         node_ttl=node_ttl, outbox_ttl=outbox_ttl)
        self.urls = split_urls(url)
        self.url = self.urls[0]
        self.keys = Keys(prefix)
        self.ring = ShardRing(self.urls)
        self.dedupe = DedupeBuckets(prefix, dedupe_ttl)
        self.max_per_pair = str(max(1, outbox_max_per_pair))
        self.ttl_ms = str(max(1000, int(outbox_ttl * 1000)))
        self.write_timeout = write_timeout
        self._origin = node_id.encode()  # this node, as Redis answers it
        self.held_frames = 0  # checks answered "a live node is handling it" (re-checked)
        # claim frames when checking them (cluster_frame_claims): a re-send to another node
        # while this one still handles the frame waits for it instead of running again
        self.frame_claims = frame_claims
        # what a handler's first send records: with claims, "started here" (a node that
        # waits for this frame keeps waiting until the handler returned: HANDLED then)
        # This process's life: its alive key holds it, and its claims name it after the
        # node id, so a node restarted under the same id (a StatefulSet pod) does not keep
        # its previous life's claims looking alive until their bucket expires.
        self.incarnation = secrets.token_hex(4)
        self._claimant = node_id + INCARNATION_SEP + self.incarnation
        self._first_record = STARTED + self._claimant if frame_claims else HANDLED
        self._renewals = ClaimRenewals(dedupe_ttl)  # claims of handlers running here
        self._sources = (("drop_empty", DROP_EMPTY), ("add_once", ADD_ONCE), ("ack", ACK),
                         ("unregister", UNREGISTER), ("reap", REAP), ("reap_where", REAP_WHERE),
                         ("check", CHECK_FRAMES), ("unmark", UNMARK_FRAME),
                         ("log_fanout", LOG_FANOUT))
        self._shards = [Shard(i, u) for i, u in enumerate(self.urls)]
        self._shard_of: Dict[Pair, Shard] = {}
        # frame tokens to check in this batch and their frames (no future per frame)
        self._checks: List[str] = []
        self._checked: List[GatedFrame] = []  # (parallel lists: no tuple per frame)
        self._flush_scheduled = False
        self._flushed: Optional[asyncio.Future[None]] = None
        # resolves once this batch is confirmed (what gated frames' acks wait for)
        self._confirm: Optional[asyncio.Future[None]] = None
        self._written_all: Optional[Tuple[Tuple[Any, ...], asyncio.Future[Any]]] = None
        # kept from the join: asyncio.get_running_loop() is a getpid() system call per use
        # on 3.11, and the send path asked for it several times per batch
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    # -- joining and leaving -------------------------------------------------------------------

    async def _join(self) -> None:
        self._loop = asyncio.get_running_loop()
        for shard in self._shards:  # redis-py would raise these mid-start, as a traceback
            problem = url_problem(shard.url)
            if problem:
                raise ServerStartError(f"cluster: Redis URL {safe_url(shard.url)}: {problem}")
        channels = [self.keys.channel(self.node_id)]
        try:
            for shard in self._shards:
                await self._connect(shard, channels + ([self.keys.all_channel]
                                                       if shard.index == 0 else []))
            redis = self._shards[0].redis
            assert redis is not None
            pipe = redis.pipeline(transaction=False)
            pipe.set(self.keys.alive(self.node_id), self.incarnation,
                     px=int(self.node_ttl * 1000))
            pipe.sadd(self.keys.nodes, self.node_id)
            pipe.delete(self.keys.conns(self.node_id))
            await pipe.execute()
        except (RedisError, OSError) as exc:
            failed = next((s for s in self._shards if s.queue is None), self._shards[0])
            for shard in self._shards:
                if shard.channel is not None:
                    await shard.channel.close()
                if shard.redis is not None:
                    await shard.redis.aclose()
                shard.redis = shard.queue = shard.channel = None
            raise ServerStartError(f"cluster: cannot use Redis at {safe_url(failed.url)}: "
                                   f"{type(exc).__name__}: {exc}") from exc
        self._alive_on_other_shards()
        for shard in self._shards:
            assert shard.queue is not None
            shard.queue.start()
        try:  # any published between reading the log's end and subscribing (the
            await self._catch_up_at_join()  # channel's payloads wait for the read loop)
        except Exception as exc:  # the node holds no connection yet: nobody missed them
            logger.warning("cluster: reading the fan-out log at start failed: %s: %s",
                           type(exc).__name__, exc)
            self._fanouts.caught_up()
        logger.info("cluster: node %s joined via %s", self.node_id,
                    ", ".join(safe_url(u) for u in self.urls))

    async def _connect(self, shard: Shard, channels: List[str]) -> None:
        # RESP2: redis-py's RESP3 parser renders every pub/sub message as text for a debug
        # log line (str() of a whole batch's payloads), ~1-2 us per relayed message here
        redis = Redis.from_url(shard.url, socket_connect_timeout=5.0, socket_keepalive=True,
                               protocol=2)
        shard.redis = redis
        await redis.ping()
        queue = CommandQueue(redis, {n: Script(src) for n, src in self._sources},
                             self.write_timeout)
        await queue.load_scripts()
        queue.on_stall = partial(self._turns_stalled, shard)
        shard.channel = RedisChannel(redis, channels, self._channel_data,
                                     partial(self._channel_back, shard),
                                     f"shard {shard.index} ({safe_url(shard.url)})")
        if shard.index == 0:  # the fan-out log's end, read before the channel is subscribed
            newest = await redis.xrevrange(self.keys.fanout_log, count=1)
            self._fanouts.restart(_text(newest[0][0]) if newest else "0-0")
        await shard.channel.open(timeout=5.0)  # subscribed before we announce ourselves
        shard.queue = queue

    async def _leave(self) -> None:
        self._renewals.clear()  # its claims are void once its alive keys are gone
        first = self._shards[0].queue
        if first is not None:
            node = self.node_id
            self._flush()
            first.push(("DEL", self.keys.conns(node), self.keys.alive(node)))
            first.push(("SREM", self.keys.nodes, node))
            for shard in self._shards[1:]:  # its claims there are void now
                if shard.queue is not None:
                    shard.queue.push(("DEL", self.keys.alive(node)))
        for shard in self._shards:  # the channel readers stopped with _read_loop
            if shard.queue is not None:
                await shard.queue.close()
            if shard.channel is not None:
                await shard.channel.close()
            if shard.redis is not None:
                await shard.redis.aclose()
            shard.redis = shard.queue = shard.channel = None
        self._loop = None
        logger.info("cluster: node %s left", self.node_id)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the node joined in (asking asyncio each time is a system call)."""
        return self._loop or asyncio.get_running_loop()

    # -- publish and listen --------------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Each shard's channel kept connected by its own task; payloads are handed to
        ``_channel_data`` as they are read (``RedisChannel.data_received``, in order per
        shard)."""
        await asyncio.gather(*(self._running_channel(s).run() for s in self._shards))

    @staticmethod
    def _running_channel(shard: Shard) -> RedisChannel:
        if shard.channel is None:
            raise ClusterError("cluster backend is not running (server not started)")
        return shard.channel

    def _channel_back(self, shard: Shard) -> None:
        """The shard's channel was re-subscribed (every channel confirmed): what went
        through that shard meanwhile can be missing, only that (the first shard also
        carries the fan-outs: the log is read from the last one handled)."""
        if shard.index == 0:
            self._catch_up_fanouts()
        self._resync_all(f"channel to shard {shard.index} reconnected",
                         partial(self._on_shard, shard))

    def _on_shard(self, shard: Shard, pair: Pair) -> bool:
        return self._shard(pair) is shard

    def _publish(self, message: Union[FanoutMessage, AdminMessage, AcksMessage]) -> None:
        if isinstance(message, FanoutMessage):  # logged: a node whose channel is away reads it
            self._log_fanout(message)
            return
        self._q(self._shards[0]).push(("PUBLISH", self.keys.all_channel,
                                       encode_message(message)))

    def _admin_keep(self, record: bytes) -> Optional[Awaitable[Any]]:
        return self._q(self._shards[0]).push(("SADD", self.keys.admin, record),
                                             want_result=True)

    async def _admin_kept(self) -> List[bytes]:
        fut = self._q(self._shards[0]).push(("SMEMBERS", self.keys.admin), want_result=True)
        assert fut is not None
        return sorted(await fut or ())

    def _notify_ack(self, origin: str, message: AckMessage) -> None:
        self._q(self._shards[0]).push(("PUBLISH", self.keys.channel(origin),
                                       encode_message(message)))

    async def _written(self) -> None:
        if self._flush_scheduled and self._flushed is not None:
            await asyncio.shield(self._flushed)
        for shard in self._shards:
            done = self._q(shard).written()
            if done is not None:
                await asyncio.shield(done)  # one future per waiter (eager handler starts)

    # -- the loop turn's batch -----------------------------------------------------------------

    def _turn(self, shard: Shard) -> SendTurn:
        turn = shard.turn
        if turn is None or turn.size >= MAX_TURN or len(turn.marks) >= 2 * MAX_TURN:  # full
            if turn is not None:
                self._push_turn(shard, turn)
            turn = shard.turn = SendTurn()
        if not self._flush_scheduled:
            self._schedule_flush()
        return turn

    def _schedule_flush(self) -> None:
        self._flush_scheduled = True
        loop = self._event_loop()
        self._flushed = loop.create_future()
        if self.flush_delay > 0:
            loop.call_later(self.flush_delay, self._flush)
        else:
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        """End of the batch: one transaction per shard, one check read per shard."""
        self._flush_scheduled = False
        for shard in self._shards:
            turn, shard.turn = shard.turn, None
            if turn is not None and not turn.empty and shard.queue is not None:
                self._push_turn(shard, turn)
        tokens, self._checks = self._checks, []
        if tokens:
            frames, self._checked = self._checked, []
            for start in range(0, len(tokens), MAX_CHECK):  # Lua's unpack() limit
                self._push_checks(tokens[start:start + MAX_CHECK],
                                  frames[start:start + MAX_CHECK])
        flushed, self._flushed = self._flushed, None
        if flushed is not None and not flushed.done():
            flushed.set_result(None)
        confirm, self._confirm = self._confirm, None
        if confirm is not None:
            _chain(self._queues_written(), confirm)

    def _confirmation(self) -> Optional[asyncio.Future[Any]]:
        if self._flush_scheduled:
            confirm = self._confirm
            if confirm is None:
                confirm = self._confirm = self._event_loop().create_future()
                confirm.add_done_callback(_retrieved)
            return confirm
        return self._queues_written()

    def _queues_written(self) -> Optional[asyncio.Future[Any]]:
        """One future for every shard queue's commands so far (None: all written)."""
        pending = tuple(w for w in (self._q(s).written() for s in self._shards)
                        if w is not None)
        if not pending:
            return None
        if len(pending) == 1:
            return pending[0]
        cached = self._written_all
        if cached is not None and cached[0] == pending:
            return cached[1]
        together = asyncio.gather(*pending)
        together.add_done_callback(_retrieved)
        self._written_all = (pending, together)
        return together

    def _push_turn(self, shard: Shard, turn: SendTurn) -> None:
        queue = self._q(shard)
        items = turn.commands(self.keys, self.max_per_pair, self.ttl_ms,
                              self.dedupe.current(), self.dedupe.ttl_ms)
        if not items or items[0][0] != "MULTI":  # acked entries' deletes only
            for item in items:
                queue.push(item)
            return
        # patient: a stall fails the turn's waiters (_turns_stalled), not this future, so
        # once Redis is back and the batch ran, its messages are still published
        fut = queue.push(items[0], want_result=True, patient=True)
        for item in items[1:]:
            queue.push(item)
        assert fut is not None
        shard.unconfirmed[fut] = turn

        def done(f: asyncio.Future[Any]) -> None:
            shard.unconfirmed.pop(f, None)
            if f.cancelled():
                turn.fail(ClusterError("cluster send cancelled"))
                return
            error = f.exception()
            if error is None:
                try:
                    publish = turn.resolve(f.result(), self._origin, self._stored,
                                           self._routed)
                except ClusterError as exc:
                    logger.warning("cluster: %s", exc)
                    error = exc
            if error is not None:
                turn.fail(error)
                return
            for node, messages in publish.items():  # in order, after the store has it
                queue.push(("PUBLISH", self.keys.channel(node),
                            encode_pair_groups(self.node_id, messages)))
        fut.add_done_callback(done)

    @staticmethod
    def _turns_stalled(shard: Shard, stalled: BaseException) -> None:
        """The shard's queue stalled: its unanswered send batches fail their waiters now
        (``send_message`` raises, a frame's ack is withheld); their commands stay queued."""
        for turn in list(shard.unconfirmed.values()):
            turn.fail(stalled)

    def _push_checks(self, tokens: List[str], frames: List[GatedFrame]) -> None:
        """Every shard is asked about every frame (a frame's record may be on any shard: it
        rides with its handler's first send). Without claims that is two plain reads per
        shard (HMGET of both buckets: no Lua per frame in Redis); a frame whose entry is a
        claim or a started record (written by a node with claims on) then goes to the
        check script, which knows whether the node that wrote it lives."""
        if self.frame_claims:
            self._push_script_checks(tokens, frames)
            return
        current, previous = self.dedupe.both()
        packed = _packed_tokens(tokens)  # once for every read
        replies: List[asyncio.Future[Any]] = []
        for shard in self._shards:  # (not one MULTI: Redis out of memory refuses queuing)
            queue = self._q(shard)
            for bucket in (current, previous):
                fut = queue.push(("HMGET", bucket, packed), want_result=True)
                assert fut is not None
                replies.append(fut)
        when_all(replies, partial(self._records_read, tokens, frames))

    def _records_read(self, tokens: List[str], frames: List[GatedFrame],
                      replies: List[asyncio.Future[Any]]) -> None:
        exc: Optional[BaseException] = None
        answers: List[Optional[str]] = []
        for n in range(0, len(replies), 2):  # per shard: (current bucket, previous)
            current, previous = _failure(replies[n]), _failure(replies[n + 1])  # both read
            error = current or previous
            if error is not None:
                exc = exc or error
                answers.append(None)
            else:
                answers.append(records_answer(replies[n].result(), replies[n + 1].result()))
        flags = split_asks(len(tokens), answers)
        if ASK in flags:
            asks = [n for n, flag in enumerate(flags) if flag == ASK]
            self._push_script_checks([tokens[n] for n in asks], [frames[n] for n in asks])
        self._answer_frames(tokens, frames, flags, exc)

    def _push_script_checks(self, tokens: List[str], frames: List[GatedFrame]) -> None:
        """One CHECK_FRAMES call per shard; with claims each frame is claimed on its home
        shard."""
        current, previous = self.dedupe.both()
        shards = len(self._shards)
        packed = _packed_tokens(tokens)  # once for every shard
        replies: List[asyncio.Future[Any]] = []
        for shard in self._shards:
            fut = self._q(shard).push(
                ("EVALSHA", "check", 0, current, previous, self.dedupe.ttl_ms, self._claimant,
                 self.keys.alive_prefix, shard.index, shards if self.frame_claims else 0,
                 packed),
                want_result=True)
            assert fut is not None
            replies.append(fut)

        def done(replies: List[asyncio.Future[Any]]) -> None:
            # a shard that has the frame answers for it, whatever the others did
            exc: Optional[BaseException] = None
            answers: List[Optional[str]] = []
            for f in replies:
                error = _failure(f)
                if error is not None:
                    exc = exc or error
                    answers.append(None)
                else:
                    answers.append(_text(f.result()))
            self._answer_frames(tokens, frames, merge_answers(len(tokens), answers), exc)
        when_all(replies, done)

    def _answer_frames(self, tokens: List[str], frames: List[GatedFrame], flags: str,
                       exc: Optional[BaseException]) -> None:
        """Start, skip, hold or fail each checked frame by its flag (ASK: asked again)."""
        checked = self._frame_checked
        for n, frame in enumerate(frames):
            flag = flags[n]
            try:
                if flag == HELD:  # a live node handles it now: ask again later
                    if not frame.held:
                        frame.held = True
                        self.held_frames += 1
                    self._event_loop().call_later(
                        self.held_recheck, self._recheck, tokens[n], frame)
                    continue
                if flag == ASK:
                    continue
                seen = flag == SEEN
                if flag == FRESH and self.frame_claims:
                    self._renewals.claimed(tokens[n])  # (held while its handler runs)
                checked(tokens[n], frame, seen,
                        None if flag in (SEEN, FRESH) else
                        (exc or ClusterError("frame not checked")))
            except Exception:  # one frame's start must not stop the others'
                logger.exception("cluster: starting a checked frame failed")

    def _recheck(self, token: str, frame: GatedFrame) -> None:
        if self._joined:
            self._check_frame(token, frame)
        else:  # stopping: the node that has it handles it
            frame.drop(ClusterError("cluster node stopped"))

    def _send_pair(self, message: PairMessage, persist: bool, mark: Optional[str],
                   deferred: Optional[Receipt] = None) -> Optional[Awaitable[SendResult]]:
        pair = (message.user, message.platform)
        turn = self._turn(self._shard(pair))
        turn.add(pair, message, persist)
        if mark is not None:
            turn.mark(mark, self._first_record)
        if deferred is not None:
            turn.receipts.append(deferred)
            return None
        fut: asyncio.Future[SendResult] = self._event_loop().create_future()
        turn.waiters.append((pair, fut))
        return fut

    def _check_frame(self, token: str, frame: GatedFrame) -> None:
        if not self._flush_scheduled:
            self._schedule_flush()
        self._checks.append(token)
        self._checked.append(frame)

    def _mark_frame(self, token: str) -> None:
        # on the frame's home shard: over its claim there, if it has one
        self._renewals.ended(token)
        shard = self._shards[home_shard(token, len(self._shards))]
        self._turn(shard).mark(token)

    def _unmark_frame(self, token: str, record: bool = True) -> None:
        # The mark rode with the handler's first send: on that pair's shard, any of them.
        # Compare-and-delete: this node's claim, and with ``record`` its record (another
        # node's record of the frame stays: its re-send is a duplicate).
        self._renewals.ended(token)
        values = [CLAIM + self._claimant]
        if record:  # (with claims, the handler's return wrote HANDLED over STARTED)
            values += [STARTED + self._claimant, HANDLED]
        current, previous = self.dedupe.both()
        for shard in self._shards:
            if shard.queue is not None:
                shard.queue.push(("EVALSHA", "unmark", 0, current, previous, token, *values))

    def _renew_claims(self) -> None:
        """Claims of handlers still running here, written again into the current bucket
        before theirs leaves the checks' view (on the heartbeat)."""
        due = self._renewals.due()
        if not due:
            return
        current, count = self.dedupe.current(), len(self._shards)
        value = CLAIM + self._claimant
        touched = set()
        for token in due:
            shard = self._shards[home_shard(token, count)]
            if shard.queue is not None:
                shard.queue.push(("HSETNX", current, token, value))  # never over a record
                touched.add(shard.index)
        for index in touched:
            self._q(self._shards[index]).push(("PEXPIRE", current, self.dedupe.ttl_ms))

    # -- store ---------------------------------------------------------------------------------

    def _store_add(self, pair: Pair, msg_id: str, payload: bytes) -> None:
        shard = self._shard(pair)
        if shard.queue is None:
            return
        stream, index, _ = self.keys.pair_keys(pair)
        stored = shard.queue.push(("EVALSHA", "add_once", 2, stream, index, msg_id, payload,
                                   self.max_per_pair, self.ttl_ms), want_result=True)
        receipt = CURRENT_RECEIPT.get()  # a handler's fan-out: its frame's ack waits for it
        assert stored is not None
        stored.add_done_callback(partial(_refused, receipt))

    def _store_delete(self, pair: Pair, stream_ids: List[str], idle: bool) -> None:
        shard = self._shard(pair)
        if shard.queue is None:
            return
        stream, index, _ = self.keys.pair_keys(pair)
        self._turn(shard).delete(stream, index, idle, stream_ids)  # rides in the send call

    def _store_ack(self, pair: Pair, msg_ids: List[str], acker: str,
                   notify: bool = True) -> None:
        shard = self._shard(pair)
        if shard.queue is None:
            return
        stream, index, _ = self.keys.pair_keys(pair)
        shard.queue.push(("EVALSHA", "ack", 2, stream, index,
                          self.keys.chan_prefix if notify else "",
                          self.node_id, pair[0], pair[1], acker, *msg_ids))

    def _read_pair(self, pair: Pair) -> Awaitable[List[StoredMessage]]:
        if self._flush_scheduled:  # the read must see the sends and deletes queued before it
            self._flush()
        # patient: a stall does not fail it (it stays queued and runs once Redis is back;
        # the reader would only queue another one, one more per retry)
        fut = self._q(self._shard(pair)).push(("XRANGE", self.keys.stream(pair), "-", "+"),
                                              want_result=True, patient=True)
        assert fut is not None
        return _entries(fut)

    def stats(self) -> Dict[str, Any]:
        out = super().stats()
        queues = [s.queue for s in self._shards if s.queue is not None]
        out.update({
            "shards": len(self._shards),
            "redis_commands": sum(q.commands for q in queues),
            "redis_batches": sum(q.batches for q in queues),
            "redis_failures": sum(q.failures for q in queues),
            "redis_rtt_seconds": max((q.rtt for q in queues), default=0.0),
            # shards whose commands have been failing (reconnecting with backoff), and
            # those failing for longer than cluster_write_timeout (sends raise meanwhile)
            "redis_shards_down": sum(1 for q in queues if q.down_since is not None)
            + len(self._shards) - len(queues),
            "redis_shards_stalled": sum(1 for q in queues if q.stalled),
            "queue_depth": sum(q.depth for q in queues),
            "frames_held_elsewhere": self.held_frames,  # frames, not re-checks
        })
        return out


def _refused(receipt: Optional[Receipt], fut: asyncio.Future[Any]) -> None:
    """A message's store write was refused (out of memory, a read-only replica): the frame
    whose handler sent it is not acked (the client re-sends it). The queue resolves a
    command's future before the batch's, so this runs before the frame's ack is decided."""
    if not fut.cancelled() and fut.exception() is not None and receipt is not None:
        if receipt.failure is None:
            receipt.failure = fut.exception()


def _packed_tokens(tokens: List[str]) -> PackedArgs:
    return PackedArgs([token.encode() for token in tokens])


def _failure(fut: asyncio.Future[Any]) -> Optional[BaseException]:
    return ClusterError("frame check cancelled") if fut.cancelled() else fut.exception()


def _retrieved(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # no "never retrieved" warning when nobody waited


def when_all(futures: List[asyncio.Future[Any]],
             then: Callable[[List[asyncio.Future[Any]]], None]) -> None:
    """``then(futures)`` once every one is done, called from the last one's done callback
    (one per flush of frame checks: no gather object, no extra loop turn)."""
    if len(futures) == 1:
        futures[0].add_done_callback(lambda _f: then(futures))
        return
    left = [len(futures)]

    def one(_f: asyncio.Future[Any]) -> None:
        left[0] -= 1
        if left[0] == 0:
            then(futures)
    for fut in futures:
        fut.add_done_callback(one)


def _chain(source: Optional[asyncio.Future[Any]], target: asyncio.Future[Any]) -> None:
    """Resolve ``target`` like ``source`` (at once when ``source`` is None)."""
    def copy(f: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if f.cancelled():
            target.set_exception(ClusterError("cluster write cancelled"))
        elif f.exception() is not None:
            target.set_exception(f.exception())  # type: ignore[arg-type]
        else:
            target.set_result(None)
    if source is None:
        target.set_result(None)
    else:
        source.add_done_callback(copy)



async def _entries(reply: Awaitable[Any]) -> List[StoredMessage]:
    """XRANGE's raw reply as (stream id, msg_id, payload), oldest first (an entry holds
    one or more messages: fields msg_id, payload, msg_id, payload, ...)."""
    out: List[StoredMessage] = []
    for raw_id, fields in await reply or ():
        sid = raw_id.decode()
        for i in range(0, len(fields) - 1, 2):
            out.append((sid, fields[i].decode(), fields[i + 1]))
    return out
