"""Type checks of a standard message's routing fields, before the frame is acked.

The data model accepts any JSON value in any field (0.6.8 did), so a ``message_dim`` whose
``api_key`` is a list would be acked, then break routing in a handler with a traceback
per frame. The fields the server and the hub route on are checked here instead, and a
bad frame is answered with a ``sys_error`` naming the field (never acked).
"""

from __future__ import annotations

from typing import Any, Dict

from ..errors import EnvelopeError

_OBJECTS = ("message_info", "message_segment", "message_dim")
_STRINGS = (
    ("message_dim", "api_key", True),
    ("message_dim", "platform", True),
    ("message_info", "platform", False),
    ("message_segment", "type", False),
)


def check_standard_payload(payload: Dict[str, Any]) -> None:
    """Raise :class:`EnvelopeError` (``field`` = dotted path) for a wrongly typed field."""
    for name in _OBJECTS:
        value = payload.get(name)
        if value is not None and type(value) is not dict:
            raise EnvelopeError(f"'{name}' must be an object, got {type(value).__name__}",
                                field=f"payload.{name}")
    for outer, inner, required in _STRINGS:
        part = payload.get(outer)
        if part is None:
            continue
        value = part.get(inner)
        if value is None and not required:
            continue
        if type(value) is not str:
            got = "nothing" if value is None else type(value).__name__
            raise EnvelopeError(f"'{outer}.{inner}' must be a string, got {got}",
                                field=f"payload.{outer}.{inner}")
