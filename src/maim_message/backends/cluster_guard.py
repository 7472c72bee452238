"""Exactly-once to handlers across nodes: the gate (and guard) before a frame's handler.

Before the handler of a frame runs, the node asks the store whether any node recorded the
frame as handled (``frame_dedupe``): a client that re-sends its unacked frames to another
node after its node died gets those acked without being handled again. Otherwise the
frame is recorded with the first message its handler sends (in the same atomic store
call: :func:`frame_to_record`), or on its own when the handler returns having sent
nothing, before it is acked.

Two ways in. :meth:`FrameGuard.admit` is the server's ``ack="handled"`` gate (the hub's
policy): the frame waits in the store's batch of checks without a task or a future of
its own, its handler starts when the batch's answer arrives, its sends do not wait for
the store (the ack does: ``Receipt.settle``). :meth:`FrameGuard.guard` wraps a handler
for the ``ack="receipt"`` policy (the check is awaited inside the handler's task).
"""

from __future__ import annotations

import asyncio
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


def gated_receipt() -> Optional[Receipt]:
    """The receipt of the frame being handled when its ack waits for the store (a send
    made now need not wait: ``Receipt.settle`` holds the ack back), else None."""
    frame = _FRAME.get()
    if frame is None:
        return None
    receipt = frame[0]
    return receipt if receipt.settle is not None else None


class FrameGuard(PubSubIO):
    """Mixin of :class:`~.pubsub_cluster.PubSubCluster`."""

    duplicate_frames: int

    def admit(self, receipt: Receipt, run: Callable[[], Any],
              skip: Callable[[], Any]) -> None:
        """The server's gate (``ack="handled"``): ``run`` the frame's handler once the
        store said no node handled it; else ``skip`` it (acked as a duplicate, or not
        answered when the check failed: the client re-sends)."""
        token = frame_token(receipt.key)

        def checked(seen: bool, error: Optional[BaseException]) -> None:
            if error is not None:
                receipt.failure = error
                skip()
            elif seen:
                self.duplicate_frames += 1
                skip()
            else:
                receipt.settle = self._settle
                reset = _FRAME.set((receipt, token))
                try:
                    run()
                finally:
                    _FRAME.reset(reset)
        self._check_frame(token, checked)

    def _settle(self, receipt: Receipt) -> Optional[asyncio.Future[Any]]:
        """The handler returned: record the frame if no send did, and give the future
        the ack waits for (everything queued so far confirmed by the store)."""
        if not receipt.recorded:
            receipt.recorded = True
            self._mark_frame(frame_token(receipt.key))
        return self._confirmation()

    def guard(self, key: FrameKey, handler: Callable[..., Any]) -> Callable[..., Any]:
        """``handler`` wrapped: skipped when a node already handled frame ``key``;
        otherwise recorded as handled with its first send, or once it returns."""
        async def guarded(*args: Any) -> Any:
            token = frame_token(key)
            answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

            def checked(seen: bool, error: Optional[BaseException]) -> None:
                if answer.done():
                    return
                if error is not None:
                    answer.set_exception(error)
                else:
                    answer.set_result(seen)
            self._check_frame(token, checked)
            if await answer:
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
