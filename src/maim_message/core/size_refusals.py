"""Which queued message a receiver keeps refusing as too big (no I/O).

A receiver whose ``max_size`` is below a message queued for it closes the connection
(1009) when that message is written, reconnects, and is sent the same message first
again: its pair is stuck behind it until the message expires (24 h by default), and every
later message for it waits too. The server cannot see the receiver's limit, only its
close. The largest message written to the closed connection and not acked is the suspect;
the same suspect on ``strikes`` such closes in a row is given up (removed as if acked,
logged), and the pair's other messages go on.
"""

from __future__ import annotations

from typing import Dict, Tuple

Pair = Tuple[str, str]

STRIKES = 3  # closes in a row over the same message before it is given up
MAX_PAIRS = 10_000  # pairs remembered (bounded under many misconfigured receivers)


class SizeRefusals:
    """Per pair: the suspect of its last 1009 close and how many closes in a row named it."""

    __slots__ = ("_suspects", "max_pairs", "strikes")

    def __init__(self, strikes: int = STRIKES, max_pairs: int = MAX_PAIRS) -> None:
        if strikes < 1:
            raise ValueError("strikes must be at least 1")
        self.strikes = strikes
        self.max_pairs = max_pairs
        self._suspects: Dict[Pair, Tuple[str, int]] = {}

    def refused(self, pair: Pair, msg_id: str) -> bool:
        """The receiver of ``pair`` closed over its size limit with ``msg_id`` the
        suspect: True when that was the last strike (give the message up now)."""
        last = self._suspects.pop(pair, None)
        count = last[1] + 1 if last is not None and last[0] == msg_id else 1
        if count >= self.strikes:
            return True
        while len(self._suspects) >= self.max_pairs:  # the oldest go first
            del self._suspects[next(iter(self._suspects))]
        self._suspects[pair] = (msg_id, count)
        return False

    def strikes_of(self, pair: Pair) -> int:
        last = self._suspects.get(pair)
        return last[1] if last is not None else 0
