"""Per-node state of the pub/sub cluster: held pairs and the outbox's store (no I/O)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Tuple

from .cluster_base import Pair
from .frame_dedupe import FrameKey, frame_token

if TYPE_CHECKING:
    from ..core.outbox import OutboxEntry
    from ..server.acks import Receipt


def stream_id_key(stream_id: str) -> Tuple[int, int]:
    """``"<ms>-<seq>"`` as a comparable tuple (``""`` sorts first)."""
    if not stream_id:
        return (0, 0)
    ms, _, seq = stream_id.partition("-")
    return (int(ms), int(seq or 0))


class PairState:
    """A pair with connections on this node; ``loading`` until its stream was read."""

    __slots__ = ("buffer", "loaded_upto", "loading")

    def __init__(self, loading: bool) -> None:
        self.loading = loading
        self.buffer: List[Tuple[str, bytes, bool]] = []  # (msg_id, payload, persist)
        self.loaded_upto: Tuple[int, int] = (0, 0)


class ClusterOutboxStore:
    """The Outbox's store in cluster mode: appends and acks go to the pair's stream."""

    def __init__(self, cluster: Any) -> None:  # a PubSubCluster
        self._cluster = cluster

    def load(self) -> List[Tuple[str, str, int, str, bytes, float]]:
        return []  # streams are read per pair, when its first connection opens here

    def add(self, pair: Pair, entry: OutboxEntry) -> None:
        self._cluster._store_add(pair, entry.msg_id, entry.payload)

    def remove(self, pair: Pair, msg_ids: List[str]) -> None:
        if msg_ids and self._cluster._host is not None:
            self._cluster._acked(pair, msg_ids)  # named after the pair's first connection

    def forget_seen(self, key: FrameKey) -> None:
        """A frame recorded as handled was not (a later send of its handler failed)."""
        self._cluster._unmark_frame(frame_token(key))

    def forget_frame(self, receipt: Receipt) -> None:
        """A frame recorded or claimed here ends unhandled: its claim is given back, and
        its record too unless the batch that holds it still waits for Redis (its commands
        stay queued and run: a re-send must then find the record, or it would be handled
        twice). Only what this node wrote is taken back (never another node's record)."""
        still_queued = getattr(receipt.failure, "still_queued", False)
        self._cluster._unmark_frame(frame_token(receipt.key),
                                    record=receipt.recorded and not still_queued)

    def close(self) -> None:
        return None
