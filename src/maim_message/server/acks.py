"""When a received frame is acked: the server's ``ack`` policy.

``"receipt"`` (the default; 0.6.8 and the spec, wire-protocol §1.6): the ``sys_ack`` goes
out as soon as the frame is decoded and valid, before its handler runs. A crash after
that loses what the handler had not finished.

``"handled"``: the ``sys_ack`` goes out once the frame's handler has returned and what it
queued for delivery is committed (durable outbox: in SQLite). The hub uses it, so a hub
killed at any point loses nothing it acked: the client re-sends whatever was not acked.
With a durable outbox the id of a handled frame is committed together with the first
message its handler queued (:data:`CURRENT_RECEIPT`), so a re-send after a crash is
recognised and not forwarded twice.

A frame that is refused (bad fields, or :class:`~maim_message.errors.DeliveryRefused`
from its handler) is answered with ``sys_error`` and never acked.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..core.dedupe import DedupeWindow
from ..transport.base import ServerConnection

RECEIPT = "receipt"
HANDLED = "handled"
ACK_POLICIES = (RECEIPT, HANDLED)

FrameKey = Tuple[str, str, str]  # (sender user, sender platform, msg_id)


class Receipt:
    """A received frame whose handler is running: the delivery layer records ``key`` in
    the durable store with the first message the handler queues (same transaction)."""

    __slots__ = ("at", "key", "recorded")

    def __init__(self, key: FrameKey) -> None:
        self.key = key
        self.at = time.time()
        self.recorded = False


# Set around the handler call, so the handler's task (and what it awaits) carries it.
CURRENT_RECEIPT: ContextVar[Optional[Receipt]] = ContextVar("maim_receipt", default=None)


class InFlight:
    """Frames being handled under the ``handled`` policy, and who waits for their ack.

    A client that reconnects re-sends what was not acked; a re-send of a frame that is
    still being handled must not run the handler again, and must get the ack too.
    """

    __slots__ = ("_frames",)

    def __init__(self) -> None:
        self._frames: Dict[FrameKey, List[ServerConnection]] = {}

    def join(self, key: FrameKey, conn: ServerConnection) -> bool:
        """True when ``key`` is being handled (``conn`` will get its ack as well)."""
        waiting = self._frames.get(key)
        if waiting is None:
            return False
        waiting.append(conn)
        return True

    def start(self, key: FrameKey, conn: ServerConnection) -> None:
        self._frames[key] = [conn]

    def finish(self, key: FrameKey) -> List[ServerConnection]:
        return self._frames.pop(key, [])

    def __len__(self) -> int:
        return len(self._frames)


def preload_dedupe(dedupe: DedupeWindow, keys: List[FrameKey]) -> None:
    """Remember the frames a previous process handled (durable outbox, after a restart)."""
    for key in keys:
        dedupe.seen(key)


AckSender = Callable[[List[ServerConnection], str], Any]
