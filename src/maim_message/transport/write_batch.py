"""One write per connection for the sends of one batch of work.

Outside a read, a connection writes the first send of a loop turn at once (latency) and
corks the rest until the turn ends: a connection sent to k >= 2 times in a turn costs two
system calls. Code that sends many messages in one synchronous stretch (the acks of a
batch the store confirmed, a cluster batch handed to its receivers) opens a write batch
instead: each connection written to inside it is flushed once, when the batch closes.
A send past the connection's high-water mark still leaves at once (back-pressure).

Per thread: a batch opened by one event loop never holds another loop's connections.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Callable, List, Optional, Type

logger = logging.getLogger(__name__)


class _Open(threading.local):
    def __init__(self) -> None:
        self.depth = 0  # batches open on this thread (they nest)
        self.flushes: List[Callable[[], None]] = []  # one per connection written to


OPEN = _Open()


class WriteBatch:
    """``with WriteBatch():`` around a stretch of sends (no await inside: the batch
    belongs to the stretch, not to a task)."""

    __slots__ = ()

    def __enter__(self) -> None:
        OPEN.depth += 1

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        state = OPEN
        state.depth -= 1
        if state.depth or not state.flushes:
            return
        flushes, state.flushes = state.flushes, []
        interrupted: Optional[BaseException] = None
        for flush in flushes:
            try:
                flush()
            except Exception:  # one connection's failure must not hold the others' writes
                logger.exception("writing a batch of sends failed")
            except BaseException as stop:  # (KeyboardInterrupt...): the others first
                interrupted = interrupted or stop
        if interrupted is not None:
            raise interrupted


write_batch = WriteBatch()
