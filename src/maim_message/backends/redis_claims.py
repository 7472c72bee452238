"""Sharded Redis: the cluster-wide frame check reads ONE shard; all of them only for re-sends.

A handled frame's record (its mark, ``frame_dedupe``) rides in the atomic script call of
the first message its handler sent, so it sits on that message's pair's shard: any shard.
Reading every shard for every frame made the check grow with the shard count. Instead,
before a frame's handler runs, the node *claims* the frame on its sender's shard (one
script call per shard and batch: "was it claimed before? claim it now", atomically):

- not claimed before: no node ever started handling it (a handler starts only after its
  claim), so no node recorded it: the handler runs, nothing else is read;
- claimed before (a re-send, after a node died or a connection dropped): the marks are
  read on every shard as before (``CHECK_FRAMES``), and the frame is handled only when no
  shard has it.

So a frame is handled twice only when the marks check would have let it be: the claim
adds a fast "certainly new" answer, never a "handled" one. Claims live in their own
time-bucketed sets (``<prefix>:c:<bucket>``, expiring like the marks). With one shard
the marks are read directly (a claim would be an extra write for nothing).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from ..errors import ClusterError
from .frame_dedupe import DedupeBuckets
from .redis_shards import RedisShards, Shard

if TYPE_CHECKING:
    from ..server.acks import GatedFrame

logger = logging.getLogger(__name__)


def split_claims(flags: str, count: int) -> Tuple[List[int], List[int]]:
    """A claim reply (``'0'`` new, ``'1'`` claimed before, per frame; ``'*'``: all
    claimed before) as the indexes of the new frames and of the ones whose marks must be
    read on every shard."""
    if flags == "*":
        return [], list(range(count))
    if len(flags) != count:
        raise ValueError(f"claim reply has {len(flags)} flags for {count} frames")
    new: List[int] = []
    again: List[int] = []
    for n, flag in enumerate(flags):
        (again if flag == "1" else new).append(n)
    return new, again


class FrameClaims(RedisShards):
    """Mixin of :class:`~.redis_cluster.RedisCluster`."""

    dedupe: DedupeBuckets

    def _frame_checked(self, token: str, frame: GatedFrame, seen: bool,
                       error: Optional[BaseException]) -> None:
        raise NotImplementedError

    def _push_checks(self, tokens: List[str], frames: List[GatedFrame]) -> None:
        raise NotImplementedError

    def _claim_later(self, token: str, frame: GatedFrame) -> None:
        """Queue the frame's claim on its sender's shard (sent with the batch)."""
        key = frame.receipt.key
        shard = self._shard((key[0], key[1]))
        shard.claims.append(token)
        shard.claimed.append(frame)

    def _push_claims(self) -> None:
        """The batch's claims: one CLAIM_FRAMES call per shard that has any."""
        current, previous = self.dedupe.both("c")
        ttl_ms = self.dedupe.ttl_ms
        for shard in self._shards:
            if shard.claims:
                tokens, shard.claims = shard.claims, []
                frames, shard.claimed = shard.claimed, []
                self._push_claim(shard, current, previous, ttl_ms, tokens, frames)

    def _push_claim(self, shard: Shard, current: str, previous: str, ttl_ms: int,
                    tokens: List[str], frames: List[GatedFrame]) -> None:
        fut = self._q(shard).push(("EVALSHA", "claim", 0, current, previous, ttl_ms,
                                   *tokens), want_result=True)
        assert fut is not None

        def done(f: asyncio.Future[Any]) -> None:
            checked = self._frame_checked
            error: Optional[BaseException] = None
            new: List[int] = []
            again: List[int] = []
            if f.cancelled():
                error = ClusterError("frame claim cancelled")
            elif f.exception() is not None:
                error = f.exception()
            else:
                try:
                    reply = f.result()
                    new, again = split_claims(
                        reply.decode() if isinstance(reply, bytes) else str(reply),
                        len(tokens))
                except ValueError as exc:
                    error = exc
            if error is not None:
                new, again = list(range(len(tokens))), []
            if again:  # re-sends: read the marks on every shard
                self._push_checks([tokens[n] for n in again], [frames[n] for n in again])
            for n in new:
                try:
                    checked(tokens[n], frames[n], False, error)
                except Exception:  # one frame's start must not stop the others'
                    logger.exception("cluster: starting a checked frame failed")
        fut.add_done_callback(done)
