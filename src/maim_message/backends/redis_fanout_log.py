"""The fan-out log's I/O for a Redis cluster node: log what it fans out, read what it missed.

A fan-out goes to shard 0's log stream and channel in one script (``LOG_FANOUT``); after
that shard's channel reconnected, or at join, the node reads the log from the last
fan-out it handled, a page at a time, retried with backoff (``fanout_log.FanoutLog``
decides what each page hands on).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any, Callable, Coroutine, List, Tuple

from ..errors import ClusterError
from .fanout_log import FanoutLog
from .pubsub_messages import FanoutMessage, decode_message, encode_message
from .pubsub_state import stream_id_key
from .redis_shards import RedisShards
from .resp_reader import reply_text as _text

logger = logging.getLogger(__name__)

FANOUT_LOG_MAX = 1_000  # fan-outs the log keeps (about; and for the outbox ttl at most)
FANOUT_PAGE = 500  # log entries per read after a gap
FANOUT_RETRY_FIRST, FANOUT_RETRY_MAX = 0.05, 2.0  # s: between failed reads of the log


class RedisFanoutLog(RedisShards):
    """Mixin of :class:`~.redis_cluster.RedisCluster`."""

    ttl_ms: str
    fanouts_recovered: int
    _fanouts: FanoutLog
    _joined: bool
    _spawn: Callable[[Coroutine[Any, Any, None]], None]  # PubSubCluster's
    _fanout_arrived: Callable[[FanoutMessage], None]

    def _log_fanout(self, message: FanoutMessage) -> None:
        oldest = max(0, int(time.time() * 1000) - int(self.ttl_ms))  # (this node's clock)
        self._q(self._shards[0]).push(
            ("EVALSHA", "log_fanout", 1, self.keys.fanout_log, self.keys.all_channel,
             FANOUT_LOG_MAX, self.ttl_ms, oldest, encode_message(message)))

    def _catch_up_fanouts(self) -> None:
        after = self._fanouts.gap()
        if after is not None:  # (else a read is pending: it reads once more after)
            self._spawn(self._read_fanout_log(after))

    async def _fanout_page(self, after: str) -> Tuple[List[FanoutMessage], str, bool]:
        """One page of the fan-out log after ``after``: its fan-outs (an entry that is
        not one is logged and skipped), the last id it reached, whether more may follow."""
        read = self._q(self._shards[0]).push(
            ("XRANGE", self.keys.fanout_log, "(" + after, "+", "COUNT", FANOUT_PAGE),
            want_result=True, patient=True)
        assert read is not None
        page = await read
        out: List[FanoutMessage] = []
        for entry_id, fields in page:
            after = _text(entry_id)
            try:
                out.append(_logged_fanout(after, fields))
            except (ValueError, KeyError, TypeError, IndexError, ClusterError) as exc:
                logger.warning("cluster: skipping fan-out log entry %s: %s", after, exc)
        return out, after, len(page) >= FANOUT_PAGE

    async def _fanout_log_rewound(self, after: str) -> bool:
        """The log's newest entry is older than the last fan-out handled: the log was made
        again (a failover to a primary whose clock is behind): read it from its start."""
        read = self._q(self._shards[0]).push(
            ("XREVRANGE", self.keys.fanout_log, "+", "-", "COUNT", 1), want_result=True,
            patient=True)
        assert read is not None
        newest = await read
        if not newest or stream_id_key(_text(newest[0][0])) >= stream_id_key(after):
            return False
        logger.warning("cluster: the fan-out log ends before the last fan-out handled here "
                       "(made again, or its Redis's clock is behind): reading it whole")
        return True

    async def _catch_up_at_join(self) -> None:
        """Fan-outs published between reading the log's end and subscribing (the node
        holds no connections yet: they find nobody, unless a pair is loading)."""
        after = self._fanouts.gap()
        assert after is not None
        more = True
        while more:
            entries, after, more = await self._fanout_page(after)
            for message in self._fanouts.page(entries, after):
                self._fanout_arrived(message)
        for message in self._fanouts.caught_up():
            self._fanout_arrived(message)

    async def _read_fanout_log(self, after: str) -> None:
        """Hand on the logged fan-outs after ``after`` this node did not get on the channel
        (then those that arrived meanwhile), in log order, each once; a failed read is
        retried with backoff from where it stopped."""
        log = self._fanouts
        this_read = log.read_id
        backoff = FANOUT_RETRY_FIRST
        while self._joined and log.read_id == this_read:
            try:
                entries, upto, more = await self._fanout_page(after)
                rewound = (not entries and not more
                           and await self._fanout_log_rewound(upto))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. an ACL refusing XRANGE; stopping: quietly
                if not self._joined or log.read_id != this_read:
                    return
                logger.warning("cluster: reading the fan-out log failed (%s: %s); again in "
                               "%.2fs", type(exc).__name__, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, FANOUT_RETRY_MAX)
                continue
            if log.read_id != this_read:
                return  # given up meanwhile (too many waited): what waited went out
            backoff = FANOUT_RETRY_FIRST
            for message in log.page(entries, upto):
                if message.origin != self.node_id:
                    self.fanouts_recovered += 1
                self._fanout_arrived(message)
            after = upto
            if more:
                continue
            if rewound:
                after = log.last = "0-0"
                continue
            for message in log.caught_up():
                self._fanout_arrived(message)
            if not log.take_again():
                return
            again = log.gap()
            assert again is not None
            after = again


def _logged_fanout(entry_id: str, fields: List[Any]) -> FanoutMessage:
    message = decode_message(bytes(fields[1]))
    if not isinstance(message, FanoutMessage) or len(fields) != 2:
        raise ClusterError(f"fan-out log entry {entry_id} is not a fan-out")
    return replace(message, log_id=entry_id)
