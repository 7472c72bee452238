"""One batch of sends to one Redis shard, as one ``SEND_BATCH`` script call (no I/O).

Sends made during a batch (every handler that ran in the last loop turns) are grouped
per pair: a pair's messages become ONE stream entry (one XADD) plus one PEXPIRE and one
routing read; acks of the batch ride along (one XDEL per pair); each other node holding
any of the pairs then gets one PUBLISH from the node. Handled frames' marks
(``frame_dedupe``) ride in the same call, so a mark and its handler's send are written
atomically.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Tuple

from .cluster_base import Pair
from .pubsub_io import SendResult
from .pubsub_messages import PairMessage
from .redis_keys import Keys

if TYPE_CHECKING:
    from ..server.acks import Receipt

MAX_TURN = 400  # messages or marks per script call (Lua's unpack() stack stays small)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SendTurn:
    """The sends, frame marks and acked-entry deletes of one batch to one shard.

    Only the sends someone awaits get a future (``waiters``); a send whose frame's ack
    waits for the store instead gives its receipt (``receipts``: their ``failure`` is set
    when the call fails, before the shard queue's completion future resolves)."""

    __slots__ = ("delete_groups", "deletes", "groups", "marks", "receipts", "size",
                 "stored", "waiters")

    def __init__(self) -> None:
        self.groups: Dict[Pair, List[PairMessage]] = {}
        self.stored: Dict[Pair, str] = {}  # "1": the pair's messages go to its stream
        self.waiters: List[Tuple[Pair, asyncio.Future[SendResult]]] = []
        self.receipts: List[Receipt] = []
        self.marks: List[str] = []
        self.deletes: List[Any] = []  # flat: stream, index, idle, count, ids... per group
        self.delete_groups = 0
        self.size = 0

    @property
    def full(self) -> bool:
        return self.size >= MAX_TURN or len(self.marks) >= MAX_TURN

    @property
    def empty(self) -> bool:
        return not self.groups and not self.marks and not self.delete_groups

    def delete(self, stream: str, index: str, idle: bool, stream_ids: List[str]) -> None:
        """Acked entries to delete in this call (before its appends)."""
        self.deletes += [stream, index, "1" if idle else "0", len(stream_ids), *stream_ids]
        self.delete_groups += 1
        self.size += len(stream_ids)

    def add(self, message: PairMessage, persist: bool) -> None:
        """One send; a turn's sends all have the same ``persist`` (the outbox is on)."""
        group = self.groups.get(message.pair)
        if group is None:
            group = self.groups[message.pair] = []
            self.stored[message.pair] = "1" if persist else "0"
        group.append(message)
        self.size += 1

    def args(self, keys: Keys, max_entries: str, ttl_ms: str, dedupe_set: str,
             dedupe_ttl_ms: int, origin: str) -> Tuple[Any, ...]:
        """The EVALSHA arguments (``("EVALSHA", "send", 0, ARGV...)``); ``origin`` is this
        node (the script answers with the pairs' connections on other nodes only)."""
        out: List[Any] = ["EVALSHA", "send", 0, max_entries, ttl_ms, dedupe_set,
                          dedupe_ttl_ms, origin, len(self.marks), *self.marks,
                          self.delete_groups,
                          *self.deletes]
        for pair, sends in self.groups.items():
            stream, _index, where = keys.pair_keys(pair)
            out += [stream, where, self.stored[pair], len(sends)]
            for message in sends:
                out += [message.msg_id, message.payload]
        return tuple(out)

    def resolve(self, reply: List[Any],
                stored: Callable[[Pair, List[str], str], None],
                routed: Callable[[Pair, List[Tuple[str, str]]], None],
                ) -> Dict[str, List[Tuple[Pair, List[PairMessage], str]]]:
        """Give every send its stream id (one per pair: its messages share an entry) and
        the pair's (uuid, node) entries elsewhere; ``stored(pair, msg_ids, sid)`` is told
        first, synchronously, so no ack can see part of an entry; ``routed(pair, remote)``
        next. Returns what each other node holding one of the pairs must be sent (one
        "pairs" message per node: :func:`~.pubsub_messages.encode_pair_groups`)."""
        publish: Dict[str, List[Tuple[Pair, List[PairMessage], str]]] = {}
        results: Dict[Pair, SendResult] = {}
        for n, (pair, sends) in enumerate(self.groups.items()):
            sid = _text(reply[2 * n])
            flat = reply[2 * n + 1]
            # the script left out the origin's own connections (usually all of them)
            remote = [(_text(flat[i]), _text(flat[i + 1])) for i in range(0, len(flat) - 1, 2)
                      ] if flat else []
            if sid:
                stored(pair, [m.msg_id for m in sends], sid)
            routed(pair, remote)
            results[pair] = (sid, remote)
            for node in {node for _uuid, node in remote}:
                publish.setdefault(node, []).append((pair, sends, sid))
        for pair, fut in self.waiters:
            if not fut.done():
                fut.set_result(results[pair])
        return publish

    def fail(self, exc: BaseException) -> None:
        for receipt in self.receipts:
            if receipt.failure is None:
                receipt.failure = exc
        for _pair, fut in self.waiters:
            if not fut.done():
                fut.set_exception(exc)
