"""Exactly-once to handlers across nodes: the shared record of handled frames (no I/O).

A frame is ``(sender user, sender platform, msg_id)``. A node records the frames its
handlers handled in the store, in the same atomic write as the first message each
handler sent (or alone, when the handler sent nothing), so a client that re-sends an
unacked frame to another node after its node died finds it there and is acked without
being handled again.

Before a handler starts, its node also *claims* the frame (in the same call as the check):
a client that re-sends a frame to another node while the first node is still handling it
(the client's connection dropped, the first node did not) finds the claim of a live node,
and its new node waits until the frame is recorded as handled (then acks it as a
duplicate) or the claiming node is gone or gave it up (then handles it). One hash per time
bucket of ``ttl`` seconds holds them: token -> ``HANDLED``, ``CLAIM`` + node id, or (with
claims) ``STARTED`` + node id from the handler's first send until it returns; a check
reads the current and the previous bucket, and a bucket expires ``2 * ttl`` after its
last write.
"""

from __future__ import annotations

import time
from hashlib import blake2b
from typing import Callable, Dict, List, Optional, Sequence, Tuple

FrameKey = Tuple[str, str, str]

HANDLED = "h"  # a bucket's value for a recorded frame
CLAIM = "@"  # prefix of a claim's value (the node id follows): never equal to HANDLED
STARTED = "s@"  # prefix of a record made by a handler's first send while it still runs
# between a claim's node id and the claiming process's incarnation (its alive key's value);
# a NUL: never part of a configured node id
INCARNATION_SEP = "\x00"

# one character per frame in a check's answer
FRESH, SEEN, HELD = "0", "1", "2"  # handle it / a node handled it / a live node handles it
UNCHECKED = "?"  # a shard that may hold its record did not answer
ASK = "3"  # a read of the records found a claim or a started record: the script decides
_RECORD = HANDLED.encode()


def frame_token(key: FrameKey) -> str:
    """A short, fixed-size name for a frame (user ids may be API keys: hashed)."""
    return blake2b("\x00".join(key).encode(), digest_size=10).hexdigest()


class DedupeBuckets:
    """Names of the time-bucketed hashes (``<prefix>:f:<bucket>``) frames are recorded in."""

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
        return f"{self.prefix}:f:{int(self._clock() // self.ttl)}"

    def both(self) -> Tuple[str, str]:
        """(current, previous): a frame recorded within the last ``ttl`` s is in one."""
        bucket = int(self._clock() // self.ttl)
        return f"{self.prefix}:f:{bucket}", f"{self.prefix}:f:{bucket - 1}"


def home_shard(token: str, shards: int) -> int:
    """The shard that holds a frame's claim, as the check script computes it (the same on
    every node; tokens are hex)."""
    return int(token[:8], 16) % shards if shards > 1 else 0


def merge_answers(count: int, answers: Sequence[Optional[str]]) -> str:
    """One check's answer for ``count`` frames from every shard's (``None``: that shard
    failed). A frame is SEEN when any shard recorded it (a handler's first send records it
    on its target's shard); else HELD when its home shard says so (only the home holds
    claims); else FRESH when every shard answered; else UNCHECKED (the failed shard may
    hold its record: not handled, the client re-sends)."""
    if len(answers) == 1:
        only = answers[0]
        return only if only is not None else UNCHECKED * count
    failed = any(a is None for a in answers)
    marked = [a for a in answers if a is not None and (SEEN in a or HELD in a)]
    if not marked:
        return (UNCHECKED if failed else FRESH) * count
    out = []
    for n in range(count):
        chars = {a[n] for a in marked}
        out.append(SEEN if SEEN in chars else UNCHECKED if failed
                   else HELD if HELD in chars else FRESH)
    return "".join(out)


def records_answer(current: List[Optional[bytes]], previous: List[Optional[bytes]]) -> str:
    """One shard's answer from a plain read of both buckets (HMGET each, in token order):
    SEEN for a record, FRESH for nothing, ASK for a claim or a started record (a node
    with claims wrote it: whether that node lives is the check script's question)."""
    if not any(current) and not any(previous):  # the usual answer: no frame seen before
        return FRESH * len(current)
    return "".join(SEEN if a == _RECORD or b == _RECORD else FRESH if a is None and b is None
                   else ASK for a, b in zip(current, previous))


def split_asks(count: int, answers: Sequence[Optional[str]]) -> str:
    """The merged answer of plain reads (:func:`merge_answers`, ASK taken as FRESH), with
    ASK kept for the frames that must still go to the check script: ASK somewhere, SEEN
    nowhere and every shard answered."""
    if not any(a is not None and ASK in a for a in answers):
        return merge_answers(count, answers)
    merged = merge_answers(count, [None if a is None else a.replace(ASK, FRESH)
                                   for a in answers])
    return "".join(ASK if flag == FRESH and any(a is not None and a[n] == ASK for a in answers)
                   else flag for n, flag in enumerate(merged))


class ClaimRenewals:
    """The claims this node holds on frames whose handlers still run (no I/O).

    A claim is written into the current time bucket and the checks read two buckets, so
    it is seen for between ``ttl`` and ``2 * ttl``. A handler that runs longer would lose
    it, and a re-send to another node would start the frame again: so a claim is written
    again into the current bucket (HSETNX: never over a record) once it is ``ttl / 2``
    old, while its handler runs, for at most ``max_age`` (a handler that never returns
    does not hold its frame forever), and for at most ``cap`` frames at once."""

    __slots__ = ("_at", "_clock", "cap", "every", "max_age")

    def __init__(self, ttl: float, max_age: float = 600.0, cap: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every = ttl / 2
        self.max_age = max_age
        self.cap = cap
        self._clock = clock
        self._at: Dict[str, Tuple[float, float]] = {}  # token -> (claimed, last written)

    def __len__(self) -> int:
        return len(self._at)

    def claimed(self, token: str) -> None:
        """The check claimed ``token`` for this node and its handler starts."""
        if len(self._at) < self.cap:
            now = self._clock()
            self._at[token] = (now, now)

    def ended(self, token: str) -> None:
        """The frame is recorded as handled, or its claim was taken back."""
        self._at.pop(token, None)

    def due(self) -> List[str]:
        """The claims to write again now (each counts as written again)."""
        now = self._clock()
        out: List[str] = []
        for token, (claimed, written) in list(self._at.items()):
            if now - claimed >= self.max_age:
                del self._at[token]
            elif now - written >= self.every:
                self._at[token] = (claimed, now)
                out.append(token)
        return out

    def clear(self) -> None:
        self._at.clear()
