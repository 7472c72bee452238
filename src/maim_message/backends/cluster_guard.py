"""Exactly-once to handlers across nodes: the gate before a received frame's handler.

Before the handler of a frame runs, the node asks the store whether any node recorded the
frame as handled (``frame_dedupe``): a client that re-sends its unacked frames to another
node after its node died gets those acked without being handled again. Otherwise the
frame is recorded with the first message its handler sends (in the same atomic store
call: :func:`frame_for_send`), or on its own when the handler returns having sent
nothing (``Receipt.settle``).

The frame waits in the store's batch of checks as one ``GatedFrame`` (no task, future or
closure of its own: objects that outlive a loop turn cost garbage-collector time); its
handler starts when the batch's answer arrives. Its sends do not wait for the store: with
``ack="handled"`` the ack does (``Receipt.settle`` returns what it waits for).
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from typing import Any, Optional, Tuple

from ..server.acks import CURRENT_RECEIPT, GatedFrame, Receipt
from .frame_dedupe import frame_token
from .pubsub_io import PubSubIO

logger = logging.getLogger(__name__)

# The frame a gated handler is handling and its token (set around the handler's start).
_FRAME: ContextVar[Optional[Tuple[Receipt, str]]] = ContextVar("maim_cluster_frame",
                                                                default=None)


def frame_for_send(waits: bool) -> Tuple[Optional[str], Optional[Receipt]]:
    """What a send made now carries for the frame being handled, in one look-up:

    - the frame's token to record, the first time a send asks (then None);
    - the frame's receipt when its ack still waits for the store (``ack="handled"``:
      ``Receipt.settle`` holds the ack back, so the send need not wait), else None. Under
      ``ack="receipt"`` the frame is acked already, and a send someone ``waits`` for
      (``ack_timeout``) waits anyway: a store failure then reaches the caller."""
    frame = _FRAME.get()
    if frame is not None:
        receipt = frame[0]
        mark = None
        if not receipt.recorded:
            receipt.recorded = True
            mark = frame[1]
        held = (receipt if not waits and receipt.settle is not None and receipt.holds_ack
                else None)
        return mark, held
    current = CURRENT_RECEIPT.get()  # a handler started without the gate
    if current is None or current.recorded:
        return None, None
    current.recorded = True
    return frame_token(current.key), None


class FrameGuard(PubSubIO):
    """Mixin of :class:`~.pubsub_cluster.PubSubCluster`."""

    duplicate_frames: int
    frame_claims = False  # set by a backend that claims frames (records them as started)
    unchecked_frames = 0  # frames the store could not check (logged once)

    def admit(self, frame: GatedFrame) -> None:
        """The server's gate: run the frame's handler once the store said no node
        handled it; else skip it (acked as a duplicate, or not answered when the check
        failed: the client re-sends)."""
        self._check_frame(frame_token(frame.receipt.key), frame)

    def _frame_checked(self, token: str, frame: GatedFrame, seen: bool,
                       error: Optional[BaseException]) -> None:
        """The store's answer for one frame (called by ``_check_frame``'s batch)."""
        receipt = frame.receipt
        if error is not None and frame.held:  # a live node had it: it handles it
            frame.drop(error)
        elif error is not None:
            # its home shard may have claimed it before another failed (claims only: a
            # check without claims writes nothing, so there is nothing to give back)
            receipt.claimed = self.frame_claims
            if self.unchecked_frames == 0:
                logger.warning("cluster: frames could not be checked against the record "
                               "of handled frames: %s", error)
            self.unchecked_frames += 1
            frame.unchecked(error)
        elif seen:
            self.duplicate_frames += 1
            frame.skip()
        else:
            receipt.claimed = True  # the check claimed it: taken back if not handled
            receipt.settle = self._settle
            reset = _FRAME.set((receipt, token))
            try:
                frame.run()
            finally:
                _FRAME.reset(reset)

    def _settle(self, receipt: Receipt) -> Optional[asyncio.Future[Any]]:
        """The handler returned: record the frame if no send did, and give the future
        the ack waits for (everything queued so far confirmed by the store)."""
        if not receipt.recorded:
            receipt.recorded = True
            self._mark_frame(frame_token(receipt.key))
        elif self.frame_claims:  # its first send recorded it as started: now handled
            self._mark_frame(frame_token(receipt.key))
        return self._confirmation()
