"""JSON codec for envelopes: one decode per frame, typed errors naming the bad field.

orjson is used when installed (it is a dependency); the stdlib ``json`` module is the
fallback for vendored copies that run without it.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, Union

from ..errors import EnvelopeError

#: Serialise to compact UTF-8 JSON bytes (orjson's own function: no wrapper call, it runs
#: for every ack and every message sent).
dumps: Callable[[Any], bytes]

try:  # pragma: no branch - which one is installed is a deployment fact
    import orjson as _orjson

    dumps = _orjson.dumps
    _loads: Callable[[Any], Any] = _orjson.loads
    _JSONDecodeError: type[Exception] = _orjson.JSONDecodeError
except ImportError:  # pragma: no cover - exercised only without orjson
    import json as _json

    def _stdlib_dumps(obj: Any) -> bytes:
        return _json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    dumps = _stdlib_dumps
    _loads = _json.loads
    _JSONDecodeError = ValueError


def loads(data: Union[bytes, bytearray, memoryview, str]) -> Any:
    """Parse JSON; raises :class:`EnvelopeError` (field ``None``) when it is not JSON."""
    try:
        return _loads(data)
    except (_JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise EnvelopeError(f"frame is not valid JSON: {exc}") from None


# The legacy dialect (0.6.8's MessageServer/MessageClient used the stdlib ``json``): its
# peers may send ``NaN`` and its handlers may send non-string keys or integers beyond 64
# bits. Same fast path, the stdlib only for what orjson refuses, the same error type.


def dumps_compat(obj: Any) -> bytes:
    """Compact UTF-8 JSON like :func:`dumps`, also for what only the stdlib encodes
    (integers beyond 64 bits, non-string keys; ``NaN`` and ``Infinity`` written as such,
    where orjson writes ``null``); raises ``TypeError`` for values JSON cannot represent."""
    try:
        out = dumps(obj)
    except TypeError:
        return _stdlib_dumps_compat(obj)
    if b"null" in out and _has_non_finite(obj):  # (a null is usually a None: checked)
        return _stdlib_dumps_compat(obj)
    return out


def _stdlib_dumps_compat(obj: Any) -> bytes:
    import json

    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _has_non_finite(obj: Any) -> bool:
    """A NaN or infinite float anywhere in ``obj`` (dicts, lists, tuples)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if item != item or item in (_INF, -_INF):
                return True
        elif kind is dict:
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
    return False


_INF = float("inf")
# a run of 20 digits: an integer orjson may read as a float (beyond 64 bits)
_LONG_DIGITS = re.compile(rb"\d{20}")


def loads_compat(data: Union[bytes, bytearray, memoryview, str]) -> Any:
    """Like :func:`loads`, also accepting what the stdlib reads (``NaN``, ``Infinity``) and
    keeping integers beyond 64 bits exact (orjson reads them as floats)."""
    raw = data.encode() if isinstance(data, str) else data
    if not _LONG_DIGITS.search(raw):
        try:
            return _loads(data)
        except (_JSONDecodeError, UnicodeDecodeError, TypeError):
            pass
    import json

    try:
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)
    except (ValueError, TypeError, RecursionError) as exc:
        raise EnvelopeError(f"frame is not valid JSON: {exc}") from None


# Envelope types of the API-Server wire protocol (wire-protocol.md §1.4).
SYS_STD = "sys_std"
SYS_ACK = "sys_ack"
SYS_ERROR = "sys_error"
CUSTOM_PREFIX = "custom_"

_STD_KEYS = ("message_info", "message_segment")


def decode_envelope(data: Union[bytes, bytearray, memoryview, str]) -> Dict[str, Any]:
    """Decode one text frame into a validated envelope dict.

    Accepted shapes: the envelope ``{ver, msg_id, type, meta, payload}``, and a bare
    ``{message_info, message_segment, message_dim}`` object (what external clients in the
    spec send), which becomes an implicit ``sys_std`` envelope without ``msg_id``.
    Raises :class:`EnvelopeError` with the dotted name of the first bad field.
    """
    try:  # :func:`loads` inlined: this runs once per received frame
        obj = _loads(data)
    except (_JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise EnvelopeError(f"frame is not valid JSON: {exc}") from None
    if type(obj) is dict:  # the usual envelope, checked inline (a subset of the rules below)
        kind = obj.get("type")
        msg_id = obj.get("msg_id")
        meta = obj.get("meta")
        if (type(kind) is str and (type(msg_id) is str or msg_id is None)
                and (type(meta) is dict or meta is None)):
            return obj
    return validate_envelope(obj)


def validate_envelope(obj: Any) -> Dict[str, Any]:
    """Check the envelope fields' types (not the payload's content)."""
    if type(obj) is not dict:
        raise EnvelopeError(
            f"frame must be a JSON object, got {type(obj).__name__}", field="$"
        )
    kind = obj.get("type")
    if kind is None:
        if "message_info" in obj and "message_segment" in obj:
            return {"ver": 1, "msg_id": None, "type": SYS_STD, "meta": {}, "payload": obj}
        raise EnvelopeError("envelope has no 'type'", field="type")
    if type(kind) is not str:
        raise EnvelopeError("'type' must be a string", field="type")
    msg_id = obj.get("msg_id")
    if msg_id is not None and type(msg_id) is not str:
        if type(msg_id) is int:
            obj["msg_id"] = str(msg_id)
        else:
            raise EnvelopeError("'msg_id' must be a string", field="msg_id")
    meta = obj.get("meta")
    if meta is not None and type(meta) is not dict:
        raise EnvelopeError("'meta' must be an object", field="meta")
    return obj


def has_standard_payload(payload: Dict[str, Any]) -> bool:
    """True when a sys_std payload carries a message (else 0.6.8 wraps it as text)."""
    return _STD_KEYS[0] in payload and _STD_KEYS[1] in payload
