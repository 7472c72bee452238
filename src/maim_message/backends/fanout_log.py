"""Which logged fan-outs a node handled, and what to hand on after its channel was away.

A fan-out (a broadcast, a message to every connection of a user or platform) reaches the
other nodes only through the shared channel, and each node stores it for its own matching
connections. A node whose channel connection is being re-established would miss it, and
nothing would ever store it for its connections. So the sending node appends the fan-out
to a log stream and publishes it in the same atomic step, with the log entry's id; the
ids arrive in log order. After a reconnect a node reads the log from the last id it
handled, a page at a time (no I/O here: :class:`FanoutLog` says where to read from and
what to hand on, each logged fan-out once and in log order).
"""

from __future__ import annotations

from typing import List, Optional

from .pubsub_messages import FanoutMessage
from .pubsub_state import stream_id_key

MAX_HELD = 1_000  # channel fan-outs waiting for a catch-up read, at most


class FanoutLog:
    """The position of one node in the fan-out log, and the catch-up read after a gap.

    ``handle_now`` is asked for each fan-out from the channel; while a catch-up read is
    pending, logged fan-outs wait (they may be newer than what the read returns); the
    read's pages are handed on first (:meth:`page`), then the waiting ones newer than
    them (:meth:`caught_up`). A read that cannot finish while ``MAX_HELD`` fan-outs wait
    is given up (:meth:`handle_now` says so): what waited is handed on, and what the read
    did not reach stays missed (memory stays bounded while the log cannot be read).
    """

    __slots__ = ("again", "given_up", "held", "last", "read_id", "reading")

    def __init__(self, last: str = "0-0") -> None:
        self.last = last  # the newest log id handled (or the log's end when the node joined)
        self.reading = False  # a catch-up read is pending
        self.again = False  # another gap opened while it was pending: read once more
        self.held: List[FanoutMessage] = []
        self.read_id = 0  # which read is current (a given-up or restarted one stops)
        self.given_up = 0  # catch-up reads given up (held fan-outs reached MAX_HELD)

    def restart(self, last: str) -> None:
        """The node (re)joins: the log's end now is where it starts (what it held before
        a stop is void: a stopped node holds no connections)."""
        self.last = last
        self.reading = self.again = False
        self.held = []
        self.read_id += 1

    def handle_now(self, message: FanoutMessage) -> List[FanoutMessage]:
        """What to handle now for a fan-out from the channel, in order: itself, nothing
        (it waits for the read, or was handled already), or, when waiting ones reached
        ``MAX_HELD``, all of them (the read is given up). A fan-out without a log id (an
        in-process bus, or one Redis could not log) is handled at once."""
        log_id = message.log_id
        if not log_id:
            return [message]
        if self.reading:
            self.held.append(message)
            if len(self.held) < MAX_HELD:
                return []
            self.given_up += 1
            self.reading = self.again = False
            self.read_id += 1
            return self._newer(self.held)
        if stream_id_key(log_id) <= stream_id_key(self.last):
            return []
        self.last = log_id
        return [message]

    def gap(self) -> Optional[str]:
        """The channel came back (or the node just joined): the id to read the log after,
        or None when a read is pending already (it is read once more after that one)."""
        if self.reading:
            self.again = True
            return None
        self.reading = True
        return self.last

    def page(self, entries: List[FanoutMessage], upto: str) -> List[FanoutMessage]:
        """One page of the read (log order, ids set), which ended at ``upto`` (entries
        that could not be decoded are left out of ``entries``, not re-read): what to
        hand on now."""
        out = self._newer(entries, keep=True)
        if stream_id_key(upto) > stream_id_key(self.last):
            self.last = upto
        return out

    def caught_up(self) -> List[FanoutMessage]:
        """The read reached the log's end: the waiting fan-outs newer than it, in order."""
        return self._newer(self.held)

    def take_again(self) -> bool:
        again, self.again = self.again, False
        return again

    def _newer(self, messages: List[FanoutMessage], keep: bool = False) -> List[FanoutMessage]:
        out: List[FanoutMessage] = []
        for message in messages:
            if stream_id_key(message.log_id) > stream_id_key(self.last):
                out.append(message)
                self.last = message.log_id
        if not keep:
            self.held = []
            self.reading = False
        return out
