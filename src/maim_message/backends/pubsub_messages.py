"""What hub nodes tell each other over a pub/sub channel: three named message types.

Encoding (sans-I/O): a JSON object with a ``type`` field, then ``\\n`` and the raw payload
(the encoded envelope) when there is one. The Redis scripts build the same objects with
``cjson`` (``redis_keys.py``), so these decoders read what Lua wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Union

import orjson

from .cluster_base import Pair, Selector


@dataclass(frozen=True)
class PairMessage:
    """A message for one (user, platform), sent to the nodes holding that pair."""

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


ClusterMessage = Union[PairMessage, FanoutMessage, AckMessage]

PAIR, FANOUT, ACK, PAIRS = "pair", "fanout", "ack", "pairs"


def encode_message(message: ClusterMessage) -> bytes:
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
        payload = message.payload
    else:
        head = {"type": ACK, "node": message.node, "user": message.user,
                "platform": message.platform, "msg_id": message.msg_id,
                "uuid": message.uuid}
    data = orjson.dumps(head)
    return data + b"\n" + payload if payload else data


def encode_pairs(origin: str, messages: List[PairMessage]) -> bytes:
    """Many pair messages from one origin as one channel message (one PUBLISH per node
    per batch): a header listing ``[user, platform, msg_id, stream_id, length, notify]``
    per message, then the payloads back to back. The batch script builds the same."""
    items = [[m.user, m.platform, m.msg_id, m.stream_id, len(m.payload), 1 if m.notify else 0]
             for m in messages]
    head = orjson.dumps({"type": PAIRS, "origin": origin, "items": items})
    return b"".join([head, b"\n", *(m.payload for m in messages)])


def decode_batch(data: bytes) -> List[ClusterMessage]:
    """A channel message as the list of messages it carries (one, or a ``pairs`` batch)."""
    if not data.startswith(b'{"type":"pairs"'):
        return [decode_message(data)]
    head_raw, _, body = data.partition(b"\n")
    head = orjson.loads(head_raw)
    origin = head["origin"]
    out: List[ClusterMessage] = []
    at = 0
    for user, platform, msg_id, stream_id, length, notify in head["items"]:
        end = at + int(length)
        if end > len(body):
            raise ValueError("pairs batch shorter than its header says")
        out.append(PairMessage(origin, user, platform, msg_id, stream_id or "", body[at:end],
                               bool(notify)))
        at = end
    return out


def decode_message(data: bytes) -> ClusterMessage:
    """Raises ValueError (or KeyError) on a message that is not one of the three."""
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
                             head["msg_id"], payload)
    if kind == ACK:
        return AckMessage(head["node"], head["user"], head["platform"], head["msg_id"],
                          head["uuid"])
    raise ValueError(f"unknown cluster message type {kind!r}")
