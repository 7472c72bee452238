"""Garbage-collector settings for a process that runs the hub (the hub owns it).

A relaying hub allocates a few dozen container objects per message. With CPython's default
young threshold (700 net allocations) a young collection runs every few messages; in
cluster mode a frame's objects live a few milliseconds (waiting for Redis), so those
collections find them alive, promote them, and the older generations' collections walk
every object the process holds. Before it starts listening the hub freezes what it has
(modules, configuration: never garbage) out of the collector's view and raises the young
threshold: young collections run ~30x less often and each stays short. Nothing a
connection creates is frozen (a frozen object caught in a cycle is never freed). Cyclic
garbage waits longer: up to YOUNG allocations in the young generation, YOUNG x MIDDLE in
the middle one; full collections keep CPython's cadence in middle collections (OLD).

Only the hub's own runner calls this; the library never changes the collector of an
application that embeds it.
"""

from __future__ import annotations

import gc

YOUNG = 20_000  # net container allocations between young collections (CPython: 700)
MIDDLE = 20  # young collections per middle-generation collection (CPython: 10)
OLD = 10  # middle collections per full collection (as CPython)


def tune_for_serving() -> None:
    """Freeze the start-up objects and space collections out (once, before listening)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
