"""The cluster backend on Redis (redis-py asyncio): publish, listen, store.

:class:`~.pubsub_cluster.PubSubCluster` decides everything; this class maps its hooks onto
Redis: a stream per pair (the outbox), hashes for routing and presence, one channel per
node plus one for fan-outs, and Lua scripts (``redis_keys``) so that a send is one
command: append + route + publish. Commands are pipelined in order through
``redis_pipeline.CommandQueue``; 2 commands per message leave the node (send, ack).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Dict, List, Optional, Tuple

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..core.defaults import DEFAULT_OUTBOX
from ..errors import ClusterError, ServerStartError
from .cluster_base import Pair
from .pubsub_cluster import PubSubCluster
from .pubsub_io import RESUBSCRIBED, Presence, StoredMessage
from .pubsub_messages import (
    ClusterMessage,
    FanoutMessage,
    PairMessage,
    decode_message,
    encode_message,
)
from .redis_keys import ACK, ADD_ONCE, ADD_PUBLISH, REAP, UNREGISTER, Keys
from .redis_pipeline import CommandQueue, Script

if TYPE_CHECKING:
    from ..server.peer import Peer

__all__ = ["ClusterError", "RedisCluster"]  # ClusterError lives in errors.py

logger = logging.getLogger(__name__)

_RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)


class RedisCluster(PubSubCluster):
    def __init__(
        self, url: str, *, node_id: str, prefix: str = "maim_hub",
        heartbeat_interval: float = 1.0, node_ttl: float = 5.0,
        outbox_max_per_pair: int = DEFAULT_OUTBOX.max_per_pair,
        outbox_ttl: float = DEFAULT_OUTBOX.ttl,
        write_timeout: float = 10.0,
    ) -> None:
        super().__init__(node_id=node_id, heartbeat_interval=heartbeat_interval,
                         node_ttl=node_ttl, outbox_ttl=outbox_ttl)
        self.url = url
        self.keys = Keys(prefix)
        self.max_per_pair = str(max(1, outbox_max_per_pair))
        self.ttl_ms = str(max(1000, int(outbox_ttl * 1000)))
        self.write_timeout = write_timeout
        self._scripts = {name: Script(src) for name, src in (
            ("add_pub", ADD_PUBLISH), ("add_once", ADD_ONCE), ("ack", ACK),
            ("unregister", UNREGISTER), ("reap", REAP))}
        self._redis: Optional[Redis] = None
        self._queue: Optional[CommandQueue] = None
        self._pubsub: Any = None

    def _safe_url(self) -> str:
        _, sep, tail = self.url.rpartition("@")
        return f"{self.url.split('://', 1)[0]}://***@{tail}" if sep else self.url

    def _q(self) -> CommandQueue:
        if self._queue is None:
            raise ClusterError("cluster backend is not running (server not started)")
        return self._queue

    # -- joining and leaving -------------------------------------------------------------------

    async def _join(self) -> None:
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
            pipe = redis.pipeline(transaction=False)
            pipe.set(self.keys.alive(self.node_id), b"1", px=int(self.node_ttl * 1000))
            pipe.sadd(self.keys.nodes, self.node_id)
            pipe.delete(self.keys.conns(self.node_id))
            await pipe.execute()
        except (RedisError, OSError) as exc:
            await redis.aclose()
            raise ServerStartError(f"cluster: cannot use Redis at {self._safe_url()}: "
                                   f"{type(exc).__name__}: {exc}") from exc
        self._redis, self._queue, self._pubsub = redis, queue, pubsub
        queue.start()
        logger.info("cluster: node %s joined via %s", self.node_id, self._safe_url())

    async def _leave(self) -> None:
        queue, redis = self._queue, self._redis
        if queue is not None:
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
        logger.info("cluster: node %s left", self.node_id)

    # -- publish and listen --------------------------------------------------------------------

    async def _listen(self) -> AsyncIterator[Optional[ClusterMessage]]:
        pubsub = self._pubsub
        backoff = 0.05
        while True:
            try:
                msg = await pubsub.get_message(timeout=None)
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
                    yield decode_message(msg["data"])
                except (ValueError, KeyError) as exc:
                    logger.warning("cluster: undecodable channel message dropped: %s", exc)
            elif kind == "subscribe":
                yield RESUBSCRIBED  # redis-py re-subscribed after a reconnect

    def _publish(self, message: FanoutMessage) -> None:
        self._q().push(("PUBLISH", self.keys.all_channel, encode_message(message)))

    async def _written(self) -> None:
        done = self._q().written()
        if done is not None:
            await done

    # -- store ---------------------------------------------------------------------------------

    def _send_pair(self, message: PairMessage, notify: bool, persist: bool,
                   want_result: bool) -> Optional[Awaitable[List[Any]]]:
        keys = self.keys
        stream, index, where = keys.pair_keys(message.pair)
        return self._q().push(
            ("EVALSHA", "add_pub", 3, stream, index, where, message.msg_id, message.payload,
             self.node_id, "1" if notify else "0", self.max_per_pair, self.ttl_ms,
             keys.alive_prefix, keys.chan_prefix, message.user, message.platform,
             "1" if persist else "0"),
            want_result=want_result)

    def _store_add(self, pair: Pair, msg_id: str, payload: bytes) -> None:
        if self._queue is None:
            return
        stream, index, _ = self.keys.pair_keys(pair)
        self._queue.push(("EVALSHA", "add_once", 2, stream, index, msg_id, payload,
                          self.max_per_pair, self.ttl_ms))

    def _store_ack(self, pair: Pair, msg_ids: List[str], acker: str) -> None:
        if self._queue is None:
            return
        stream, index, _ = self.keys.pair_keys(pair)
        self._queue.push(("EVALSHA", "ack", 2, stream, index, self.keys.chan_prefix,
                          self.node_id, pair[0], pair[1], acker, *msg_ids))

    def _read_pair(self, pair: Pair) -> Awaitable[List[StoredMessage]]:
        fut = self._q().push(("XRANGE", self.keys.stream(pair), "-", "+"), want_result=True)
        assert fut is not None
        return _entries(fut)

    def _presence_add(self, peer: Peer, info: Dict[str, Any]) -> None:
        queue = self._q()
        info["pk"] = self.keys.pair_id(peer.pair)  # the reaper finds the where-entry by it
        queue.push(("HSET", self.keys.where(peer.pair), peer.uuid, self.node_id))
        queue.push(("HSET", self.keys.conns(self.node_id), peer.uuid, orjson.dumps(info)))

    def _presence_remove(self, peer: Peer) -> None:
        queue = self._q()
        queue.push(("EVALSHA", "unregister", 1, self.keys.where(peer.pair), peer.uuid,
                    self.node_id))
        queue.push(("HDEL", self.keys.conns(self.node_id), peer.uuid))

    # -- liveness ------------------------------------------------------------------------------

    async def _heartbeat(self) -> Tuple[bool, List[str]]:
        redis = self._redis
        assert redis is not None
        keys, node = self.keys, self.node_id
        pipe = redis.pipeline(transaction=False)
        pipe.set(keys.alive(node), b"1", px=int(self.node_ttl * 1000), get=True)
        pipe.sadd(keys.nodes, node)
        pipe.smembers(keys.nodes)
        previous, _, members = await pipe.execute()
        others = sorted(m.decode() for m in members if m.decode() != node)
        alive = await self._alive(others)
        for dead in (o for o in others if o not in alive):
            n = await redis.evalsha(self._scripts["reap"].sha, 2, keys.conns(dead), keys.nodes,
                                    dead, keys.prefix, keys.alive(dead))
            if n and n > 0:
                self.reaped += int(n)
                logger.warning("cluster: node %s is gone; removed its %d connection(s)",
                               dead, n)
        return previous is not None, alive

    async def _alive(self, nodes: List[str]) -> List[str]:
        if not nodes:
            return []
        redis = self._redis
        assert redis is not None
        pipe = redis.pipeline(transaction=False)
        for other in nodes:
            pipe.exists(self.keys.alive(other))
        flags = await pipe.execute()
        return [o for o, flag in zip(nodes, flags) if flag]

    def _rejoin_store(self) -> None:
        self._q().push(("SADD", self.keys.nodes, self.node_id))

    async def _read_presence(self, nodes: Optional[List[str]]) -> Presence:
        redis = self._redis
        if redis is None:
            return {}
        keys = self.keys
        if nodes is None:
            members = await redis.smembers(keys.nodes)
            names = (m.decode() if isinstance(m, bytes) else m for m in members)
            nodes = await self._alive(sorted(m for m in names if m != self.node_id))
        pipe = redis.pipeline(transaction=False)
        for other in nodes:
            pipe.hgetall(keys.conns(other))
        tables = await pipe.execute()
        return {other: {k.decode(): orjson.loads(v) for k, v in table.items()}
                for other, table in zip(nodes, tables)}

    def stats(self) -> Dict[str, Any]:
        queue = self._queue
        out = super().stats()
        out.update({
            "redis_commands": queue.commands if queue else 0,
            "redis_batches": queue.batches if queue else 0,
            "redis_failures": queue.failures if queue else 0,
            "queue_depth": queue.depth if queue else 0,
        })
        return out


async def _entries(reply: Awaitable[Any]) -> List[StoredMessage]:
    """XRANGE's raw reply as (stream id, msg_id, payload)."""
    out: List[StoredMessage] = []
    for raw_id, fields in await reply or ():
        values = dict(zip(fields[::2], fields[1::2]))
        out.append((raw_id.decode(), values[b"m"].decode(), values[b"p"]))
    return out
