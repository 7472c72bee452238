"""When unacked frames are due to be written again on the same connection (no I/O).

A server that cannot store a frame (our hub while its Redis is away) withholds the ack so
that the client re-sends it; published servers ack every frame at once. Without a re-send
on the live connection such a frame waited for the next reconnect, which may never come,
until ``message_cache_ttl`` dropped it. So the connection asks this clock, every few
seconds, up to which sequence number its unacked frames were last written at least
``interval`` ago, and writes those again (the server's dedupe acks what it handled
already). A round that brings no ack doubles the wait, up to ``max_interval``.

Writes are recorded per time slice (one record per ``interval / 8``: the highest
sequence number written in it), so memory stays flat however fast frames are sent; a
frame is re-sent at most one slice early, never late.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Deque, List

__all__ = ["ResendClock"]


class ResendClock:
    __slots__ = ("_clock", "_slices", "base", "interval", "max_interval")

    def __init__(self, interval: float, max_interval: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base = self.interval = interval
        self.max_interval = max(interval, max_interval)
        self._clock = clock
        self._slices: Deque[List[float]] = deque()  # [first write time, highest seq]

    @property
    def enabled(self) -> bool:
        return self.base > 0

    @property
    def tick(self) -> float:
        """How often the connection should ask :meth:`due`."""
        return self.base / 8

    def written(self, seq: int) -> None:
        """Frames up to ``seq`` were (re)written now."""
        now = self._clock()
        slices = self._slices
        if slices and now - slices[-1][0] < self.base / 8:
            if seq > slices[-1][1]:
                slices[-1][1] = seq
        else:
            slices.append([now, seq])

    def due(self) -> int:
        """The highest sequence number whose frames, if still unacked, are due again (0:
        none). The caller re-writes them and calls :meth:`written` and :meth:`resent`."""
        cutoff = self._clock() - self.interval
        slices = self._slices
        upto = 0
        while slices and slices[0][0] <= cutoff:
            upto = max(upto, int(slices.popleft()[1]))
        return upto

    def resent(self) -> None:
        """A round of re-sends went out: wait longer for the next (no ack came back)."""
        self.interval = min(self.interval * 2, self.max_interval)

    def acked(self) -> None:
        """The server acked a frame: back to the base interval."""
        self.interval = self.base

    def reset(self) -> None:
        """A new connection: everything unacked is written again from the start."""
        self._slices.clear()
        self.interval = self.base
