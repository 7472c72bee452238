"""Building envelopes: message ids, sys_std / sys_ack / custom frames, custom type names.

Shapes follow wire-protocol.md §1.4-1.5 so that 0.6.8 peers read them unchanged.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, Dict, Optional

from .codec import CUSTOM_PREFIX, SYS_ACK, SYS_STD, dumps

_SYS_PREFIX = "sys_"


class MessageIdFactory:
    """Unique, cheap message ids: ``<prefix><12 random hex>_<counter>``.

    0.6.8 uses ``msg_<12hex>_<epoch s>``; receivers never parse ids, so a per-process random
    part plus a counter keeps them unique without a uuid4 per message.
    """

    __slots__ = ("_counter", "_stem")

    def __init__(self) -> None:
        self._stem = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def new(self, prefix: str = "msg_") -> str:
        return f"{prefix}{self._stem}_{next(self._counter)}"


def normalize_custom_type(message_type: str) -> str:
    """The wire type of a custom message: ``custom_<name>`` (0.6.8 clients need the prefix).

    A name that already starts with ``custom_`` or ``sys_`` is kept as is.
    """
    if message_type.startswith(CUSTOM_PREFIX) or message_type.startswith(_SYS_PREFIX):
        return message_type
    return CUSTOM_PREFIX + message_type


def custom_handler_keys(wire_type: str) -> tuple[str, ...]:
    """Registry keys to try for an incoming custom type, most specific first."""
    if wire_type.startswith(CUSTOM_PREFIX):
        return (wire_type, wire_type[len(CUSTOM_PREFIX):])
    return (CUSTOM_PREFIX + wire_type, wire_type)


def std_envelope(msg_id: str, payload: Dict[str, Any], meta: Dict[str, Any]) -> Dict[str, Any]:
    return {"ver": 1, "msg_id": msg_id, "type": SYS_STD, "meta": meta, "payload": payload}


def custom_envelope(
    msg_id: str, wire_type: str, payload: Any, meta: Dict[str, Any]
) -> Dict[str, Any]:
    return {"ver": 1, "msg_id": msg_id, "type": wire_type, "meta": meta, "payload": payload}


def _ack_envelope(ack_id: str, connection_uuid: str, acked_msg_id: str, now: float,
                  stamp_key: str) -> Dict[str, Any]:
    """The one definition of a sys_ack's shape (:func:`encode_ack`, :class:`AckEncoder`)."""
    return {
        "ver": 1,
        "msg_id": ack_id,
        "type": SYS_ACK,
        "meta": {"uuid": connection_uuid, "acked_msg_id": acked_msg_id, "timestamp": now},
        "payload": {"status": "received", stamp_key: now},
    }


def encode_ack(
    ack_id: str, connection_uuid: str, acked_msg_id: str, *, from_server: bool
) -> bytes:
    """One sys_ack frame (``server_timestamp`` from servers, ``client_timestamp`` from clients)."""
    stamp_key = "server_timestamp" if from_server else "client_timestamp"
    return dumps(_ack_envelope(ack_id, connection_uuid, acked_msg_id, time.time(), stamp_key))


class AckEncoder:
    """A server's sys_ack frames from a template per connection, the bytes
    :func:`encode_ack` gives (ids ``ack_<12 hex>_<counter>``), at half its cost: only the
    counter, the acked id and the time are encoded per ack (an ack goes out per frame).

    The template is the encoded envelope with placeholders, so the shape stays defined
    once (:func:`_ack_envelope`); values are JSON-encoded by :func:`dumps`, so escaping is
    never done by hand.
    """

    __slots__ = ("_counter", "_skeleton")

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        probe = dumps(_ack_envelope("\x01", "\x02", "\x03", 0.5, "server_timestamp"))
        stem = os.urandom(6).hex().encode()
        self._skeleton = (
            probe.replace(b"%", b"%%")
            .replace(b'"\\u0001"', b'"ack_' + stem + b'_%d"')
            .replace(b'"\\u0003"', b"%s")
            .replace(b"0.5", b"%s")
        )
        if self._skeleton.count(b'"\\u0002"') != 1:  # pragma: no cover - a codec change
            raise RuntimeError("unexpected sys_ack encoding")

    def template(self, connection_uuid: str) -> bytes:
        """The template of one connection's acks (keep it with the connection)."""
        return self._skeleton.replace(b'"\\u0002"', dumps(connection_uuid).replace(b"%", b"%%"))

    def encode(self, template: bytes, acked_msg_id: str) -> bytes:
        """The sys_ack of ``acked_msg_id``, from the connection's :meth:`template`."""
        now = dumps(time.time())
        return template % (next(self._counter), dumps(acked_msg_id), now, now)


def encode_error(
    reason: str, *, field: Optional[str] = None, ref_msg_id: Optional[str] = None,
    code: str = "bad_frame",
) -> bytes:
    """A ``sys_error`` frame telling a peer why its frame was refused.

    0.6.8 peers ignore unknown ``sys_*`` types, and it has no ``msg_id``, so nobody acks it.
    """
    return dumps(
        {
            "ver": 1,
            "type": "sys_error",
            "meta": {"timestamp": time.time(), "ref_msg_id": ref_msg_id},
            "payload": {"code": code, "field": field, "reason": reason},
        }
    )
