"""Exactly-once to handlers across nodes: the guard around a received frame's handler.

Before the handler of a frame runs, the node asks the store whether any node recorded the
frame as handled (``frame_dedupe``; the checks of a batch are one read per shard): a
client that re-sends its unacked frames to another node after its node died gets those
acked without being handled again. Otherwise the frame is recorded with the first
message its handler sends (in the same atomic store call: :func:`frame_to_record`), or on
its own when the handler returns having sent nothing, before it is acked.
"""

from __future__ import annotations

import inspect
from contextvars import ContextVar
from typing import Any, Callable, Optional, Tuple

from ..server.acks import CURRENT_RECEIPT, FrameKey, Receipt
from .frame_dedupe import frame_token
from .pubsub_io import PubSubIO

# The frame a guarded handler is handling and its token (set around the handler call).
_FRAME: ContextVar[Optional[Tuple[Receipt, str]]] = ContextVar("maim_cluster_frame",
                                                                default=None)


def frame_to_record() -> Optional[str]:
    """The token of the frame being handled, the first time a send asks (then None)."""
    frame = _FRAME.get()
    if frame is not None:
        if frame[0].recorded:
            return None
        frame[0].recorded = True
        return frame[1]
    receipt = CURRENT_RECEIPT.get()  # a handler called without the guard
    if receipt is None or receipt.recorded:
        return None
    receipt.recorded = True
    return frame_token(receipt.key)


class FrameGuard(PubSubIO):
    """Mixin of :class:`~.pubsub_cluster.PubSubCluster`."""

    duplicate_frames: int

    def guard(self, key: FrameKey, handler: Callable[..., Any]) -> Callable[..., Any]:
        """``handler`` wrapped: skipped when a node already handled frame ``key``;
        otherwise recorded as handled with its first send, or once it returns."""
        async def guarded(*args: Any) -> Any:
            token = frame_token(key)
            if token in await self._frame_seen(token):
                self.duplicate_frames += 1
                return None
            receipt = CURRENT_RECEIPT.get()
            if receipt is None or receipt.key != key:
                receipt = Receipt(key)
            reset = _FRAME.set((receipt, token))
            try:
                result = handler(*args)
                if inspect.isawaitable(result):
                    result = await result
            finally:
                _FRAME.reset(reset)
            if not receipt.recorded:
                receipt.recorded = True
                self._mark_frame(token)
                await self._written()
            return result
        return guarded
