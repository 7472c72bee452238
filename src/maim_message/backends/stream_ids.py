"""Where each unacked message of the pairs held here sits in its pair's stream (no I/O).

An ack then deletes the stream entry by id (``XDEL``, batched per pair) instead of
looking the id up in Redis by msg_id. Messages a node sends to its own connections are
delivered before Redis has answered with their stream id: they are ``PENDING`` until the
answer arrives, and an ack that arrives first marks them ``ACKED`` so the answer
deletes the entry at once.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

from .cluster_base import Pair

PENDING = "pending"
ACKED = "acked"

# (stream id, origin awaiting the ack or None) once known, else PENDING / ACKED
_Entry = Union[Tuple[str, Optional[str]], str]


class Acked:
    """What one batch of acks of a pair turns into."""

    __slots__ = ("by_msg_id", "notify", "sids")

    def __init__(self) -> None:
        self.sids: List[str] = []  # delete these stream entries
        self.by_msg_id: List[str] = []  # id unknown here: delete through the index
        self.notify: List[Tuple[str, str]] = []  # (origin, msg_id): tell the waiting origin


class StreamIds:
    __slots__ = ("_pairs",)

    def __init__(self) -> None:
        self._pairs: Dict[Pair, Dict[str, _Entry]] = {}

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._pairs.values())

    def pending(self, pair: Pair, msg_id: str) -> None:
        self._pairs.setdefault(pair, {})[msg_id] = PENDING

    def known(self, pair: Pair, msg_id: str, sid: str, origin: Optional[str] = None) -> None:
        if sid:
            self._pairs.setdefault(pair, {})[msg_id] = (sid, origin)

    def resolved(self, pair: Pair, msg_id: str, sid: str) -> bool:
        """Redis answered with the id of a PENDING message; True: it was acked meanwhile
        (the caller acks it again, now that its id is known)."""
        ids = self._pairs.get(pair)
        state = ids.get(msg_id) if ids is not None else None
        if ids is None or state is None:
            return False  # the pair left this node: its stream keeps the message
        if state == ACKED:
            if not sid:
                del ids[msg_id]
                return False
            ids[msg_id] = (sid, None)  # the caller acks it again: deleted with the batch
            return True
        if state == PENDING:
            if sid:
                ids[msg_id] = (sid, None)
            else:
                del ids[msg_id]
        return False

    def acked(self, pair: Pair, msg_ids: List[str]) -> Acked:
        out = Acked()
        ids = self._pairs.get(pair, {})
        for msg_id in msg_ids:
            state = ids.get(msg_id)
            if state is None:
                out.by_msg_id.append(msg_id)
            elif state == PENDING:
                ids[msg_id] = ACKED
            elif isinstance(state, tuple):
                del ids[msg_id]
                out.sids.append(state[0])
                if state[1] is not None:
                    out.notify.append((state[1], msg_id))
        return out

    def idle(self, pair: Pair) -> bool:
        """Nothing of the pair is unacked here (its stream may now be empty)."""
        return not self._pairs.get(pair)

    def forget(self, pair: Pair) -> None:
        self._pairs.pop(pair, None)

    def clear(self) -> None:
        self._pairs.clear()
