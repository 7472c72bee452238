"""What hub nodes tell each other over a pub/sub channel: four named message types.

Encoding (sans-I/O): a JSON object with a ``type`` field, then ``\\n`` and the raw payload
(the encoded envelope) when there is one. The Redis scripts build the same objects with
``cjson`` (``redis_keys.py``), so these decoders read what Lua wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import orjson

from .cluster_base import Pair, Selector


class PairMessage(NamedTuple):
    """A message for one (user, platform), sent to the nodes holding that pair (a tuple:
    one is built per message sent, so it must be cheap)."""

    origin: str  # the sending node (it delivered its own connections already)
    user: str
    platform: str
    msg_id: str
    stream_id: str  # its id in the pair's stream ("" when not stored)
    payload: bytes
    notify: bool = False  # the origin waits for the ack (send_message(ack_timeout=...))

    @property
    def pair(self) -> Pair:
        return (self.user, self.platform)


@dataclass(frozen=True)
class FanoutMessage:
    """A message for the connections a selector names, on every node."""

    origin: str
    selector: Selector
    msg_id: str
    payload: bytes
    log_id: str = ""  # its entry in the fan-out log (set by the Redis script; "": none)


@dataclass(frozen=True)
class AckMessage:
    """A connection on ``node`` acked ``msg_id``: for the origin waiting on that ack."""

    node: str
    user: str
    platform: str
    msg_id: str
    uuid: str

    @property
    def pair(self) -> Pair:
        return (self.user, self.platform)


@dataclass(frozen=True)
class AcksMessage:
    """Acks of messages of a pair whose origin is not known here (read from the pair's
    stream after a takeover): sent to every node, so that an origin waiting in
    ``send_message(ack_timeout=...)`` hears of them. Decoded as one AckMessage each."""

    node: str
    user: str
    platform: str
    msg_ids: Tuple[str, ...]
    uuid: str


@dataclass(frozen=True)
class AdminMessage:
    """An admin-plane action for every node (revoke a key, disconnect, reload): each
    node applies it to its own connections and key table. ``args`` carry no secret (a
    key travels as its SHA-256, as ``key_sha256`` does in the config)."""

    origin: str
    action: str
    args: Dict[str, str]


ClusterMessage = Union[PairMessage, FanoutMessage, AckMessage, AdminMessage]

PAIR, FANOUT, ACK, ACKS, PAIRS, ADMIN = "pair", "fanout", "ack", "acks", "pairs", "admin"


def encode_message(message: Union[ClusterMessage, AcksMessage]) -> bytes:
    head: Dict[str, Any]
    payload = b""
    if isinstance(message, PairMessage):
        head = {"type": PAIR, "origin": message.origin, "user": message.user,
                "platform": message.platform, "msg_id": message.msg_id,
                "stream_id": message.stream_id}
        payload = message.payload
    elif isinstance(message, FanoutMessage):
        head = {"type": FANOUT, "origin": message.origin, "kind": message.selector.kind,
                "value": message.selector.value, "msg_id": message.msg_id}
        if message.log_id:
            head["log"] = message.log_id
        payload = message.payload
    elif isinstance(message, AcksMessage):
        head = {"type": ACKS, "node": message.node, "user": message.user,
                "platform": message.platform, "msg_ids": list(message.msg_ids),
                "uuid": message.uuid}
    elif isinstance(message, AdminMessage):
        head = {"type": ADMIN, "origin": message.origin, "action": message.action,
                "args": message.args}
    else:
        head = {"type": ACK, "node": message.node, "user": message.user,
                "platform": message.platform, "msg_id": message.msg_id,
                "uuid": message.uuid}
    data = orjson.dumps(head)
    return data + b"\n" + payload if payload else data


def pairs_head(origin: str) -> bytes:
    """The start of a ``pairs`` batch's first line (the group count and ``}`` follow)."""
    return b'{"type":"pairs","origin":' + orjson.dumps(origin) + b',"groups":'


def pairs_group_head(user: str, platform: str, items: List[Tuple[str, int, int]]) -> bytes:
    """One pair's line in a ``pairs`` batch: ``[user, platform, [[msg_id, length,
    notify], ...]]`` (its stream ids follow on the next line, joined by spaces)."""
    return orjson.dumps([user, platform, items])


def encode_pairs(origin: str, messages: List[PairMessage]) -> bytes:
    """Pair messages from one origin as one channel message (one PUBLISH per node per
    batch): a head line with the group count, then two lines per pair (its
    :func:`pairs_group_head` and its stream ids, or the one id of the entry holding
    them all), then the payloads back to back."""
    groups: Dict[Tuple[str, str], List[PairMessage]] = {}
    for m in messages:
        groups.setdefault((m.user, m.platform), []).append(m)
    lines = [pairs_head(origin) + b"%d}" % len(groups)]
    for (user, platform), group in groups.items():
        lines.append(pairs_group_head(user, platform, [
            (m.msg_id, len(m.payload), 1 if m.notify else 0) for m in group]))
        lines.append(" ".join(m.stream_id for m in group).encode())
    return b"\n".join(lines) + b"\n" + b"".join(
        m.payload for group in groups.values() for m in group)


def encode_pair_groups(origin: str, groups: List[Tuple[Pair, List[PairMessage], str]]
                       ) -> bytes:
    """As :func:`encode_pairs`, for messages already grouped per pair whose group shares
    one stream entry (``stream_id`` of the group, not of each message): a send batch's
    form, without re-grouping or copying the messages."""
    lines = [pairs_head(origin) + b"%d}" % len(groups)]
    payloads: List[bytes] = []
    for (user, platform), sends, sid in groups:
        lines.append(pairs_group_head(user, platform, [
            (m.msg_id, len(m.payload), 1 if m.notify else 0) for m in sends]))
        lines.append(sid.encode())
        payloads += [m.payload for m in sends]
    return b"\n".join(lines) + b"\n" + b"".join(payloads)


class PairGroup(NamedTuple):
    """One pair's messages in a ``pairs`` batch, as read (decoded per pair, not per
    message: a node handles them as a run)."""

    origin: str
    user: str
    platform: str
    stream_ids: List[str]  # one id: the entry holding them all; else one per message
    items: List[Tuple[str, bytes, bool]]  # (msg_id, payload, notify)

    def messages(self) -> List[PairMessage]:
        ids = self.stream_ids * len(self.items) if len(self.stream_ids) == 1 else self.stream_ids
        return [PairMessage(self.origin, self.user, self.platform, msg_id, sid, payload,
                            notify) for (msg_id, payload, notify), sid in zip(self.items, ids)]


def decode_batch(data: bytes) -> List[ClusterMessage]:
    """A channel message as the list of messages it carries (one, or a ``pairs`` batch)."""
    groups = decode_groups(data)
    if groups is None:
        if data.startswith(b'{"type":"acks"'):
            return _decode_acks(data)
        return [decode_message(data)]
    return [message for group in groups for message in group.messages()]


def decode_groups(data: bytes) -> Optional[List[PairGroup]]:
    """A ``pairs`` batch per pair (None: the channel message is not one)."""
    if not data.startswith(b'{"type":"pairs"'):
        return None
    first, _, rest = data.partition(b"\n")
    head = orjson.loads(first)
    origin, count = head["origin"], int(head["groups"])
    parts = rest.split(b"\n", 2 * count)
    if len(parts) != 2 * count + 1:
        raise ValueError("pairs batch shorter than its header says")
    body = parts[-1]
    size = len(body)
    groups: List[PairGroup] = []
    new = tuple.__new__  # the NamedTuple's generated __new__ is a Python call
    at = 0
    for g in range(count):
        user, platform, items = orjson.loads(parts[2 * g])
        ids = parts[2 * g + 1].decode().split(" ")
        if len(ids) != 1 and len(ids) != len(items):
            raise ValueError("pairs batch: stream ids do not match the items")
        messages: List[Tuple[str, bytes, bool]] = []
        for msg_id, length, notify in items:
            end = at + int(length)
            if end > size:
                raise ValueError("pairs batch shorter than its header says")
            messages.append((msg_id, body[at:end], bool(notify)))
            at = end
        groups.append(new(PairGroup, (origin, user, platform, ids, messages)))
    return groups


def _decode_acks(data: bytes) -> List[ClusterMessage]:
    head = orjson.loads(data)
    ids = head["msg_ids"]
    if type(ids) is not list:
        raise ValueError("acks: msg_ids must be a list")
    node, user, platform, uuid = head["node"], head["user"], head["platform"], head["uuid"]
    return [AckMessage(node, user, platform, str(m), uuid) for m in ids]


def decode_message(data: bytes) -> ClusterMessage:
    """Raises ValueError (or KeyError) on a message that is not one of the four."""
    head_raw, _, payload = data.partition(b"\n")
    head = orjson.loads(head_raw)
    if type(head) is not dict:
        raise ValueError("cluster message header is not an object")
    kind = head.get("type")
    if kind == PAIR:
        return PairMessage(head["origin"], head["user"], head["platform"], head["msg_id"],
                           head.get("stream_id") or "", payload)
    if kind == FANOUT:
        return FanoutMessage(head["origin"], Selector(head["kind"], head.get("value")),
                             head["msg_id"], payload, str(head.get("log") or ""))
    if kind == ACK:
        return AckMessage(head["node"], head["user"], head["platform"], head["msg_id"],
                          head["uuid"])
    if kind == ADMIN:
        args = head["args"]
        if type(args) is not dict or not all(type(v) is str for v in args.values()):
            raise ValueError("admin message args must be an object of strings")
        return AdminMessage(str(head["origin"]), str(head["action"]), args)
    raise ValueError(f"unknown cluster message type {kind!r}")
