"""The message a received ``sys_std`` frame carries, checked before it is acked.

Sans-I/O: an envelope in, an :class:`APIMessageBase` out, or an
:class:`~maim_message.errors.EnvelopeError` naming the field (the server answers it with
``sys_error`` and never acks it).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, Optional

from ..core.codec import has_standard_payload
from ..core.models.api import APIMessageBase
from ..core.models.api_fast import message_from_payload
from ..core.payload_checks import check_standard_payload
from ..errors import EnvelopeError


def standard_message(env: Dict[str, Any], platform: str, api_key: str) -> APIMessageBase:
    """The message of a sys_std envelope received on a (``platform``, ``api_key``)
    connection; a payload without message_info/segment is wrapped as text (0.6.8 [keep])."""
    payload = env.get("payload")
    if type(payload) is dict:
        message = message_from_payload(payload)  # the common shape, in one pass
        if message is not None:
            return message
    if type(payload) is dict and has_standard_payload(payload):
        check_standard_payload(payload)
        try:
            return APIMessageBase.from_dict(payload)
        except (ValueError, TypeError, AttributeError, RecursionError) as exc:  # deep seglist
            if isinstance(exc, EnvelopeError):
                raise
            raise EnvelopeError(str(exc)[:200], "payload") from None
    now = time.time()
    try:
        text = str({} if payload is None else payload)
    except RecursionError:  # str() of a payload nested ~1000 deep
        raise EnvelopeError("payload nested too deeply", "payload") from None
    return APIMessageBase.from_dict({
        "message_info": {"platform": platform, "message_id": str(now), "time": now},
        "message_segment": {"type": "text", "data": text},
        "message_dim": {"api_key": api_key, "platform": platform},
    })


class RefusedFrames:
    """The ``sys_error`` answers of recently refused frames, by (user, platform, msg_id).

    A client re-sends a frame it saw no ack for, unchanged; answering the re-send from
    here keeps a malformed frame (e.g. a segment list nested 1,000 deep) from being
    parsed again on every reconnect. Bounded: the oldest answers are forgotten.
    """

    __slots__ = ("_frames", "get", "limit")

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._frames: OrderedDict[Hashable, bytes] = OrderedDict()
        #: The answer kept for ``key``, or None (the dict's own ``get``: asked per frame).
        self.get: Callable[[Hashable], Optional[bytes]] = self._frames.get

    def add(self, key: Hashable, frame: bytes) -> None:
        self._frames[key] = frame
        if len(self._frames) > self.limit:
            self._frames.popitem(last=False)
