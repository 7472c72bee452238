"""What the live page and ``/metrics`` show: one snapshot of the hub's state.

No secrets: user ids, platforms and counters only. Rates come from per-second samples.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, Tuple

from .. import __version__

if TYPE_CHECKING:
    from .runner import Hub

RATE_WINDOW = 5  # seconds of history behind the rates shown on the page


class RateWindow:
    """Per-second samples of monotonically growing counters -> rates over the last N s."""

    def __init__(self, seconds: int = RATE_WINDOW) -> None:
        self._samples: Deque[Tuple[float, Tuple[int, ...]]] = deque(maxlen=seconds + 1)

    def add(self, now: float, values: Tuple[int, ...]) -> None:
        self._samples.append((now, values))

    def rates(self, width: int) -> Tuple[float, ...]:
        if len(self._samples) < 2:
            return (0.0,) * width
        (t0, first), (t1, last) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span <= 0:
            return (0.0,) * width
        return tuple((b - a) / span for a, b in zip(first, last))


def hub_snapshot(hub: Hub) -> Dict[str, Any]:
    """Everything the live page and the metrics show; no secrets (user ids only)."""
    server = hub.server
    stats = server.get_stats()
    net = stats["network"]
    delivery = stats.get("delivery") or {}
    outbox = server.delivery.outbox
    acks_pending = 0
    if outbox is not None:  # unacked messages of receivers that are connected now
        for user, plats in server.routes.users().items():
            for platform in plats:
                acks_pending += outbox.depth((user, platform))
    rate_in, rate_out, frames_in_rate, frames_out_rate = hub._rates.rates(4)
    users = server.routes.users()
    return {
        "version": __version__,
        "state": hub.state,
        "now": time.time(),
        "started_at": hub.started_at,
        "uptime": max(0.0, time.time() - hub.started_at),
        "connections": server.routes.connection_count,
        "users": len(users),
        "platforms": server.routes.platforms(),
        "by_user": [
            {"user": user, "platforms": {p: len(c) for p, c in sorted(plats.items())}}
            for user, plats in sorted(users.items())
        ],
        "connections_accepted": net["total_connections"],
        "messages_in": hub.messages_in,
        "messages_out": hub.messages_out,
        "unroutable": hub.unroutable,
        "rate_in": round(rate_in, 2),
        "rate_out": round(rate_out, 2),
        "frames_in": net["messages_received"],
        "frames_out": net["messages_sent"],
        "frame_rate_in": round(frames_in_rate, 2),
        "frame_rate_out": round(frames_out_rate, 2),
        "bytes_in": net["bytes_received"],
        "bytes_out": net["bytes_sent"],
        "duplicates": stats["duplicate_messages_ignored"],
        "invalid_frames": stats["invalid_frames"],
        "handler_errors": stats["handler_errors"],
        "queued": hub.queued,
        "acks_pending": acks_pending,
        "outbox": {
            # in cluster mode the cluster's Redis streams hold it: depth and bytes are
            # then what this node holds for its connected pairs
            "backend": ("redis-streams" if hub.config.cluster.backend == "redis"
                        else hub.config.outbox.backend),
            "depth": int(delivery.get("outbox_depth", 0)),
            "bytes": int(delivery.get("outbox_bytes", 0)),
            "resent": int(delivery.get("resent", 0)),
            "evicted": int(delivery.get("evicted", 0)),
            # given up: the receiver kept closing over its size limit (1009) on them
            "too_big_dropped": int(delivery.get("too_big_dropped", 0)),
            "expired": int(delivery.get("expired", 0)),
        },
        "rejected": hub.metrics.rejected_by_reason(stats.get("limits") or {}),
        "limits": dict(stats.get("limits") or {}),
        "cluster": cluster_snapshot(server),
    }


def cluster_snapshot(server: Any) -> Dict[str, Any]:
    """The cluster figures (docs/cluster.md): a single node reports itself alone."""
    cluster = server.cluster
    base: Dict[str, Any] = {
        "backend": "redis" if cluster.distributed else "local", "node_id": cluster.node_id,
        "nodes_alive": 1, "remote_deliveries": 0, "redis_rtt_seconds": 0.0,
        "stream_backlog": 0, "takeovers": 0, "duplicate_frames": 0, "node_deaths": 0,
        "shards": 0, "resyncs": 0, "frames_held_elsewhere": 0, "fanouts_recovered": 0,
        "redis_shards_down": 0, "redis_shards_stalled": 0,
    }
    stats = getattr(cluster, "stats", None)
    if cluster.distributed and stats is not None:
        figures = stats()
        base.update({k: figures[k] for k in base if k in figures and k != "backend"})
    return base


def not_ready(state: str, cluster: Dict[str, Any]) -> str:
    """Why the hub is not ready ("": it is): starting or draining, or, on a cluster node,
    Redis unreachable for longer than the write timeout (received frames are not acked
    meanwhile: they cannot be checked against the record of handled frames)."""
    if state != "ready":
        return state
    stalled = cluster.get("redis_shards_stalled", 0)
    return f"redis unreachable ({stalled} shard(s))" if stalled else ""
