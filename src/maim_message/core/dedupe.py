"""A bounded window of recently seen message ids, scoped per sender.

0.6.8 kept one unbounded server-wide set purged only when idle; here each sender has its
own window, bounded both by count and by age, so memory stays flat under steady traffic.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Hashable


class DedupeWindow:
    """Remembers ids for ``ttl`` seconds, at most ``max_entries`` of them."""

    __slots__ = ("_clock", "_seen", "max_entries", "ttl")

    def __init__(
        self, max_entries: int = 10_000, ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        self._seen: OrderedDict[Hashable, float] = OrderedDict()

    def seen(self, key: Hashable) -> bool:
        """Record ``key``; True when it was already in the window (a duplicate)."""
        now = self._clock()
        seen = self._seen
        stamp = seen.get(key)
        if stamp is not None:
            if now - stamp <= self.ttl:
                return True
            seen.move_to_end(key)  # expired: seen anew (a new key is appended anyway)
        seen[key] = now
        # Evict from the old end: by count first, then by age (cheap, amortised O(1)).
        while len(seen) > self.max_entries:
            seen.popitem(last=False)
        cutoff = now - self.ttl
        while seen:
            oldest_key = next(iter(seen))
            if seen[oldest_key] >= cutoff:
                break
            del seen[oldest_key]
        return False

    def forget(self, key: Hashable) -> None:
        """Drop ``key`` (it was not handled after all: a re-send must be handled)."""
        self._seen.pop(key, None)

    def __len__(self) -> int:
        return len(self._seen)

    def clear(self) -> None:
        self._seen.clear()
