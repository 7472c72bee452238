"""Presence and liveness of a Redis cluster node: where connections are, who is alive.

A pair's where-hash (uuid -> node) lives on the pair's shard; the node's connection hash,
its alive key and the node set on shard 0. The heartbeat renews the alive key and reaps
dead nodes: their where-entries on every shard, then their presence.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import orjson

from .pubsub_io import Presence
from .redis_shards import RedisShards

if TYPE_CHECKING:
    from ..server.peer import Peer

logger = logging.getLogger(__name__)


class RedisPresence(RedisShards):
    """Mixin of :class:`~.redis_cluster.RedisCluster`."""

    node_ttl: float
    reaped: int
    incarnation: str  # this process's life: the value of its alive keys
    _missed_deadline = False  # its alive key had expired: it must register again

    def _presence_add(self, peer: Peer, info: Dict[str, Any]) -> None:
        info["pk"] = self.keys.pair_id(peer.pair)  # the reaper finds the where-entry by it
        self._q(self._shard(peer.pair)).push(("HSET", self.keys.where(peer.pair), peer.uuid,
                                              self.node_id))
        self._q(self._shards[0]).push(("HSET", self.keys.conns(self.node_id), peer.uuid,
                                       orjson.dumps(info)))

    def _presence_remove(self, peer: Peer) -> None:
        self._q(self._shard(peer.pair)).push(("EVALSHA", "unregister", 1,
                                              self.keys.where(peer.pair), peer.uuid,
                                              self.node_id))
        self._q(self._shards[0]).push(("HDEL", self.keys.conns(self.node_id), peer.uuid))

    # -- liveness ------------------------------------------------------------------------------

    async def _heartbeat(self) -> Tuple[bool, List[str]]:
        redis = self._redis
        assert redis is not None
        keys, node = self.keys, self.node_id
        for shard in self._shards:  # an idle queue also learns when its Redis is away
            if shard.queue is not None and shard.queue.depth == 0:  # (none piles up)
                shard.queue.push(("PING",))
        pipe = redis.pipeline(transaction=False)
        pipe.set(keys.alive(node), self.incarnation, px=int(self.node_ttl * 1000), get=True)
        pipe.sadd(keys.nodes, node)
        pipe.smembers(keys.nodes)
        previous, _, members = await pipe.execute()
        if previous is None:  # taken for dead: kept until a heartbeat reports it, so a
            self._missed_deadline = True  # failure below does not lose it
        self._alive_on_other_shards()
        self._renew_claims()
        names = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        others = sorted(m for m in names if m != node)
        alive = await self._alive_of(others)
        for dead in (o for o in others if o not in alive):
            await self._reap(dead)
        missed, self._missed_deadline = self._missed_deadline, False
        return not missed, alive

    def _renew_claims(self) -> None:
        """Write again the claims of frames whose handlers still run here."""

    def _alive_on_other_shards(self) -> None:
        """The alive key on every other shard too: a frame's claim lives on its home
        shard, whose check script asks there whether the claiming node is alive."""
        ttl = int(self.node_ttl * 1000)
        for shard in self._shards[1:]:
            if shard.queue is not None:
                shard.queue.push(("SET", self.keys.alive(self.node_id), self.incarnation,
                                  "PX", ttl))

    async def _reap(self, dead: str) -> None:
        """Remove a dead node's where-entries (on every shard), then its presence."""
        keys = self.keys
        first = self._shards[0].redis
        assert first is not None
        conns = await first.hgetall(keys.conns(dead))
        per_shard: Dict[int, List[str]] = {}
        for uuid, raw in conns.items():
            pk = orjson.loads(raw).get("pk")
            if pk:
                shard = self.ring.shard_of(pk)
                per_shard.setdefault(shard, []).extend([
                    f"{keys.prefix}:w:{pk}", uuid.decode() if isinstance(uuid, bytes) else uuid])
        for index, args in per_shard.items():
            redis = self._shards[index].redis
            if redis is not None:
                await redis.evalsha(self._q(self._shards[index])._scripts["reap_where"].sha,
                                    0, dead, keys.alive(dead), *args)
        n = await first.evalsha(self._q(self._shards[0])._scripts["reap"].sha, 2,
                                keys.conns(dead), keys.nodes, dead, keys.alive(dead))
        if n and n > 0:
            self.reaped += int(n)
            logger.warning("cluster: node %s is gone; removed its %d connection(s)", dead, n)

    async def _alive_of(self, nodes: List[str]) -> List[str]:
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
        self._q(self._shards[0]).push(("SADD", self.keys.nodes, self.node_id))

    async def _read_presence(self, nodes: Optional[List[str]]) -> Presence:
        redis = self._redis
        if redis is None:
            return {}
        keys = self.keys
        if nodes is None:
            members = await redis.smembers(keys.nodes)
            names = (m.decode() if isinstance(m, bytes) else m for m in members)
            nodes = await self._alive_of(sorted(m for m in names if m != self.node_id))
        pipe = redis.pipeline(transaction=False)
        for other in nodes:
            pipe.hgetall(keys.conns(other))
        tables = await pipe.execute()
        return {other: {k.decode(): orjson.loads(v) for k, v in table.items()}
                for other, table in zip(nodes, tables)}
