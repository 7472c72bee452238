"""Which unacked frames are due to be written again on the live connection (no I/O).

A server that cannot store a frame (our hub while its Redis is away) withholds the ack so
that the client re-sends it; published servers ack every frame at once. Without a re-send
on the live connection such a frame waited for the next reconnect, which may never come,
until ``message_cache_ttl`` dropped it. So each frame remembers when the connection last
wrote it (``OutboxEntry.written_at``) and how often it was written again there
(``resends``); it is due once it waited ``interval * 2 ** resends`` (at most
``max_interval``) for its ack. Per frame, so acks of other frames (a server that is slow
on one frame only) neither hurry nor delay it.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, List

from ..core.outbox import OutboxEntry

__all__ = ["ResendClock"]


class ResendClock:
    __slots__ = ("_clock", "base", "max_interval")

    def __init__(self, interval: float, max_interval: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base = max(0.0, interval)
        self.max_interval = max(self.base, max_interval)
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self.base > 0

    @property
    def tick(self) -> float:
        """How often the connection should ask :meth:`due`."""
        return self.base / 4

    def written(self, entry: OutboxEntry) -> None:
        """The connection wrote ``entry`` now (its first write there, or after a reconnect
        re-sent everything: the backoff starts again)."""
        entry.written_at = self._clock()
        entry.resends = 0

    def due(self, entries: Iterable[OutboxEntry], upto: int) -> List[OutboxEntry]:
        """The unacked ``entries`` (oldest first) written on this connection (seq <=
        ``upto``) that waited long enough; each counts as written again now."""
        now = self._clock()
        out: List[OutboxEntry] = []
        for entry in entries:
            if entry.seq > upto:
                break
            wait = min(self.base * (1 << min(entry.resends, 30)), self.max_interval)
            if now - entry.written_at >= wait:
                entry.written_at = now
                entry.resends += 1
                out.append(entry)
        return out
