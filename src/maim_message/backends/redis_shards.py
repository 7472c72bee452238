"""The Redis primaries of a cluster node: which one holds a pair, and their connections.

``cluster_redis_url`` names one Redis or several (comma separated); each pair's keys live
on the shard ``shard_ring.ShardRing`` picks for it, shard 0 also holds what is not per
pair (liveness, presence, fan-outs).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Union

from redis.asyncio import Redis

from ..core.redact import safe_url as safe_url  # (re-exported: logs name shards by it)
from ..errors import ClusterError
from .cluster_base import Pair
from .pubsub_io import PubSubIO
from .redis_batch import SendTurn
from .redis_channel import RedisChannel
from .redis_keys import Keys
from .redis_pipeline import CommandQueue
from .shard_ring import ShardRing


def split_urls(url: Union[str, Sequence[str]]) -> List[str]:
    """``cluster_redis_url``: one URL, several separated by commas, or a list (shards)."""
    urls = url.split(",") if isinstance(url, str) else list(url)
    out = [u.strip() for u in urls if u and u.strip()]
    if not out:
        raise ValueError("cluster_redis_url names no Redis")
    return out


def url_problem(url: str) -> Optional[str]:
    """What is wrong with one shard's URL, without connecting (None: nothing): the port,
    the database number, an unknown or malformed ``?option`` (redis-py would raise these
    only when the node starts). Nothing of the URL's user or password is repeated: the
    URL is first checked with them replaced."""
    scheme, sep, rest = url.partition("://")
    secret = "@" in rest
    if secret:  # everything up to the last "@" (a password may hold an unencoded "/")
        problem = _parse_problem(f"{scheme}{sep}x:x@{rest.rpartition('@')[2]}")
        if problem is None and _parse_problem(url) is not None:
            return ("the user or password cannot be parsed: percent-encode / ? # @ : in "
                    "them (%2F %3F %23 %40 %3A)")
    else:
        problem = _parse_problem(url)
    return problem


def _parse_problem(url: str) -> Optional[str]:
    from urllib.parse import urlsplit

    from redis.asyncio import ConnectionPool

    try:
        parts = urlsplit(url)
        ConnectionPool.from_url(url).make_connection()  # parses; connects nothing
    except Exception as exc:  # ValueError, TypeError, RedisError...: whatever from_url says
        reason = str(exc)
        unknown = re.search(r"unexpected keyword argument '([^']*)'", reason)
        return f"unknown option ?{unknown.group(1)}=" if unknown else (
            reason or type(exc).__name__)
    db = parts.path.strip("/") if parts.scheme != "unix" else ""
    if db and not db.isdigit():
        return f"the database must be a number (redis://host:6379/0), not \"{db}\""
    return None


class Shard:
    """One Redis primary: its clients, command queue, subscription and current batch."""

    __slots__ = ("channel", "index", "queue", "redis", "turn", "unconfirmed", "url")

    def __init__(self, index: int, url: str) -> None:
        self.index, self.url = index, url
        self.redis: Optional[Redis] = None
        self.queue: Optional[CommandQueue] = None
        self.channel: Optional[RedisChannel] = None  # this node's subscription there
        self.turn: Optional[SendTurn] = None
        # send batches written, not yet answered (a stall fails their waiters; the answer,
        # when Redis is back, still publishes them to the nodes holding their pairs)
        self.unconfirmed: Dict[Any, SendTurn] = {}


class RedisShards(PubSubIO):
    """Mixin of :class:`~.redis_cluster.RedisCluster`: the shard of a pair, a shard's queue."""

    node_id: str
    keys: Keys
    ring: ShardRing
    _shards: List[Shard]
    _shard_of: Dict[Pair, Shard]

    def _shard(self, pair: Pair) -> Shard:
        shard = self._shard_of.get(pair)
        if shard is None:
            if len(self._shard_of) >= 100_000:
                self._shard_of.clear()
            shard = self._shard_of[pair] = self._shards[
                self.ring.shard_of(self.keys.pair_id(pair))]
        return shard

    @staticmethod
    def _q(shard: Shard) -> CommandQueue:
        if shard.queue is None:
            raise ClusterError("cluster backend is not running (server not started)")
        return shard.queue

    @property
    def _redis(self) -> Optional[Redis]:
        return self._shards[0].redis
