"""Per-node state of the pub/sub cluster: held pairs and the outbox's store (no I/O)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from .cluster_base import Pair
from .frame_dedupe import FrameKey, frame_token
from .stream_ids import ANY_ORIGIN

if TYPE_CHECKING:
    from ..core.outbox import OutboxEntry
    from ..server.acks import Receipt


def stream_id_key(stream_id: str) -> Tuple[int, int]:
    """``"<ms>-<seq>"`` as a comparable tuple (``""`` sorts first)."""
    if not stream_id:
        return (0, 0)
    ms, _, seq = stream_id.partition("-")
    return (int(ms), int(seq or 0))


# a channel message held back during a re-read, or a message a re-read is to deliver:
# (stream id, msg_id, payload, origin awaiting its ack: None when nobody waits)
Held = Tuple[str, str, bytes, Optional[str]]


def resync_merge(entries: List[Tuple[str, str, bytes]], held: List[Held],
                 loaded_upto: Tuple[int, int]) -> List[Held]:
    """What a re-read of a pair's stream hands on, in order: the stream's entries (oldest
    first), then the channel messages that arrived while it was pending and are newer than
    anything it read, in arrival order (each sending node publishes in stream order).

    A held message the read found too is taken once, where the stream has it, with the
    origin its channel message names. A held message no newer than what was read but not
    in the stream was deleted before the read (acked elsewhere): it is left out, as
    ``handle_messages`` leaves out a message no newer than the last read."""
    origins: Dict[str, Optional[str]] = {msg_id: origin for _s, msg_id, _p, origin in held}
    out: List[Held] = [(sid, msg_id, payload, origins.get(msg_id, ANY_ORIGIN))
                       for sid, msg_id, payload in entries]
    upto = max(loaded_upto, stream_id_key(entries[-1][0])) if entries else loaded_upto
    read = {msg_id for _s, msg_id, _p in entries}
    for item in held:
        sid = item[0]
        if item[1] not in read and (not sid or stream_id_key(sid) > upto):
            out.append(item)
    return out


class PairState:
    """A pair with connections on this node; ``loading`` until its stream was read.

    ``reading``: a read of its stream is pending (the first load or a re-read); the
    channel's messages for it wait until the read is delivered, so that nothing newer
    goes out before what the read finds (per sending node, stream order)."""

    __slots__ = ("again", "buffer", "loaded_upto", "loading", "reading", "rebuffer")

    def __init__(self, loading: bool) -> None:
        self.loading = loading
        self.reading = loading
        self.again = False  # a re-read was asked for while a read was pending
        self.buffer: List[Tuple[str, bytes, bool]] = []  # (msg_id, payload, persist)
        self.rebuffer: List[Held] = []  # channel messages held during a re-read
        self.loaded_upto: Tuple[int, int] = (0, 0)


class ClusterOutboxStore:
    """The Outbox's store in cluster mode: appends and acks go to the pair's stream."""

    def __init__(self, cluster: Any) -> None:  # a PubSubCluster
        self._cluster = cluster

    def load(self) -> List[Tuple[str, str, int, str, bytes, float]]:
        return []  # streams are read per pair, when its first connection opens here

    def add(self, pair: Pair, entry: OutboxEntry) -> None:
        self._cluster._store_add(pair, entry.msg_id, entry.payload)

    def remove(self, pair: Pair, msg_ids: List[str], acked: bool = True) -> None:
        """Deleted from the pair's stream; an origin waiting for their ack is told only
        when the receiver acked them (not when they were given up or drained)."""
        if msg_ids and self._cluster._host is not None:
            # named after the pair's first connection
            self._cluster._acked(pair, msg_ids, notify=acked)

    def forget_seen(self, key: FrameKey) -> None:
        """A frame recorded as handled was not (a later send of its handler failed)."""
        self._cluster._unmark_frame(frame_token(key))

    def forget_frame(self, receipt: Receipt) -> None:
        """A frame recorded or claimed here ends unhandled: its claim is given back, and
        its record too unless the batch that holds it still waits for Redis (its commands
        stay queued and run: a re-send must then find the record, or it would be handled
        twice). Only what this node wrote is taken back (never another node's record)."""
        still_queued = getattr(receipt.failure, "still_queued", False)
        token = frame_token(receipt.key)
        cluster = self._cluster
        cluster._unmark_frame(token, record=receipt.recorded and not still_queued)
        if still_queued and receipt.recorded and cluster.frame_claims:
            # its record says "started" (a live node still handling it: a re-send elsewhere
            # would wait for it): it becomes "handled", behind the queued batch
            cluster._mark_frame(token)

    def close(self) -> None:
        return None
