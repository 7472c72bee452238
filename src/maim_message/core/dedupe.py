"""A bounded window of recently seen message ids, one window per sender.

0.6.8 kept one unbounded server-wide set purged only when idle. One bounded server-wide
window would let any sender evict every other sender's ids with a burst of fresh ones,
and their ordinary re-sends (after a lost ack) would then be handled twice. So each
sender has its own window, bounded by count and by age; the number of senders and the
total are bounded too, and when the total is over its bound a sender holding more than
its fair share evicts its own oldest ids, not another sender's. Memory stays flat.

Keys are tuples ``(*sender, msg_id)`` (the server uses ``(user, platform, msg_id)``); any
other hashable key is an id of one anonymous sender.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable, Hashable, Optional, Tuple


def _split(key: Any) -> Tuple[Hashable, Hashable]:
    if type(key) is tuple:
        return key[:-1], key[-1]
    return None, key


class DedupeWindow:
    """Remembers each sender's ids for ``ttl`` seconds, at most ``max_entries`` of them
    per sender, for at most ``max_senders`` senders and ``max_total`` ids in all
    (default: four senders' worth)."""

    __slots__ = ("_clock", "_floor", "_last", "_senders", "_total", "max_entries",
                 "max_senders", "max_total", "ttl")

    def __init__(
        self, max_entries: int = 10_000, ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic, max_senders: int = 10_000,
        max_total: Optional[int] = None,
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.max_senders = max(1, max_senders)
        self.max_total = max(self.max_senders, max_total if max_total is not None
                             else 4 * max_entries)
        self._clock = clock
        # least recently active sender first
        self._senders: OrderedDict[Hashable, OrderedDict[Hashable, float]] = OrderedDict()
        self._total = 0
        self._last: Hashable = None  # the sender at the end of ``_senders`` (if not None)
        # No id recorded is older than this: until ``now - ttl`` reaches it, nothing can
        # have expired and the expiry pass is skipped. Lowered by nothing (stamps only
        # grow), raised when the one window is swept.
        self._floor = float("inf")

    def seen(self, key: Hashable) -> bool:
        """Record ``key``; True when it was already in its sender's window (a duplicate)."""
        if type(key) is tuple:
            return self.seen_from(key[:-1], key[-1])
        return self.seen_from(None, key)

    def seen_from(self, sender: Hashable, msg_id: Hashable) -> bool:
        """:meth:`seen` of the key ``(*sender, msg_id)`` (``sender`` a tuple), without
        building the key: the server keeps each connection's sender tuple."""
        now = self._clock()
        senders = self._senders
        window = senders.get(sender)
        if window is None:
            window = senders[sender] = OrderedDict()
            self._last = sender
            if len(senders) > self.max_senders:  # the least recently active sender goes
                self._drop_sender(next(iter(senders)))
        else:
            if sender is not self._last:  # already the most recently active one: no move
                senders.move_to_end(sender)
                self._last = sender
            stamp = window.get(msg_id)
            if stamp is not None:
                if now - stamp <= self.ttl:
                    return True
                del window[msg_id]  # expired: seen anew
                self._total -= 1
        window[msg_id] = now
        self._total += 1
        if now < self._floor:
            self._floor = now
        if now - self.ttl >= self._floor or len(window) > self.max_entries or (
                self._total > self.max_total):
            self._trim(sender, window, now)
        return False

    def _trim(self, sender: Hashable, window: OrderedDict[Hashable, float],
              now: float) -> None:
        """Evict from the old ends (amortised O(1) per call)."""
        while len(window) > self.max_entries:
            window.popitem(last=False)
            self._total -= 1
        cutoff = now - self.ttl
        senders = self._senders
        if cutoff >= self._floor:  # some id may have expired
            self._expire(window, cutoff)
            idle = next(iter(senders))  # expired ids of idle senders go too, one a call
            if idle != sender:
                idle_window = senders[idle]
                self._expire(idle_window, cutoff)
                if not idle_window:
                    del senders[idle]
            elif len(senders) == 1:  # the only window: its oldest id is the floor
                self._floor = next(iter(window.values())) if window else now
        while self._total > self.max_total:
            if len(window) > self.max_total // len(senders):
                victim, victim_window = sender, window  # over its share: its own ids
            else:
                victim = next(iter(senders))
                victim_window = senders[victim]
            victim_window.popitem(last=False)
            self._total -= 1
            if not victim_window and victim != sender:
                del senders[victim]

    def _expire(self, window: OrderedDict[Hashable, float], cutoff: float) -> None:
        while window:
            oldest = next(iter(window.values()))
            if oldest >= cutoff:
                break
            window.popitem(last=False)
            self._total -= 1

    def _drop_sender(self, sender: Hashable) -> None:
        window = self._senders.pop(sender)
        self._total -= len(window)

    def forget(self, key: Hashable) -> None:
        """Drop ``key`` (it was not handled after all: a re-send must be handled)."""
        sender, msg_id = _split(key)
        window = self._senders.get(sender)
        if window is not None and window.pop(msg_id, None) is not None:
            self._total -= 1
            if not window:
                del self._senders[sender]

    def __len__(self) -> int:
        return self._total

    @property
    def senders(self) -> int:
        return len(self._senders)

    def clear(self) -> None:
        self._senders.clear()
        self._total = 0
        self._last = None
        self._floor = float("inf")
