"""Cluster backend on Redis (redis-py asyncio): many hub processes, one logical hub.

Model (docs/cluster.md has the long version):

- **Outbox in Redis.** Every message for a (user, platform) pair is appended to the pair's
  stream by the node that sends it, in the same script call that routes it; an ack
  deletes it (any node). A node holds a local cache of the streams of the pairs it has
  connections for (the ordinary in-memory Outbox) and loads a pair's stream when the
  pair's first connection opens on it, so a client that reconnects to another node after
  its node died gets every unacked message, in order.
- **Routing.** ``p:w:<pair>`` says which node holds which connection of the pair; the send
  script publishes to those nodes' channels (``p:n:<node>``). Fan-outs (broadcast, to a
  user, to a platform, to a connection) go once to ``p:all``; every node delivers to its
  own matching connections and stores them in those pairs' streams.
- **Presence.** ``p:alive:<node>`` has a TTL refreshed by a heartbeat; ``p:conns:<node>``
  lists the node's connections. A survivor reaps a dead node's entries. A node that finds
  its own alive key expired (a long pause) re-registers and re-reads its pairs' streams.

Redis commands per message: one script call to send (append + route + publish), one to
ack; both pipelined with whatever else is queued (``redis_pipeline.CommandQueue``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Coroutine, Dict, List, Optional, Set, Tuple

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import ClusterError, ServerStartError
from .cluster_base import ClusterHost, Pair, Selector, select_local
from .redis_keys import (
    ACK,
    ADD_ONCE,
    ADD_PUBLISH,
    REAP,
    UNREGISTER,
    Keys,
    encode_message,
    stream_id_key,
)
from .redis_pipeline import CommandQueue, QueueStalled, Script

if TYPE_CHECKING:
    from ..core.outbox import OutboxEntry
    from ..server.peer import Peer

logger = logging.getLogger(__name__)

_RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)
SNAPSHOT_DEMAND_WINDOW = 30.0  # s: keep refreshing the presence snapshot this long after use


class _PairState:
    """A pair with connections on this node; ``loading`` until its stream was read."""

    __slots__ = ("buffer", "loaded_upto", "loading")

    def __init__(self, loading: bool) -> None:
        self.loading = loading
        self.buffer: List[Tuple[str, bytes, bool]] = []  # (msg_id, payload, persist)
        self.loaded_upto: Tuple[int, int] = (0, 0)


class RedisOutboxMirror:
    """The Outbox's store in cluster mode: appends and acks go to the pair's stream.

    ``persist`` is switched off by the backend while it inserts messages that are already
    in Redis (sent by another node, or read back from the stream).
    """

    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self.persist = True

    def load(self) -> List[Tuple[str, str, int, str, bytes, float]]:
        return []  # streams are read per pair, when its first connection opens here

    def add(self, pair: Pair, entry: OutboxEntry) -> None:
        if self.persist:
            self._cluster._store_once(pair, entry.msg_id, entry.payload)

    def remove(self, pair: Pair, msg_ids: List[str]) -> None:
        self._cluster._store_ack(pair, msg_ids)

    def close(self) -> None:
        return None


class RedisCluster:
    distributed = True

    def __init__(
        self, url: str, *, node_id: str, prefix: str = "maim_hub",
        heartbeat_interval: float = 1.0, node_ttl: float = 5.0,
        outbox_max_per_pair: int = 10_000, outbox_ttl: float = 86_400.0,
        write_timeout: float = 10.0,
    ) -> None:
        if node_ttl <= heartbeat_interval:
            raise ValueError("cluster_node_ttl must be longer than cluster_heartbeat_interval")
        self.url = url
        self.node_id = node_id
        self.keys = Keys(prefix)
        self.heartbeat_interval = heartbeat_interval
        self.node_ttl = node_ttl
        self.max_per_pair = str(max(1, outbox_max_per_pair))
        self.ttl_ms = str(max(1000, int(outbox_ttl * 1000)))
        self.outbox_ttl = outbox_ttl
        self.write_timeout = write_timeout
        self._scripts = {name: Script(src) for name, src in (
            ("add_pub", ADD_PUBLISH), ("add_once", ADD_ONCE), ("ack", ACK),
            ("unregister", UNREGISTER), ("reap", REAP))}
        self._host: Optional[ClusterHost] = None
        self._redis: Optional[Redis] = None
        self._queue: Optional[CommandQueue] = None
        self._pubsub: Any = None
        self._tasks: List[asyncio.Task[None]] = []
        self._loads: Set[asyncio.Future[None]] = set()
        self._pairs: Dict[Pair, _PairState] = {}
        self._mirror = RedisOutboxMirror(self)
        self._snapshot: Dict[str, Dict[str, Dict[str, Any]]] = {}
        self._snapshot_used = 0.0  # last use of the snapshot (the heartbeat refreshes it)
        self._snapshot_at = 0.0  # last refresh
        self._joined = False
        self.received = 0  # channel messages handled
        self.reaped = 0
        self.rejoins = 0

    def _safe_url(self) -> str:
        _, sep, tail = self.url.rpartition("@")
        return f"{self.url.split('://', 1)[0]}://***@{tail}" if sep else self.url

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: ClusterHost) -> None:
        self._host = host
        redis = Redis.from_url(self.url, socket_connect_timeout=5.0, socket_keepalive=True)
        try:
            await redis.ping()
            queue = CommandQueue(redis, self._scripts, self.write_timeout)
            await queue.load_scripts()
            pubsub = redis.pubsub()
            await pubsub.subscribe(self.keys.channel(self.node_id), self.keys.all_channel)
            confirmed = 0
            deadline = time.monotonic() + 5.0
            while confirmed < 2:  # both subscriptions live before we announce ourselves
                if time.monotonic() > deadline:
                    raise RedisTimeoutError("no subscribe confirmation")
                msg = await pubsub.get_message(timeout=1.0)
                if msg is not None and msg.get("type") == "subscribe":
                    confirmed += 1
            await self._announce(redis)
        except (RedisError, OSError) as exc:
            await redis.aclose()
            raise ServerStartError(f"cluster: cannot use Redis at {self._safe_url()}: "
                                   f"{type(exc).__name__}: {exc}") from exc
        self._redis, self._queue, self._pubsub = redis, queue, pubsub
        queue.start()
        outbox = host.delivery.outbox
        if outbox is not None:
            if outbox.store is not None:
                logger.warning("cluster mode keeps the outbox in Redis; outbox_path is ignored")
                outbox.store.close()
            outbox.store = self._mirror
        self._joined = True
        self._tasks = [asyncio.ensure_future(self._read_loop()),
                       asyncio.ensure_future(self._heartbeat_loop())]
        logger.info("cluster: node %s joined via %s", self.node_id, self._safe_url())

    async def _announce(self, redis: Redis) -> None:
        pipe = redis.pipeline(transaction=False)
        pipe.set(self.keys.alive(self.node_id), b"1", px=int(self.node_ttl * 1000))
        pipe.sadd(self.keys.nodes, self.node_id)
        pipe.delete(self.keys.conns(self.node_id))
        await pipe.execute()

    async def stop(self) -> None:
        if not self._joined:
            return
        self._joined = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        queue, redis = self._queue, self._redis
        if queue is not None and redis is not None:
            host = self._host
            if host is not None:
                for peer in list(host.peers.values()):
                    self._unregister(peer)
            node = self.node_id
            queue.push(("DEL", self.keys.conns(node), self.keys.alive(node)))
            queue.push(("SREM", self.keys.nodes, node))
            await queue.close()
        if self._pubsub is not None:
            try:
                await self._pubsub.aclose()
            except (RedisError, OSError):
                pass
        if redis is not None:
            await redis.aclose()
        self._redis = self._queue = self._pubsub = None
        self._pairs.clear()
        self._snapshot = {}
        logger.info("cluster: node %s left", self.node_id)

    # -- connections --------------------------------------------------------------------------

    def connection_opened(self, peer: Peer) -> None:
        host, queue = self._host, self._queue
        if host is None or queue is None or not self._joined:
            if host is not None:
                host.delivery.peer_opened(peer)
            return
        self._register(peer)
        pair = peer.pair
        state = self._pairs.get(pair)
        if state is None:
            if host.delivery.outbox is None:
                self._pairs[pair] = _PairState(loading=False)
                host.delivery.peer_opened(peer)
                return
            state = self._pairs[pair] = _PairState(loading=True)
            fut = queue.push(("XRANGE", self.keys.stream(pair), "-", "+"), want_result=True)
            assert fut is not None
            self._spawn(self._finish_load(pair, state, fut))
        elif not state.loading:
            host.delivery.peer_opened(peer)
        # else: every connection of a loading pair gets its backlog when the load ends

    def connection_closed(self, peer: Peer) -> None:
        host = self._host
        if host is None or not self._joined:
            return
        self._unregister(peer)
        pair = peer.pair
        if not host.routes.lookup(*pair):
            # Last connection of the pair here: Redis holds its unacked messages; the next
            # node it connects to (maybe this one) reads them from the stream.
            self._pairs.pop(pair, None)
            outbox = host.delivery.outbox
            if outbox is not None:
                outbox.discard_pair(pair)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)

    def _register(self, peer: Peer) -> None:
        assert self._queue is not None
        info = peer.info()
        info["node"] = self.node_id
        info["pk"] = self.keys.pair_id(peer.pair)
        info["uk"] = self.keys.user_key(peer.user_id)
        self._queue.push(("HSET", self.keys.where(peer.pair), peer.uuid, self.node_id))
        self._queue.push(("HSET", self.keys.conns(self.node_id), peer.uuid, orjson.dumps(info)))

    def _unregister(self, peer: Peer) -> None:
        assert self._queue is not None
        self._queue.push(("EVALSHA", "unregister", 1, self.keys.where(peer.pair), peer.uuid,
                          self.node_id))
        self._queue.push(("HDEL", self.keys.conns(self.node_id), peer.uuid))

    async def _finish_load(self, pair: Pair, state: _PairState,
                           fut: asyncio.Future[Any]) -> None:
        try:
            entries = await fut
        except (RedisError, asyncio.CancelledError) as exc:
            logger.warning("cluster: reading the stream of %s failed: %s", pair, exc)
            entries = []
        host = self._host
        if host is None or self._pairs.get(pair) is not state:
            return  # the pair left this node meanwhile
        outbox = host.delivery.outbox
        if outbox is not None:
            cutoff = (time.time() - self.outbox_ttl) * 1000
            mirror = self._mirror
            mirror.persist = False
            try:
                for sid, msg_id, payload in _entries(entries):
                    state.loaded_upto = stream_id_key(sid)
                    if state.loaded_upto[0] < cutoff:
                        continue
                    if not _queued(outbox, pair, msg_id):
                        outbox.append(pair, msg_id, payload)
            finally:
                mirror.persist = True
            for msg_id, payload, persist in state.buffer:
                if not _queued(outbox, pair, msg_id):
                    mirror.persist = persist
                    try:
                        outbox.append(pair, msg_id, payload)
                    finally:
                        mirror.persist = True
        state.buffer.clear()
        state.loading = False
        for uuid in host.routes.lookup(*pair):
            peer = host.peers.get(uuid)
            if peer is not None and peer.conn is not None:
                host.delivery.peer_opened(peer)

    # -- writes to Redis (queued, pipelined) ------------------------------------------------

    def _store_once(self, pair: Pair, msg_id: str, payload: bytes) -> None:
        if self._queue is None:
            return
        self._queue.push(("EVALSHA", "add_once", 2, self.keys.stream(pair),
                          self.keys.index(pair), msg_id, payload, self.max_per_pair,
                          self.ttl_ms))

    def _store_ack(self, pair: Pair, msg_ids: List[str]) -> None:
        host, queue = self._host, self._queue
        if queue is None or host is None or not msg_ids:
            return
        local = host.routes.lookup(*pair)
        acker = min(local) if local else ""
        stream, index, _ = self.keys.pair_keys(pair)
        queue.push(("EVALSHA", "ack", 2, stream, index,
                    self.keys.chan_prefix, self.node_id, pair[0], pair[1], acker, *msg_ids))

    async def _await(self, fut: Optional[asyncio.Future[Any]]) -> Any:
        if fut is None:
            return None
        if fut.done():
            return fut.result()
        try:  # the queue fails waiters after write_timeout of failed attempts
            return await fut
        except QueueStalled:
            raise ClusterError(f"Redis did not confirm within {self.write_timeout:g}s; the "
                               "message stays queued and is written when Redis is back"
                               ) from None

    # -- sending ------------------------------------------------------------------------------

    async def send_to_pair(self, pair: Pair, msg_id: str, payload: bytes,
                           ack_timeout: Optional[float] = None) -> Dict[str, bool]:
        host, queue = self._host, self._queue
        if host is None or queue is None:
            raise ClusterError("cluster backend is not running (server not started)")
        delivery = host.delivery
        persist = "1" if delivery.outbox is not None else "0"
        notify = "1" if ack_timeout is not None else "0"
        keys = self.keys
        stream, index, where = keys.pair_keys(pair)
        fut = queue.push(("EVALSHA", "add_pub", 3, stream, index, where, msg_id, payload,
                          self.node_id, notify, self.max_per_pair, self.ttl_ms,
                          keys.alive_prefix, keys.chan_prefix, pair[0], pair[1], persist),
                         want_result=ack_timeout is None)
        results: Dict[str, bool] = {}
        state = self._pairs.get(pair)
        if state is not None:
            if state.loading:
                state.buffer.append((msg_id, payload, False))
                results = {uuid: True for uuid in host.routes.lookup(*pair)}
            else:
                results = self._deliver(pair, msg_id, payload, persist=False)
        if ack_timeout is not None and delivery.enabled:
            acker = await delivery.wait_ack(pair, msg_id, ack_timeout)
            return {acker: True} if acker is not None else {}
        remote = await self._await(fut)
        for uuid in remote or ():
            results.setdefault(uuid.decode(), True)
        return results

    def _deliver(self, pair: Pair, msg_id: str, payload: bytes, persist: bool) -> Dict[str, bool]:
        """Queue locally and push to the pair's connections here (not if already queued)."""
        host = self._host
        assert host is not None
        delivery = host.delivery
        if delivery.outbox is not None and _queued(delivery.outbox, pair, msg_id):
            return {}
        mirror = self._mirror
        mirror.persist = persist
        try:
            results = delivery.to_pair(pair, host.routes.lookup(*pair), msg_id, payload)
        finally:
            mirror.persist = True
        host._count_sent(results, payload)
        return results

    async def fanout(self, selector: Selector, msg_id: str, payload: bytes) -> Dict[str, bool]:
        host, queue = self._host, self._queue
        if host is None or queue is None:
            raise ClusterError("cluster backend is not running (server not started)")
        kind, value = selector
        local_conn = kind == "conn" and value is not None and host.routes.owner(value)
        if not local_conn:
            queue.push(("PUBLISH", self.keys.all_channel,
                        encode_message(["F", self.node_id, kind, value, msg_id], payload)))
        results = self._fanout_local(selector, msg_id, payload)
        await self._await(queue.written())
        if not local_conn:
            if time.monotonic() - self._snapshot_at > 2 * self.heartbeat_interval:
                await self.refresh()  # not kept fresh by the heartbeat lately: read it now
            self._snapshot_used = time.monotonic()
            for node, conns in self._snapshot.items():
                if node == self.node_id:
                    continue
                for uuid, info in conns.items():
                    if _matches(selector, uuid, info):
                        results.setdefault(uuid, True)
        return results

    def _fanout_local(self, selector: Selector, msg_id: str, payload: bytes) -> Dict[str, bool]:
        host = self._host
        assert host is not None
        targets = select_local(host.routes, selector)
        if not targets:
            return {}
        ready: List[str] = []
        results: Dict[str, bool] = {}
        held: Set[Pair] = set()
        for uuid in targets:
            owner = host.routes.owner(uuid)
            state = self._pairs.get(owner) if owner is not None else None
            if state is not None and state.loading:
                if owner not in held:
                    held.add(owner)  # type: ignore[arg-type]
                    state.buffer.append((msg_id, payload, True))
                results[uuid] = True
            else:
                ready.append(uuid)
        if ready:
            sent = host.delivery.to_connections(ready, msg_id, payload)
            host._count_sent(sent, payload)
            results.update(sent)
        return results

    # -- channel messages ---------------------------------------------------------------------

    async def _read_loop(self) -> None:
        pubsub = self._pubsub
        backoff = 0.05
        while True:
            try:
                msg = await pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except _RETRYABLE as exc:
                logger.warning("cluster: channel connection lost (%s); retrying",
                               type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            if msg is None:
                continue
            kind = msg.get("type")
            if kind == "message":
                try:
                    self._on_channel_message(msg["data"])
                except Exception:  # a bad message must not stop the node's routing
                    logger.exception("cluster: failed to handle a channel message")
            elif kind == "subscribe":
                # redis-py re-subscribed after a reconnect: we may have missed messages.
                self._resync_all("channel reconnected")

    def _on_channel_message(self, data: bytes) -> None:
        head_raw, _, payload = data.partition(b"\n")
        head = orjson.loads(head_raw)
        self.received += 1
        kind = head[0]
        if kind == "P":
            _, origin, user, platform, msg_id, sid = head
            if origin == self.node_id:
                return
            pair = (user, platform)
            state = self._pairs.get(pair)
            if state is None:
                return  # not here any more; the stream keeps it for the next node
            if state.loading:
                state.buffer.append((msg_id, payload, False))
            elif not sid or stream_id_key(sid) > state.loaded_upto:
                self._deliver(pair, msg_id, payload, persist=False)
        elif kind == "F":
            _, origin, sel_kind, sel_value, msg_id = head
            if origin != self.node_id:
                self._fanout_local((sel_kind, sel_value), msg_id, payload)
        elif kind == "A":
            _, _node, user, platform, msg_id, uuid = head
            host = self._host
            if host is not None:
                host.delivery.remote_acked((user, platform), msg_id, uuid)

    def _resync_all(self, why: str) -> None:
        """Re-read the streams of every pair held here and deliver what is missing."""
        queue = self._queue
        if queue is None or not self._pairs:
            return
        logger.info("cluster: re-reading %d pair stream(s) (%s)", len(self._pairs), why)
        for pair, state in list(self._pairs.items()):
            if state.loading:
                continue
            fut = queue.push(("XRANGE", self.keys.stream(pair), "-", "+"), want_result=True)
            assert fut is not None
            self._spawn(self._finish_resync(pair, state, fut))

    async def _finish_resync(self, pair: Pair, state: _PairState,
                             fut: asyncio.Future[Any]) -> None:
        try:
            entries = await fut
        except (RedisError, asyncio.CancelledError):
            return
        host = self._host
        if host is None or self._pairs.get(pair) is not state or state.loading:
            return
        for sid, msg_id, payload in _entries(entries):
            state.loaded_upto = max(state.loaded_upto, stream_id_key(sid))
            self._deliver(pair, msg_id, payload, persist=False)

    # -- presence -----------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                logger.warning("cluster: heartbeat failed: %s", type(exc).__name__)

    async def _beat(self) -> None:
        redis = self._redis
        assert redis is not None
        keys, node = self.keys, self.node_id
        pipe = redis.pipeline(transaction=False)
        pipe.set(keys.alive(node), b"1", px=int(self.node_ttl * 1000), get=True)
        pipe.sadd(keys.nodes, node)
        pipe.smembers(keys.nodes)
        previous, _, members = await pipe.execute()
        if previous is None:
            self._rejoin()
        others = sorted(m.decode() for m in members if m.decode() != node)
        if not others:
            self._snapshot = {}
            return
        pipe = redis.pipeline(transaction=False)
        for other in others:
            pipe.exists(keys.alive(other))
        alive_flags = await pipe.execute()
        alive = [o for o, flag in zip(others, alive_flags) if flag]
        for dead in (o for o, flag in zip(others, alive_flags) if not flag):
            sha = self._scripts["reap"].sha
            n = await redis.evalsha(sha, 2, keys.conns(dead), keys.nodes, dead,
                                    keys.prefix, keys.alive(dead))
            if n and n > 0:
                self.reaped += int(n)
                logger.warning("cluster: node %s is gone; removed its %d connection(s)",
                               dead, n)
        if time.monotonic() - self._snapshot_used < SNAPSHOT_DEMAND_WINDOW:
            await self.refresh(alive)

    def _rejoin(self) -> None:
        """Our alive key had expired (a pause longer than node_ttl): we may have been reaped."""
        host = self._host
        if host is None or self._queue is None:
            return
        self.rejoins += 1
        logger.warning("cluster: node %s missed its heartbeat deadline; re-registering",
                       self.node_id)
        self._queue.push(("SADD", self.keys.nodes, self.node_id))
        for peer in list(host.peers.values()):
            if peer.conn is not None:
                self._register(peer)
        self._resync_all("rejoined")

    async def refresh(self, nodes: Optional[List[str]] = None) -> None:
        """Read the other live nodes' connection lists now (what the sync queries show)."""
        redis = self._redis
        if redis is None:
            return
        keys = self.keys
        if nodes is None:
            members = await redis.smembers(keys.nodes)
            names = (m.decode() if isinstance(m, bytes) else m for m in members)
            others = sorted(m for m in names if m != self.node_id)
            pipe = redis.pipeline(transaction=False)
            for other in others:
                pipe.exists(keys.alive(other))
            flags = await pipe.execute()
            nodes = [o for o, f in zip(others, flags) if f]
        pipe = redis.pipeline(transaction=False)
        for other in nodes:
            pipe.hgetall(keys.conns(other))
        tables = await pipe.execute()
        snapshot: Dict[str, Dict[str, Dict[str, Any]]] = {}
        for other, table in zip(nodes, tables):
            snapshot[other] = {k.decode(): orjson.loads(v) for k, v in table.items()}
        self._snapshot = snapshot
        self._snapshot_used = self._snapshot_at = time.monotonic()

    # -- queries ------------------------------------------------------------------------------

    def user_count(self) -> int:
        host = self._host
        if host is None:
            return 0
        self._snapshot_used = time.monotonic()
        users = {self.keys.user_key(user) for user in host.routes.users()}
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

    def stats(self) -> Dict[str, Any]:
        queue = self._queue
        return {
            "node_id": self.node_id, "pairs": len(self._pairs),
            "nodes_seen": len(self._snapshot) + 1, "received": self.received,
            "reaped": self.reaped, "rejoins": self.rejoins,
            "redis_commands": queue.commands if queue else 0,
            "redis_batches": queue.batches if queue else 0,
            "redis_failures": queue.failures if queue else 0,
            "queue_depth": queue.depth if queue else 0,
        }


def _entries(reply: Any) -> List[Tuple[str, str, bytes]]:
    """XRANGE's raw reply as (stream id, msg_id, payload)."""
    out: List[Tuple[str, str, bytes]] = []
    for raw_id, fields in reply or ():
        values = dict(zip(fields[::2], fields[1::2]))
        out.append((raw_id.decode(), values[b"m"].decode(), values[b"p"]))
    return out


def _queued(outbox: Any, pair: Pair, msg_id: str) -> bool:
    queue = outbox.pairs.get(pair)
    return queue is not None and msg_id in queue.entries


def _matches(selector: Selector, uuid: str, info: Dict[str, Any]) -> bool:
    kind, value = selector
    if kind == "all":
        return True
    if kind == "platform":
        return bool(info.get("platform") == value)
    if kind == "user":
        return value is not None and info.get("uk") == Keys.user_key(value)
    return uuid == value
