"""One batch of sends to one Redis shard, as one MULTI ... EXEC transaction (no I/O).

Sends made during a batch (every handler that ran in the last loop turns) are grouped
per pair: a pair's messages become ONE stream entry (one XADD) plus one PEXPIRE and one
routing read (HGETALL of where it is connected); acks of the batch ride along (one XDEL
per pair, after the transaction, not in it); each other node holding any of the pairs
then gets one PUBLISH from the node.
Handled frames' marks (``frame_dedupe``) ride in the same transaction, so a mark and its
handler's send are written atomically.

Plain commands, not a script: a script's arguments are copied into Lua and out again for
every command it calls, which cost Redis about 1 us per message (msg_id, payload, mark,
acked id); a transaction's commands take their arguments straight from the request. The
one conditional step (drop an idle pair's keys once its stream is empty) is a small
script call after the transaction, with no per-message arguments.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Tuple

from ..errors import ClusterError
from .cluster_base import Pair
from .frame_dedupe import HANDLED
from .pubsub_io import SendResult
from .pubsub_messages import PairMessage
from .redis_keys import Keys
from .resp_pack import Packed, bulk, command_head
from .resp_reader import reply_text as _text

if TYPE_CHECKING:
    from ..server.acks import Receipt

MAX_TURN = 400  # messages or marks per transaction (bounded request and reply sizes)

_PEXPIRE = command_head(3, b"PEXPIRE")
_HGETALL = command_head(2, b"HGETALL")


class SendTurn:
    """The sends, frame marks and acked-entry deletes of one batch to one shard.

    Only the sends someone awaits get a future (``waiters``); a send whose frame's ack
    waits for the store instead gives its receipt (``receipts``: their ``failure`` is set
    when the call fails, before the shard queue's completion future resolves)."""

    __slots__ = ("_replies", "deletes", "groups", "marks", "receipts", "size", "stored",
                 "waiters")

    def __init__(self) -> None:
        self.groups: Dict[Pair, List[PairMessage]] = {}
        self.stored: Dict[Pair, bool] = {}  # True: the pair's messages go to its stream
        self.waiters: List[Tuple[Pair, asyncio.Future[SendResult]]] = []
        self.receipts: List[Receipt] = []
        self.marks: List[str] = []  # flat: frame token, its record value (HANDLED...), ...
        self.deletes: List[Tuple[str, str, bool, List[str]]] = []  # stream, index, idle, ids
        self._replies: List[Tuple[int, int]] = []
        self.size = 0

    @property
    def empty(self) -> bool:
        return not self.groups and not self.marks and not self.deletes

    def mark(self, token: str, value: str = HANDLED) -> None:
        """Record a frame (``value``: HANDLED, or STARTED + node while its handler runs)."""
        self.marks += (token, value)

    def delete(self, stream: str, index: str, idle: bool, stream_ids: List[str]) -> None:
        """Acked entries to delete in this call (before its appends)."""
        self.deletes.append((stream, index, idle, stream_ids))
        self.size += len(stream_ids)

    def add(self, pair: Pair, message: PairMessage, persist: bool) -> None:
        """One send to ``pair`` (``message.pair``); a turn's sends all have the same
        ``persist`` (the outbox is on)."""
        if message.payload.__class__ is not bytes:  # (encoded in one step by commands())
            message = message._replace(payload=bytes(message.payload))  # TypeError: a str
        group = self.groups.get(pair)
        if group is None:
            group = self.groups[pair] = []
            self.stored[pair] = persist
        group.append(message)
        self.size += 1

    def commands(self, keys: Keys, max_entries: str, ttl_ms: str, dedupe_set: str,
                 dedupe_ttl_ms: int) -> List[Tuple[Any, ...]]:
        """The queue items of this batch: ``("MULTI", Packed)`` (the queue writes MULTI,
        the commands, EXEC; first, when there are sends or marks), the acked entries'
        deletes, and, when some acked pair is idle, the script call that drops its keys
        once its stream is empty. :meth:`resolve` reads EXEC's reply. The deletes are plain
        commands outside the transaction: a Redis out of memory refuses the whole
        transaction, but still takes a delete, which frees memory (inside it they were
        refused with it and lost, the acked entries staying until the stream expired).

        The transaction's commands are encoded here (``Packed``), a message's id and
        payload in one step: the generic packer's loop over every argument cost more
        than the rest of the batch's node-side work per message."""
        body: List[bytes] = []
        count = 0
        marks = self.marks
        if marks:
            body.append(command_head(2 + len(marks), b"HSET") + bulk(dedupe_set.encode()))
            values: Dict[str, bytes] = {}
            for n in range(0, len(marks), 2):
                value = values.get(marks[n + 1])
                if value is None:
                    value = values[marks[n + 1]] = bulk(marks[n + 1].encode())
                token = marks[n].encode()
                body.append(b"$%d\r\n%b\r\n%b" % (len(token), token, value))
            body.append(_PEXPIRE + bulk(dedupe_set.encode()) + bulk(b"%d" % dedupe_ttl_ms))
            count += 2
        deletes: List[Tuple[Any, ...]] = []
        idle: List[str] = []
        for stream, index, is_idle, stream_ids in self.deletes:
            if stream_ids:
                deletes.append(("XDEL", stream, *stream_ids))
            if is_idle:
                idle += (stream, index)
        at = self._replies = []  # per pair: (index of its XADD reply or -1, of HGETALL's)
        trim = (bulk(b"MAXLEN") + bulk(b"~") + bulk(max_entries.encode()) + bulk(b"*"))
        expire = bulk(ttl_ms.encode())
        for pair, sends in self.groups.items():
            packed_stream, packed_where = keys.packed(pair)
            sid_at = -1
            if self.stored[pair]:
                body.append(command_head(6 + 2 * len(sends), b"XADD") + packed_stream + trim)
                for message in sends:
                    msg_id = message.msg_id.encode()
                    payload = message.payload
                    body.append(b"$%d\r\n%b\r\n$%d\r\n%b\r\n"
                                % (len(msg_id), msg_id, len(payload), payload))
                sid_at = count
                body.append(_PEXPIRE + packed_stream + expire)
                count += 2
            at.append((sid_at, count))
            body.append(_HGETALL + packed_where)
            count += 1
        items: List[Tuple[Any, ...]] = [("MULTI", Packed(b"".join(body), count))] if count else []
        items += deletes
        if idle:
            items.append(("EVALSHA", "drop_empty", 0, *idle))
        return items

    def resolve(self, reply: List[Any], origin: bytes,
                stored: Callable[[Pair, List[str], str], None],
                routed: Callable[[Pair, List[Tuple[str, str]], int], None],
                ) -> Dict[str, List[Tuple[Pair, List[PairMessage], str]]]:
        """Give every send its stream id (one per pair: its messages share an entry) and
        the pair's (uuid, node) entries on nodes other than ``origin`` (this node);
        ``stored(pair, msg_ids, sid)`` is told first, synchronously, so no ack can see
        part of an entry; ``routed(pair, remote, stored)`` next. Returns what each other node
        holding one of the pairs must be sent (one "pairs" message per node:
        :func:`~.pubsub_messages.encode_pair_groups`). ``reply`` is EXEC's; a command
        that failed inside it (a key of the wrong type: someone else's key) fails the
        batch with :class:`ClusterError`."""
        for item in reply:
            if isinstance(item, Exception):
                raise ClusterError(f"Redis refused a command of the send batch: {item}")
        publish: Dict[str, List[Tuple[Pair, List[PairMessage], str]]] = {}
        results: Dict[Pair, SendResult] = {}
        for (sid_at, where_at), (pair, sends) in zip(self._replies, self.groups.items()):
            sid = _text(reply[sid_at]) if sid_at >= 0 else ""
            flat = reply[where_at]
            # where the pair is connected, but for this node's own (usually all of them)
            remote = [(_text(flat[i]), _text(flat[i + 1])) for i in range(0, len(flat) - 1, 2)
                      if flat[i + 1] != origin] if flat else []
            if sid:
                stored(pair, [m.msg_id for m in sends], sid)
            routed(pair, remote, len(sends) if sid else 0)
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
