"""Where each unacked message of the pairs held here sits in its pair's stream (no I/O).

An ack then deletes the stream entry by id (``XDEL``, batched per pair) instead of
looking the id up in Redis by msg_id; an entry holds all messages one node sent to the
pair in one batch, and goes once all of them are acked. Messages a node sends to its own
connections are delivered before Redis has answered with their entry: they are
``PENDING`` until the answer arrives, and an ack that arrives first marks them ``ACKED``
so the answer deletes them at once.

Messages acked here whose entry still holds unacked ones stay in the stream: they are
remembered (by entry) until the entry is deleted, so a re-read of the stream (a node died,
the channel reconnected) does not deliver them again.

A pair whose last connection here closes is forgotten, but for messages still waiting
for Redis's answer: a receiver that acks a message and leaves at once (``tail --count 1``)
acked it before its entry was known, and the answer must still delete it, or its next
connection gets it again.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Set, Tuple, Union

from .cluster_base import Pair

PENDING = "pending"
ACKED = "acked"
DELETED = "deleted"  # acked before its pair left here; its entry's delete is queued
# origin of a message read from its pair's stream (after a takeover): whoever may wait
# for its ack is not known here, so its ack goes to every node
ANY_ORIGIN = "*"
MAX_RELEASED = 10_000  # forgotten pairs whose acked messages wait for their entry

# once known: the stream id, or (stream id, origin awaiting the ack) when one waits (a
# tuple per unacked message would outlive many allocations: garbage-collector passes);
# before: PENDING / ACKED (never a stream id: those are "<ms>-<seq>")
_Entry = Union[Tuple[str, str], str]


class Acked:
    """What one batch of acks of a pair turns into."""

    __slots__ = ("by_msg_id", "notify", "sids")

    def __init__(self) -> None:
        self.sids: List[str] = []  # delete these stream entries
        self.by_msg_id: List[str] = []  # id unknown here: delete through the index
        self.notify: List[Tuple[str, str]] = []  # (origin, msg_id): tell the waiting origin


class StreamIds:
    """Per held pair: msg_id -> stream entry, and how many messages of each entry are
    still unacked here (an entry holds a turn's messages for the pair; it is deleted once
    all of them are acked)."""

    __slots__ = ("_done", "_left", "_pairs", "_released")

    def __init__(self) -> None:
        self._pairs: Dict[Pair, Dict[str, _Entry]] = {}
        # pairs forgotten while messages waited for their entry: pair -> msg_id -> state
        self._released: Dict[Pair, Dict[str, str]] = {}
        self._left: Dict[Pair, Dict[str, int]] = {}
        # acked messages of entries not deleted yet: pair -> stream id -> msg_ids
        self._done: Dict[Pair, Dict[str, Set[str]]] = {}

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._pairs.values())

    def _count(self, pair: Pair, sid: str) -> None:
        left = self._left.get(pair)
        if left is None:
            left = self._left[pair] = {}
        left[sid] = left.get(sid, 0) + 1

    def pending(self, pair: Pair, msg_id: str) -> None:
        self._pairs.setdefault(pair, {})[msg_id] = PENDING

    def known(self, pair: Pair, msg_id: str, sid: str, origin: Optional[str] = None) -> None:
        """A message of the pair read from its stream or received from another node
        (``origin``: the node its ack goes to, if one waits)."""
        self.known_entry(pair, ((msg_id, None, origin is not None),), sid, origin or "")

    def known_entry(self, pair: Pair, items: Iterable[Tuple[str, Any, bool]], sid: str,
                    origin: str) -> None:
        """:meth:`known` for messages of one entry received from ``origin`` (``items``:
        (msg_id, payload, notify): a notify one's ack goes to ``origin``), counted once."""
        if not sid:
            return
        ids = self._pairs.get(pair)
        if ids is None:
            ids = self._pairs[pair] = {}
        added = 0
        try:
            for msg_id, _payload, notify in items:
                if msg_id not in ids:
                    ids[msg_id] = (sid, origin) if notify else sid
                    added += 1
        finally:  # (a bad item part-way: the ones known so far are counted)
            if added:
                left = self._left.get(pair)
                if left is None:
                    left = self._left[pair] = {}
                left[sid] = left.get(sid, 0) + added

    def stored(self, pair: Pair, msg_ids: List[str], sid: str) -> List[str]:
        """Redis answered with the entry of PENDING messages; returns those acked
        meanwhile (the caller acks them again, now that their entry is known)."""
        ids = self._pairs.get(pair)
        again: List[str] = []
        if ids is None:
            return again  # the pair left this node: its stream keeps the messages
        for msg_id in msg_ids:
            state = ids.get(msg_id)
            if state == PENDING or state == ACKED:
                ids[msg_id] = sid
                self._count(pair, sid)
                if state == ACKED:
                    again.append(msg_id)
        return again

    def acked(self, pair: Pair, msg_ids: List[str]) -> Acked:
        out = Acked()
        ids = self._pairs.get(pair, {})
        left = self._left.get(pair, {})
        done = self._done.get(pair)
        for msg_id in msg_ids:
            state = ids.get(msg_id)
            if state is None:
                out.by_msg_id.append(msg_id)
            elif state == PENDING:
                ids[msg_id] = ACKED
            elif state == ACKED:
                continue  # acked again before the store answered: still no entry to drop
            else:
                del ids[msg_id]
                sid = state if isinstance(state, str) else state[0]
                n = left.get(sid, 1) - 1
                if n <= 0:
                    left.pop(sid, None)
                    out.sids.append(sid)  # every message of the entry is acked
                    if done is not None:
                        done.pop(sid, None)
                else:
                    left[sid] = n
                    if done is None:
                        done = self._done[pair] = {}
                    acked = done.get(sid)
                    if acked is None:
                        done[sid] = {msg_id}
                    else:
                        acked.add(msg_id)
                if isinstance(state, tuple):
                    out.notify.append((state[1], msg_id))
        if done is not None and not done:
            del self._done[pair]
        return out

    def has(self, pair: Pair, msg_id: str) -> bool:
        """The message is known here (delivered, unacked or its ack not yet applied)."""
        ids = self._pairs.get(pair)
        return ids is not None and msg_id in ids

    def was_acked(self, pair: Pair, sid: str, msg_id: str) -> bool:
        """Acked here, in entry ``sid`` that other messages still keep in the stream."""
        done = self._done.get(pair)
        if done is None:
            return False
        acked = done.get(sid)
        return acked is not None and msg_id in acked

    def idle(self, pair: Pair) -> bool:
        """Nothing of the pair is unacked here (its stream may now be empty)."""
        return not self._pairs.get(pair)

    def forget(self, pair: Pair) -> None:
        """The pair's last connection here closed: what it acked while its entry was not
        known yet is kept for Redis's answer (:meth:`acked_while_away`)."""
        ids = self._pairs.pop(pair, None)
        self._left.pop(pair, None)
        self._done.pop(pair, None)
        if ids:
            waiting = {m: s for m, s in ids.items() if s == PENDING or s == ACKED}
            if ACKED in waiting.values():
                released = self._released.get(pair)
                if released is not None:  # it left here before, answers still due
                    released.update(waiting)
                    return
                while len(self._released) >= MAX_RELEASED:  # bounded: the oldest go
                    del self._released[next(iter(self._released))]
                self._released[pair] = waiting

    def acked_while_away(self, pair: Pair, msg_ids: List[str]) -> bool:
        """Redis answered with the entry of ``msg_ids``, sent to a pair forgotten here
        meanwhile: True when all of them were acked (delete the entry; if one was not,
        it stays for the pair's next connection). The acked ones are remembered, as
        ``DELETED`` or ``ACKED``, for a read of the stream here that was queued before
        the delete (:meth:`acked_before_leaving`)."""
        if not self._released:
            return False
        waiting = self._released.get(pair)
        if waiting is None:
            return False
        states = [waiting.get(msg_id) for msg_id in msg_ids]
        whole = all(state == ACKED for state in states)
        for msg_id, state in zip(msg_ids, states):
            if state == PENDING:
                del waiting[msg_id]  # unacked: in the stream for the pair's next connection
            elif whole:
                waiting[msg_id] = DELETED
        if not waiting:
            del self._released[pair]
        return whole

    def acked_before_leaving(self, pair: Pair) -> Set[str]:
        """The pair is back here and its stream was read: the messages its last
        connection acked before their entry was known (the read may still hold them:
        their delete was queued after it). Forgotten once asked."""
        waiting = self._released.pop(pair, None) if self._released else None
        return {m for m, state in waiting.items() if state != PENDING} if waiting else set()

    def acked_in_entry(self, pair: Pair, sid: str, msg_id: str) -> None:
        """``msg_id`` of entry ``sid`` was acked here (a read skipped it): a re-read of
        the stream leaves it out too (:meth:`was_acked`) until the entry is deleted."""
        done = self._done.get(pair)
        if done is None:
            done = self._done[pair] = {}
        done.setdefault(sid, set()).add(msg_id)

    def clear(self) -> None:
        self._pairs.clear()
        self._left.clear()
        self._done.clear()
        self._released.clear()
