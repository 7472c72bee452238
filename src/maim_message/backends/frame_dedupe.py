"""Exactly-once to handlers across nodes: the shared record of handled frames (no I/O).

A frame is ``(sender user, sender platform, msg_id)``. A node records the frames its
handlers handled in the store, in the same atomic write as the first message each
handler sent (or alone, when the handler sent nothing), so a client that re-sends an
unacked frame to another node after its node died finds it there and is acked without
being handled again. The record is bounded and expires: frames go into one set per time
bucket of ``ttl`` seconds, a check reads the current and the previous bucket, and a
bucket's set expires ``2 * ttl`` after its last write.
"""

from __future__ import annotations

import time
from hashlib import blake2b
from typing import Callable, Tuple

FrameKey = Tuple[str, str, str]


def frame_token(key: FrameKey) -> str:
    """A short, fixed-size name for a frame (user ids may be API keys: hashed)."""
    return blake2b("\x00".join(key).encode(), digest_size=10).hexdigest()


class DedupeBuckets:
    """Names of the time-bucketed sets (``<prefix>:d:<bucket>``) frames are recorded in."""

    __slots__ = ("_clock", "prefix", "ttl")

    def __init__(self, prefix: str, ttl: float,
                 clock: Callable[[], float] = time.time) -> None:
        if ttl <= 0:
            raise ValueError("cluster dedupe ttl must be positive")
        self.prefix = prefix
        self.ttl = ttl
        self._clock = clock

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 2000)  # a bucket is read for up to 2 ttl after it opened

    def current(self) -> str:
        return f"{self.prefix}:d:{int(self._clock() // self.ttl)}"

    def both(self) -> Tuple[str, str]:
        """(current, previous): a frame recorded within the last ``ttl`` s is in one."""
        bucket = int(self._clock() // self.ttl)
        return f"{self.prefix}:d:{bucket}", f"{self.prefix}:d:{bucket - 1}"
