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
from its handler) is answered with ``sys_error`` and never acked. A frame whose forward
could not be stored or handed on (:func:`delivery_failed`: disk full, database locked, a
cluster backend down) gets no answer at all: the client re-sends it later. A frame whose
handler raised anything else (a bug: re-sending would fail the same way) is answered with
``sys_error``, so the client drops it and says so. None of them is acked, so nothing the
server acked is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..core.dedupe import DedupeWindow
from ..errors import DeliveryRefused
from ..runtime.callbacks import HandlerTasks
from ..transport.base import ServerConnection
from ..transport.write_batch import write_batch

logger = logging.getLogger(__name__)

RECEIPT = "receipt"
HANDLED = "handled"
ACK_POLICIES = (RECEIPT, HANDLED)

FrameKey = Tuple[str, str, str]  # (sender user, sender platform, msg_id)


class Receipt:
    """A received frame whose handler is running: the delivery layer records ``key`` in
    the durable store with the first message the handler queues (same transaction)."""

    __slots__ = ("at", "claimed", "failure", "holds_ack", "key", "recorded", "settle")

    def __init__(self, key: FrameKey, holds_ack: bool = True) -> None:
        self.key = key
        # ack="handled": the frame's ack waits for its handler (and, in cluster mode, for
        # the store to confirm the handler's sends); False when it was acked on receipt.
        self.holds_ack = holds_ack
        self.at = time.time()
        self.recorded = False
        # cluster mode: the store may hold this node's claim on the frame (taken back, as
        # a record is, when the frame ends unhandled)
        self.claimed = False
        self.failure: Optional[BaseException] = None  # a send of its handler failed
        # Set by a gate (cluster mode): called once the handler returned; a future it
        # returns is what the ack waits for (the handler's sends confirmed by the store).
        self.settle: Optional[Callable[[Receipt], Optional[asyncio.Future[Any]]]] = None


class GatedFrame:
    """A received frame whose handler waits for a gate (cluster mode: the cluster-wide
    check, backends/cluster_guard.py). The gate calls :meth:`run` (start the handler) or
    :meth:`skip` (end it unhandled: acked as a duplicate, or not answered when
    ``receipt.failure`` is set). One object per frame: no closures while it waits."""

    __slots__ = ("_after", "_args", "_handler", "_handlers", "held", "receipt")

    def __init__(self, receipt: Receipt, handler: Callable[..., Any], args: Tuple[Any, ...],
                 after: Optional[AckAfterHandling], handlers: Optional[HandlerTasks]) -> None:
        self.receipt = receipt
        self.held = False  # the gate found another live node handling it (and waits)
        self._handler = handler
        self._args = args
        self._after = after  # ack="handled": it acks once handled
        self._handlers = handlers  # ack="receipt": acked already, only the handler runs

    def run(self) -> None:
        after = self._after
        if after is not None:
            after._start(self.receipt, self._handler, self._args)
        else:
            assert self._handlers is not None
            self._handlers.start(self._handler, *self._args, on_done=self._returned)

    def skip(self) -> None:
        if self._after is not None:
            self._after._done(self.receipt, None)

    def unchecked(self, error: BaseException) -> None:
        """The gate could not tell whether the frame was handled (its store failed).
        ack="handled": not handled, not answered (the client re-sends it later).
        ack="receipt": the frame was acked already; handled (twice at worst) rather than
        dropped."""
        if self._after is not None:
            self.receipt.failure = error
            self._after._done(self.receipt, None)
        else:
            self.run()

    def drop(self, error: BaseException) -> None:
        """Another node handles the frame and this one stops waiting for it (stopping, or
        the store failed): ack="handled": not answered (the client re-sends it later);
        ack="receipt": acked already and handled there, so nothing here."""
        if self._after is not None:
            self.receipt.failure = error
            self._after._done(self.receipt, None)

    def _returned(self, exc: Optional[BaseException]) -> bool:
        """ack="receipt": tell the gate the handler returned (nothing waits for it)."""
        receipt = self.receipt
        settle = receipt.settle
        if exc is None and settle is not None:
            receipt.settle = None
            settle(receipt)
        return False


Gate = Callable[[GatedFrame], None]


# Set around the handler call, so the handler's task (and what it awaits) carries it.
CURRENT_RECEIPT: ContextVar[Optional[Receipt]] = ContextVar("maim_receipt", default=None)


def delivery_failed(exc: BaseException) -> None:
    """A message the running handler sent could not be queued or handed on (storage or
    backend failure): its frame must not be acked, whatever the handler does next."""
    receipt = CURRENT_RECEIPT.get()
    if receipt is not None and receipt.failure is None:
        receipt.failure = exc


def start_acked(handlers: HandlerTasks, gate: Gate, key: FrameKey,
                handler: Callable[..., Any], args: Tuple[Any, ...]) -> None:
    """``ack="receipt"`` behind a gate: the frame is acked already; its handler starts
    when the gate lets it."""
    gate(GatedFrame(Receipt(key, holds_ack=False), handler, args, None, handlers))


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
        if conn not in waiting:  # a flood of one id costs one entry per connection
            waiting.append(conn)
        return True

    def start(self, key: FrameKey, conn: ServerConnection) -> None:
        self._frames[key] = [conn]

    def finish(self, key: FrameKey) -> List[ServerConnection]:
        return self._frames.pop(key, [])

    def __len__(self) -> int:
        return len(self._frames)


class AckAfterHandling:
    """The ``handled`` policy: run the handler, ack once it returned and its sends are
    committed; refuse (``sys_error``, no ack) when it raised :class:`DeliveryRefused`;
    neither ack nor answer when a send failed (:func:`delivery_failed`).

    ``delivery()`` returns the server's current Delivery (it is replaced on restart);
    ``send_ack(conn, msg_id)`` and ``refuse(conns, exc, msg_id)`` write the answers;
    ``unhandled(conns, exc, msg_id, retry)`` logs a failure and, unless ``retry`` (the
    client is to re-send), answers it with ``sys_error``.
    """

    __slots__ = ("_dedupe", "_delivery", "_handlers", "_inflight", "_refuse", "_send_ack",
                 "_unhandled", "_waiting", "duplicates")

    def __init__(
        self, dedupe: DedupeWindow, handlers: HandlerTasks, delivery: Callable[[], Any],
        send_ack: Callable[[ServerConnection, str], None],
        refuse: Callable[[List[ServerConnection], DeliveryRefused, str], None],
        unhandled: Callable[[List[ServerConnection], BaseException, str, bool], None],
    ) -> None:
        self._dedupe = dedupe
        self._handlers = handlers
        self._delivery = delivery
        self._send_ack = send_ack
        self._refuse = refuse
        self._unhandled = unhandled
        self._inflight = InFlight()
        # frames whose ack waits for the same store confirmation: one callback per future
        # (not one closure, context copy and loop handle per frame)
        self._waiting: Dict[asyncio.Future[Any], List[Receipt]] = {}
        self.duplicates = 0

    def duplicate(self, conn: ServerConnection, key: FrameKey) -> bool:
        """True when ``key`` was taken before (``conn`` gets its ack when it is handled);
        else ``key`` is recorded as taken now and the frame must be handled or forgotten."""
        if self._inflight.join(key, conn):  # a re-send while the first is being handled
            self.duplicates += 1
            return True
        if self._dedupe.seen(key):  # handled before (by this process or a previous one)
            self.duplicates += 1
            self._delivery().after_commit(lambda: self._send_ack(conn, key[2]))
            return True
        return False

    def receive(self, conn: ServerConnection, key: FrameKey, handler: Callable[..., Any],
                args: Tuple[Any, ...], gate: Optional[Gate] = None) -> None:
        """Run the handler of a new frame (``duplicate`` returned False for it), at once
        or when ``gate`` lets it."""
        self._inflight.start(key, conn)
        receipt = Receipt(key)
        if gate is None:
            self._start(receipt, handler, args)
        else:
            gate(GatedFrame(receipt, handler, args, self, None))

    def _start(self, receipt: Receipt, handler: Callable[..., Any],
               args: Tuple[Any, ...]) -> None:
        token = CURRENT_RECEIPT.set(receipt)  # the handler's task copies the context
        try:
            self._handlers.start(handler, *args, on_done=lambda exc: self._done(receipt, exc))
        finally:
            CURRENT_RECEIPT.reset(token)

    def _done(self, receipt: Receipt, exc: Optional[BaseException]) -> bool:
        """The handler of a frame ended: ack it (after the commit), or not at all."""
        settle = receipt.settle
        if settle is not None and exc is None and receipt.failure is None:
            receipt.settle = None
            confirmed = settle(receipt)
            if confirmed is not None and not confirmed.done():
                waiting = self._waiting.get(confirmed)
                if waiting is None:
                    self._waiting[confirmed] = [receipt]
                    confirmed.add_done_callback(self._confirmed_all)
                else:
                    waiting.append(receipt)
                return False
            if confirmed is not None:
                self._confirmed(receipt, _failure_of(confirmed))
                return False
        return self._finish(receipt, exc)

    def _confirmed_all(self, confirmed: asyncio.Future[Any]) -> None:
        failure = _failure_of(confirmed)  # once for all the frames that waited for it
        with write_batch:  # a connection's acks of the batch leave in one write
            for receipt in self._waiting.pop(confirmed, ()):
                try:
                    self._confirmed(receipt, failure)
                except Exception:  # one frame's answer must not stop the others'
                    logger.exception("acking a handled frame failed")

    def _confirmed(self, receipt: Receipt, failure: Optional[BaseException]) -> None:
        if receipt.failure is None and failure is not None:
            receipt.failure = failure
        self._finish(receipt, None)

    def _finish(self, receipt: Receipt, exc: Optional[BaseException]) -> bool:
        key = receipt.key
        waiting = self._inflight.finish(key)
        failure = receipt.failure
        delivery = self._delivery()
        if exc is None and failure is None:
            delivery.consumed(receipt)

            def send_acks() -> None:
                for conn in waiting:
                    if conn.is_open:
                        self._send_ack(conn, key[2])
            def not_stored(exc: BaseException) -> None:  # the commit failed
                self._dedupe.forget(key)
                receipt.recorded = False  # rolled back with the commit
                self._unhandled(waiting, exc, key[2], True)
            delivery.after_commit(send_acks, not_stored)
            return False
        # Not handled: never acked, and a re-send is tried again.
        self._dedupe.forget(key)
        delivery.unhandled(receipt)
        if failure is not None:  # storage / backend: no answer, the client re-sends it
            self._unhandled(waiting, failure, key[2], True)
        elif isinstance(exc, DeliveryRefused):
            self._refuse(waiting, exc, key[2])
        elif exc is not None and not isinstance(exc, asyncio.CancelledError):
            self._unhandled(waiting, exc, key[2], False)  # a handler bug: sys_error
        return True


def _failure_of(confirmed: asyncio.Future[Any]) -> Optional[BaseException]:
    """Why a done confirmation failed (None: it succeeded)."""
    if confirmed.cancelled():
        return asyncio.CancelledError()
    return confirmed.exception()
