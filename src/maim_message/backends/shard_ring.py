"""Which Redis primary holds a pair's keys: client-side consistent hashing (no I/O).

Every key of one (user, platform) pair (stream, index, where-hash) lives on one shard,
so a send batch stays one atomic transaction on one primary. A ring of virtual points keeps most
pairs in place when a shard is added (only ~1/N of them move). Shard 0 also holds what
is not per pair (node liveness, presence, the fan-out channel).
"""

from __future__ import annotations

from bisect import bisect
from hashlib import blake2b
from typing import List, Sequence


def _point(text: str) -> int:
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big")


class ShardRing:
    """``shard_of(pair_id)`` -> index into the shard list (stable for a given list)."""

    __slots__ = ("_owners", "_points", "names")

    def __init__(self, names: Sequence[str], vnodes: int = 128) -> None:
        if not names:
            raise ValueError("a shard ring needs at least one shard")
        self.names = list(names)
        ring = sorted((_point(f"{name}#{v}"), i)
                      for i, name in enumerate(self.names) for v in range(vnodes))
        self._points: List[int] = [p for p, _ in ring]
        self._owners: List[int] = [i for _, i in ring]

    def __len__(self) -> int:
        return len(self.names)

    def shard_of(self, pair_id: str) -> int:
        if len(self.names) == 1:
            return 0
        i = bisect(self._points, _point(pair_id))
        return self._owners[i % len(self._owners)]
