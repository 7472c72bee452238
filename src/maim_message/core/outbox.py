"""The server's outbox: every message for a (user, platform) pair waits here until acked.

Sans-I/O. Each pair has an ordered queue; entries get an increasing sequence number, so
a connection's delivery state is one integer (the last seq written to it): a reconnect
starts from 0 and gets every unacked entry again, in order. Bounded by count per pair,
total bytes and age; what a bound evicts is counted, never silently lost.
An optional store (e.g. SQLite) mirrors appends and acks so a restart loses nothing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Protocol, Tuple

Pair = Tuple[str, str]  # (user_id, platform)


class OutboxEntry:
    """One message awaiting an ack; ``payload`` is the encoded envelope (JSON bytes)."""

    __slots__ = ("created", "msg_id", "only", "payload", "prev_seq", "seq")

    def __init__(self, seq: int, msg_id: str, payload: bytes, created: float,
                 prev_seq: int = 0, only: Optional[str] = None) -> None:
        self.seq = seq
        # for one connection (uuid) of the pair only; kept in memory, not in a store
        self.only = only
        self.prev_seq = prev_seq  # seq of the pair's previous entry when this one was added
        self.msg_id = msg_id
        self.payload = payload
        self.created = created


class OutboxStore(Protocol):
    """Durable mirror of the outbox (write-through)."""

    def load(self) -> Iterable[Tuple[str, str, int, str, bytes, float]]: ...

    def add(self, pair: Pair, entry: OutboxEntry) -> None: ...

    def remove(self, pair: Pair, msg_ids: List[str]) -> None: ...

    def close(self) -> None: ...


class PairQueue:
    __slots__ = ("bytes", "entries", "last_seq")

    def __init__(self) -> None:
        self.entries: OrderedDict[str, OutboxEntry] = OrderedDict()
        self.last_seq = 0
        self.bytes = 0


class Outbox:
    """Per-pair ordered queues with global bounds."""

    def __init__(
        self, *, max_per_pair: int = 10_000, max_bytes: int = 512 * 1024 * 1024,
        ttl: float = 86_400.0, store: Optional[OutboxStore] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_per_pair = max_per_pair
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.store = store
        self._clock = clock
        self.pairs: Dict[Pair, PairQueue] = {}
        self._seq = 0
        self.total_bytes = 0
        self.total_count = 0
        self.evicted = 0
        self.expired = 0
        self.acked = 0
        if store is not None:
            self._load(store)

    def _load(self, store: OutboxStore) -> None:
        for user, platform, seq, msg_id, payload, created in store.load():
            queue = self.pairs.setdefault((user, platform), PairQueue())
            entry = OutboxEntry(seq, msg_id, payload, created)
            queue.entries[msg_id] = entry
            queue.last_seq = max(queue.last_seq, seq)
            self._seq = max(self._seq, seq)
            queue.bytes += len(payload)
            self.total_bytes += len(payload)
            self.total_count += 1

    # -- writing ----------------------------------------------------------------------------

    def append(self, pair: Pair, msg_id: str, payload: bytes,
               only: Optional[str] = None, persist: bool = True) -> OutboxEntry:
        """Queue a message; may evict the pair's oldest entries to respect the bounds.

        ``persist=False``: the store has it already (cluster mode: another node wrote it,
        or it was read back from the store), so it is only queued here."""
        queue = self.pairs.get(pair)
        if queue is None:
            queue = self.pairs[pair] = PairQueue()
        self._seq += 1
        entry = OutboxEntry(self._seq, msg_id, payload, self._clock(), queue.last_seq, only)
        queue.last_seq = self._seq
        queue.entries[msg_id] = entry
        queue.bytes += len(payload)
        self.total_bytes += len(payload)
        self.total_count += 1
        if persist and self.store is not None:
            self.store.add(pair, entry)
        if len(queue.entries) > self.max_per_pair or self.total_bytes > self.max_bytes:
            self._enforce_bounds(pair, queue, keep=msg_id)
        return entry

    def ack(self, pair: Pair, msg_id: str) -> bool:
        """Forget an acked message of ``pair``; False when unknown or already acked."""
        queue = self.pairs.get(pair)
        if queue is None:
            return False
        entry = queue.entries.pop(msg_id, None)
        if entry is None:
            return False
        self._account_removed(queue, entry)
        self.acked += 1
        if self.store is not None:
            self.store.remove(pair, [msg_id])
        if not queue.entries:
            del self.pairs[pair]
        return True

    def drop_through(self, pair: Pair, seq: int) -> int:
        """Forget the pair's entries up to ``seq`` (sent to a peer that does not ack)."""
        queue = self.pairs.get(pair)
        if queue is None:
            return 0
        ids: List[str] = []
        while queue.entries:
            first = next(iter(queue.entries.values()))
            if first.seq > seq:
                break
            popped = self._pop_oldest(pair, queue)
            if popped is not None:
                ids.append(popped)
        if ids and self.store is not None:
            self.store.remove(pair, ids)
        if not queue.entries:
            del self.pairs[pair]
        return len(ids)

    def discard_pair(self, pair: Pair) -> int:
        """Forget a pair's queue without telling the store (cluster mode: the store keeps
        it for whichever node the pair connects to next). Returns how many entries."""
        queue = self.pairs.pop(pair, None)
        if queue is None:
            return 0
        self.total_bytes -= queue.bytes
        self.total_count -= len(queue.entries)
        return len(queue.entries)

    def _account_removed(self, queue: PairQueue, entry: OutboxEntry) -> None:
        size = len(entry.payload)
        queue.bytes -= size
        self.total_bytes -= size
        self.total_count -= 1

    def _pop_oldest(self, pair: Pair, queue: PairQueue) -> Optional[str]:
        if not queue.entries:
            return None
        msg_id, entry = queue.entries.popitem(last=False)
        self._account_removed(queue, entry)
        return msg_id

    def _enforce_bounds(self, pair: Pair, queue: PairQueue, keep: str) -> None:
        removed: Dict[Pair, List[str]] = {}
        while len(queue.entries) > self.max_per_pair:
            msg_id = self._pop_oldest(pair, queue)
            if msg_id is None:
                break
            removed.setdefault(pair, []).append(msg_id)
        # Over the byte budget: drop the oldest entries, this pair first, then the others.
        for other_pair in [pair, *[p for p in self.pairs if p != pair]]:
            other = self.pairs.get(other_pair)
            while other is not None and self.total_bytes > self.max_bytes and other.entries:
                if next(iter(other.entries)) == keep:
                    break
                msg_id = self._pop_oldest(other_pair, other)
                if msg_id is not None:
                    removed.setdefault(other_pair, []).append(msg_id)
            if self.total_bytes <= self.max_bytes:
                break
        for p, ids in removed.items():
            self.evicted += len(ids)
            if self.store is not None:
                self.store.remove(p, ids)
            queue_p = self.pairs.get(p)
            if queue_p is not None and not queue_p.entries and p != pair:
                del self.pairs[p]

    def expire(self) -> int:
        """Drop entries older than ``ttl``; returns how many."""
        cutoff = self._clock() - self.ttl
        dropped = 0
        for pair in list(self.pairs):
            queue = self.pairs[pair]
            ids: List[str] = []
            while queue.entries:
                first = next(iter(queue.entries.values()))
                if first.created >= cutoff:
                    break
                popped = self._pop_oldest(pair, queue)
                if popped is not None:
                    ids.append(popped)
            if ids:
                dropped += len(ids)
                if self.store is not None:
                    self.store.remove(pair, ids)
            if not queue.entries:
                del self.pairs[pair]
        self.expired += dropped
        return dropped

    def replace_store(self, store: Optional[OutboxStore]) -> Optional[OutboxStore]:
        """Mirror appends and acks into ``store`` from now on; returns the previous one."""
        previous, self.store = self.store, store
        return previous

    # -- reading ----------------------------------------------------------------------------

    def contains(self, pair: Pair, msg_id: str) -> bool:
        """Whether ``msg_id`` is queued (unacked) for ``pair``."""
        queue = self.pairs.get(pair)
        return queue is not None and msg_id in queue.entries

    def last_seq(self, pair: Pair) -> int:
        queue = self.pairs.get(pair)
        return queue.last_seq if queue is not None else 0

    def pending_after(self, pair: Pair, seq: int) -> Iterator[OutboxEntry]:
        """Unacked entries of ``pair`` with a sequence number above ``seq``, in order."""
        queue = self.pairs.get(pair)
        if queue is None:
            return iter(())
        return (e for e in list(queue.entries.values()) if e.seq > seq)

    def depth(self, pair: Optional[Pair] = None) -> int:
        if pair is None:
            return self.total_count
        queue = self.pairs.get(pair)
        return len(queue.entries) if queue is not None else 0

    def stats(self) -> Dict[str, int]:
        return {
            "outbox_depth": self.total_count, "outbox_bytes": self.total_bytes,
            "outbox_pairs": len(self.pairs), "acked": self.acked,
            "evicted": self.evicted, "expired": self.expired,
        }

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
