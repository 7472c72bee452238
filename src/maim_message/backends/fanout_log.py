"""Which logged fan-outs a node handled, and what to hand on after its channel was away.

A fan-out (a broadcast, a message to every connection of a user or platform) reaches the
other nodes only through the shared channel, and each node stores it for its own matching
connections. A node whose channel connection is being re-established would miss it, and
nothing would ever store it for its connections. So the sending node appends the fan-out
to a log stream and publishes it in the same atomic step, with the log entry's id; the
ids arrive in log order. After a reconnect a node reads the log from the last id it
handled (no I/O here: :class:`FanoutLog` says what to read and what to hand on).
"""

from __future__ import annotations

from typing import List, Optional

from .pubsub_messages import FanoutMessage
from .pubsub_state import stream_id_key


class FanoutLog:
    """The position of one node in the fan-out log, and the catch-up read after a gap.

    ``handle_now`` is asked for each fan-out from the channel; while a catch-up read is
    pending, logged fan-outs wait (they may be newer than what the read returns); the
    read's entries are handed on first, then the waiting ones newer than them, each once.
    """

    __slots__ = ("again", "held", "last", "node_id", "reading", "recovered")

    def __init__(self, node_id: str, last: str = "0-0") -> None:
        self.node_id = node_id  # (its own fan-outs it delivered when it sent them)
        self.last = last  # the newest log id handled (or the log's end when the node joined)
        self.reading = False  # a catch-up read is pending
        self.again = False  # another gap opened while it was pending: read once more
        self.held: List[FanoutMessage] = []
        # other nodes' fan-outs handed on from a catch-up read (missed on the channel)
        self.recovered = 0

    def restart(self, last: str) -> None:
        """The node (re)joins: the log's end now is where it starts (what it held before
        a stop is void: a stopped node holds no connections)."""
        self.last = last
        self.reading = self.again = False
        self.held = []

    def handle_now(self, message: FanoutMessage) -> bool:
        """Whether to handle ``message`` now (False: it waits for the read, or was
        handled already). A fan-out without a log id (an in-process bus) always is."""
        log_id = message.log_id
        if not log_id:
            return True
        if self.reading:
            self.held.append(message)
            return False
        if stream_id_key(log_id) <= stream_id_key(self.last):
            return False
        self.last = log_id
        return True

    def gap(self) -> Optional[str]:
        """The channel came back (or the node just joined): the id to read the log after,
        or None when a read is pending already (it is read once more after that one)."""
        if self.reading:
            self.again = True
            return None
        self.reading = True
        return self.last

    def caught_up(self, entries: List[FanoutMessage]) -> List[FanoutMessage]:
        """The catch-up read's entries (log order, ids set): what to hand on, in order."""
        out: List[FanoutMessage] = []
        from_read = 0
        for n, message in enumerate([*entries, *self.held]):
            if stream_id_key(message.log_id) > stream_id_key(self.last):
                out.append(message)
                self.last = message.log_id
                if n < len(entries) and message.origin != self.node_id:
                    from_read += 1
        self.recovered += from_read
        self.held = []
        self.reading = False
        return out

    def read_failed(self) -> List[FanoutMessage]:
        """The read failed (the node is stopping): hand on what waited, keep the gap's
        start (``again`` makes the caller read from it once more)."""
        held, self.held = self.held, []
        self.reading = False
        self.again = True
        return held

    def take_again(self) -> bool:
        again, self.again = self.again, False
        return again
