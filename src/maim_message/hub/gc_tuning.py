"""Garbage-collector settings for a process that runs the hub (the hub owns it).

A relaying hub allocates a few dozen container objects per message. With CPython's default
young threshold (700 net allocations) a young collection runs every few messages; in
cluster mode a frame's objects live a few milliseconds (waiting for Redis), so those
collections find them alive, promote them, and the older generations' collections walk
every object the process holds. After start-up the hub freezes what it has (modules,
configuration, the loop: never garbage) out of the collector's view and raises the young
threshold: collections run ~30x less often and each stays short. Cyclic garbage waits
longer to be freed, bounded by the threshold's allocation count.

Only the hub's own runner calls this; the library never changes the collector of an
application that embeds it.
"""

from __future__ import annotations

import gc

YOUNG = 20_000  # net container allocations between young collections (CPython: 700)
MIDDLE = 20  # young collections per middle-generation collection (CPython: 10)
OLD = 100  # middle collections per full collection (CPython: 10)


def tune_for_serving() -> None:
    """Freeze the start-up objects and space collections out (call once, when started)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
