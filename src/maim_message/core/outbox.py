"""The server's outbox: every message for a (user, platform) pair waits here until acked.

Sans-I/O. Each pair has an ordered queue; entries get an increasing sequence number, so
a connection's delivery state is one integer (the last seq written to it): a reconnect
starts from 0 and gets every unacked entry again, in order. Bounded by count per pair,
bytes per receiving user inside a global byte budget (one user's flood evicts only that
user's messages), pairs per user, and age; what a bound evicts is counted, never
silently lost. Bytes are counted honestly: payload plus a fixed overhead per entry and
per pair (the Python objects that hold them), so ``outbox_bytes`` tracks real memory.
An optional store (e.g. SQLite) mirrors appends and acks so a restart loses nothing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Protocol, Set, Tuple

from .defaults import DEFAULT_OUTBOX

Pair = Tuple[str, str]  # (user_id, platform)

# Memory a queued message costs beyond its payload and id: the entry object, its slot in
# the pair's ordered dict, the float and ints it holds (measured with tracemalloc on
# CPython 3.11, rounded up).
ENTRY_OVERHEAD = 256
# Memory of one (user, platform) queue: the queue object, its ordered dict, the pair
# tuple and platform string, the slots in the outbox's and the delivery's maps.
PAIR_OVERHEAD = 1024


def entry_cost(msg_id: str, payload: bytes) -> int:
    return len(payload) + len(msg_id) + ENTRY_OVERHEAD


class OutboxEntry:
    """One message awaiting an ack; ``payload`` is the encoded envelope (JSON bytes)."""

    __slots__ = ("created", "msg_id", "only", "payload", "prev_seq", "resends", "seq",
                 "written_at")

    def __init__(self, seq: int, msg_id: str, payload: bytes, created: float,
                 prev_seq: int = 0, only: Optional[str] = None) -> None:
        self.seq = seq
        # the client's re-send policy (client/resend_clock.py): when the current connection
        # last wrote it, and how often it wrote it again there without an ack
        self.written_at = 0.0
        self.resends = 0
        # for one connection (uuid) of the pair only (a store may keep it: load_targets)
        self.only = only
        self.prev_seq = prev_seq  # seq of the pair's previous entry when this one was added
        self.msg_id = msg_id
        self.payload = payload
        self.created = created


class OutboxStore(Protocol):
    """Durable mirror of the outbox (write-through)."""

    def load(self) -> Iterable[Tuple[str, str, int, str, bytes, float]]: ...

    def add(self, pair: Pair, entry: OutboxEntry) -> None: ...

    def remove(self, pair: Pair, msg_ids: List[str], acked: bool = True) -> None:
        """Forget these (``acked=False``: dropped undelivered, not acked by the receiver)."""

    def close(self) -> None: ...


class PairQueue:
    __slots__ = ("bytes", "entries", "last_seq")

    def __init__(self) -> None:
        self.entries: OrderedDict[str, OutboxEntry] = OrderedDict()
        self.last_seq = 0
        self.bytes = 0


class UserUsage:
    """What one receiving user holds in the outbox: bytes (with overheads) and pairs."""

    __slots__ = ("bytes", "platforms")

    def __init__(self) -> None:
        self.bytes = 0
        self.platforms: Set[str] = set()


class Outbox:
    """Per-pair ordered queues with global bounds."""

    def __init__(
        self, *, max_per_pair: int = DEFAULT_OUTBOX.max_per_pair,
        max_bytes: int = DEFAULT_OUTBOX.max_bytes, ttl: float = DEFAULT_OUTBOX.ttl,
        store: Optional[OutboxStore] = None,
        clock: Callable[[], float] = time.time,
        max_bytes_per_user: Optional[int] = None, max_pairs_per_user: int = 64,
    ) -> None:
        self.max_per_pair = max_per_pair
        self.max_bytes = max_bytes
        self.max_bytes_per_user = max_bytes_per_user if max_bytes_per_user else max_bytes
        self.max_pairs_per_user = max_pairs_per_user
        self.users: Dict[str, UserUsage] = {}
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
            pair = (user, platform)
            queue = self.pairs.get(pair) or self._new_pair(pair)
            entry = OutboxEntry(seq, msg_id, payload, created)
            queue.entries[msg_id] = entry
            queue.last_seq = max(queue.last_seq, seq)
            self._seq = max(self._seq, seq)
            self._account(pair, queue, entry_cost(msg_id, payload))
            self.total_count += 1
        load_targets = getattr(store, "load_targets", None)
        if load_targets is not None:  # entries for one connection of their pair
            for (user, platform, msg_id), uuid in load_targets().items():
                held = self.pairs.get((user, platform))
                loaded = held.entries.get(msg_id) if held is not None else None
                if loaded is not None:
                    loaded.only = uuid

    # -- accounting -------------------------------------------------------------------------

    def _new_pair(self, pair: Pair) -> PairQueue:
        queue = self.pairs[pair] = PairQueue()
        usage = self.users.get(pair[0])
        if usage is None:
            usage = self.users[pair[0]] = UserUsage()
        usage.platforms.add(pair[1])
        usage.bytes += PAIR_OVERHEAD
        self.total_bytes += PAIR_OVERHEAD
        return queue

    def _drop_pair(self, pair: Pair) -> None:
        """Forget an (empty or discarded) pair queue and its overhead."""
        queue = self.pairs.pop(pair, None)
        if queue is None:
            return
        usage = self.users.get(pair[0])
        freed = queue.bytes + PAIR_OVERHEAD
        self.total_bytes -= freed
        if usage is not None:
            usage.bytes -= freed
            usage.platforms.discard(pair[1])
            if not usage.platforms:
                del self.users[pair[0]]

    def _account(self, pair: Pair, queue: PairQueue, size: int) -> UserUsage:
        """Add ``size`` bytes to the pair's queue, its user and the total; the user's usage."""
        queue.bytes += size
        self.total_bytes += size
        usage = self.users[pair[0]]
        usage.bytes += size
        return usage

    def admits(self, pair: Pair) -> bool:
        """Whether a message for ``pair`` may be queued: the pair is already queued, or
        its user holds fewer than ``max_pairs_per_user`` queues (a sender naming made-up
        platforms cannot create queues without bound)."""
        if pair in self.pairs:
            return True
        usage = self.users.get(pair[0])
        return usage is None or len(usage.platforms) < self.max_pairs_per_user

    def has_room(self, pair: Pair, msg_id: str, payload: bytes) -> bool:
        """Whether ``append`` would keep this message without evicting another one (the
        client waits or refuses instead: an evicted unacked frame is lost)."""
        queue = self.pairs.get(pair)
        count = len(queue.entries) if queue is not None else 0
        size = entry_cost(msg_id, payload)
        return (count < self.max_per_pair and self.total_bytes + size <= self.max_bytes
                and self.user_bytes(pair[0]) + size <= self.max_bytes_per_user) or count == 0

    def user_bytes(self, user: str) -> int:
        usage = self.users.get(user)
        return usage.bytes if usage is not None else 0

    # -- writing ----------------------------------------------------------------------------

    def append(self, pair: Pair, msg_id: str, payload: bytes,
               only: Optional[str] = None, persist: bool = True) -> OutboxEntry:
        """Queue a message; may evict the pair's oldest entries to respect the bounds.

        ``persist=False``: the store has it already (cluster mode: another node wrote it,
        or it was read back from the store), so it is only queued here."""
        queue = self.pairs.get(pair)
        if queue is None:
            queue = self._new_pair(pair)
        seq = self._seq = self._seq + 1
        entry = OutboxEntry(seq, msg_id, payload, self._clock(), queue.last_seq, only)
        queue.last_seq = seq
        entries = queue.entries
        old = entries.pop(msg_id, None)
        if old is not None:  # the same id again (a re-sent forward): replace, count once
            self._account_removed(pair, queue, old)
        entries[msg_id] = entry
        usage = self._account(pair, queue, entry_cost(msg_id, payload))
        self.total_count += 1
        if persist and self.store is not None:
            self.store.add(pair, entry)
        if (len(entries) > self.max_per_pair or self.total_bytes > self.max_bytes
                or usage.bytes > self.max_bytes_per_user):
            self._enforce_bounds(pair, queue, keep=msg_id)
        return entry

    def ack(self, pair: Pair, msg_id: str, acked: bool = True) -> bool:
        """Forget an acked message of ``pair`` (``acked=False``: given up undelivered);
        False when unknown or already acked."""
        queue = self.pairs.get(pair)
        if queue is None:
            return False
        entry = queue.entries.pop(msg_id, None)
        if entry is None:
            return False
        self._account_removed(pair, queue, entry)
        if acked:
            self.acked += 1
        if self.store is not None:
            self.store.remove(pair, [msg_id], acked)
        if not queue.entries:
            self._drop_pair(pair)
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
            self.store.remove(pair, ids, acked=False)
        if not queue.entries:
            self._drop_pair(pair)
        return len(ids)

    def discard_pair(self, pair: Pair) -> int:
        """Forget a pair's queue without telling the store (cluster mode: the store keeps
        it for whichever node the pair connects to next). Returns how many entries."""
        queue = self.pairs.get(pair)
        if queue is None:
            return 0
        count = len(queue.entries)
        self.total_count -= count
        self._drop_pair(pair)
        return count

    def drop_larger_than(self, pair: Pair, limit: int) -> List[OutboxEntry]:
        """Drop (as evicted, from the store too) the pair's entries whose payload is over
        ``limit`` bytes: the receiving end refuses them (its message size limit), so each
        would be written again on every reconnect and hold back everything after it."""
        queue = self.pairs.get(pair)
        if queue is None:
            return []
        over = [entry for entry in queue.entries.values() if len(entry.payload) > limit]
        for entry in over:
            del queue.entries[entry.msg_id]
            self._account_removed(pair, queue, entry)
        if over:
            self.evicted += len(over)
            if self.store is not None:
                self.store.remove(pair, [entry.msg_id for entry in over])
            if not queue.entries:
                self._drop_pair(pair)
        return over

    def withdraw(self, pair: Pair, entry: OutboxEntry) -> bool:
        """Take back ``entry`` without telling the store (its write was rolled back)."""
        queue = self.pairs.get(pair)
        if queue is None or queue.entries.get(entry.msg_id) is not entry:
            return False
        del queue.entries[entry.msg_id]
        self._account_removed(pair, queue, entry)
        if not queue.entries:
            self._drop_pair(pair)
        return True

    def _account_removed(self, pair: Pair, queue: PairQueue, entry: OutboxEntry) -> None:
        size = entry_cost(entry.msg_id, entry.payload)
        queue.bytes -= size
        self.total_bytes -= size
        self.users[pair[0]].bytes -= size
        self.total_count -= 1

    def _pop_oldest(self, pair: Pair, queue: PairQueue) -> Optional[str]:
        if not queue.entries:
            return None
        msg_id, entry = queue.entries.popitem(last=False)
        self._account_removed(pair, queue, entry)
        return msg_id

    def _evict_user(self, user: str, pair: Pair, keep: str, budget: int,
                    removed: Dict[Pair, List[str]]) -> None:
        """Drop ``user``'s oldest entries (``pair`` first, then its other pairs) until the
        user holds at most ``budget`` bytes or only ``keep`` is left."""
        usage = self.users.get(user)
        if usage is None:
            return
        order = [pair] + [(user, p) for p in sorted(usage.platforms) if (user, p) != pair]
        for other_pair in order:
            other = self.pairs.get(other_pair)
            while other is not None and other.entries and usage.bytes > budget:
                if next(iter(other.entries)) == keep:
                    break
                msg_id = self._pop_oldest(other_pair, other)
                if msg_id is not None:
                    removed.setdefault(other_pair, []).append(msg_id)
            if usage.bytes <= budget:
                break

    def _enforce_bounds(self, pair: Pair, queue: PairQueue, keep: str) -> None:
        removed: Dict[Pair, List[str]] = {}
        while len(queue.entries) > self.max_per_pair:
            msg_id = self._pop_oldest(pair, queue)
            if msg_id is None:
                break
            removed.setdefault(pair, []).append(msg_id)
        user = pair[0]
        # Over the user's budget: only this user's messages make room.
        self._evict_user(user, pair, keep, self.max_bytes_per_user, removed)
        # Over the global budget: the users holding the most give way first, so one
        # flooding user evicts its own queue, not everybody else's.
        if self.total_bytes > self.max_bytes:
            for victim in sorted(self.users, key=lambda u: self.users[u].bytes, reverse=True):
                excess = self.total_bytes - self.max_bytes
                usage = self.users.get(victim)
                if excess <= 0:
                    break
                if usage is not None:
                    self._evict_user(victim, pair if victim == user else (victim, ""), keep,
                                     max(0, usage.bytes - excess), removed)
        for p, ids in removed.items():
            self.evicted += len(ids)
            if self.store is not None:
                self.store.remove(p, ids)
            queue_p = self.pairs.get(p)
            if queue_p is not None and not queue_p.entries and p != pair:
                self._drop_pair(p)

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
                self._drop_pair(pair)
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

    @property
    def last_assigned_seq(self) -> int:
        """The highest sequence number given to any entry so far."""
        return self._seq

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
            "outbox_pairs": len(self.pairs), "outbox_users": len(self.users),
            "acked": self.acked,
            "evicted": self.evicted, "expired": self.expired,
        }

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
