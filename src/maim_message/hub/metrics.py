"""Prometheus metrics of the hub (``/metrics``).

Gauges and most counters are read from the hub's state when scraped (a custom collector),
so the message path pays nothing for them; only the handler-latency histogram and the
rejected-handshake counter are updated as things happen. Each hub has its own registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..core.limits import (
    BAD_HANDSHAKE,
    CONNECTIONS_PER_KEY,
    HANDSHAKE_TIMEOUT,
    ORIGIN,
    REQUEST_HEAD,
)
from .auth import REJECT_REASONS
from .snapshot import not_ready

if TYPE_CHECKING:
    from .runner import Hub

PREFIX = "maim_hub_"
# Server limits that refuse a connection before it is a WebSocket (by the HTTP handshake).
HANDSHAKE_LIMITS = (ORIGIN, CONNECTIONS_PER_KEY, BAD_HANDSHAKE, REQUEST_HEAD, HANDSHAKE_TIMEOUT)
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
)

# name (without prefix), type, help: the list docs/hub.md documents.
METRICS = (
    ("connections", "gauge", "Open authenticated WebSocket connections, by platform."),
    ("users", "gauge", "Users (API key owners) with at least one connection."),
    ("connections_accepted_total", "counter", "Connections accepted since start."),
    ("messages_in_total", "counter", "Standard messages received from clients (after dedupe)."),
    ("messages_out_total", "counter",
     "Messages written to clients (one per receiving connection; held ones when written)."),
    ("messages_queued_total", "counter",
     "Messages kept in the outbox because their receiver was not connected."),
    ("messages_unroutable_total", "counter",
     "Messages dropped: message_dim names no known key, or nobody to deliver to."),
    ("frames_in_total", "counter", "WebSocket text frames received (messages, acks, custom)."),
    ("frames_out_total", "counter", "WebSocket text frames sent (messages, acks, custom)."),
    ("bytes_in_total", "counter", "Payload bytes received in text frames."),
    ("bytes_out_total", "counter", "Payload bytes sent in text frames."),
    ("duplicate_messages_total", "counter", "Frames dropped as duplicates (same msg_id)."),
    ("invalid_frames_total", "counter", "Frames that were not valid envelopes."),
    ("handler_errors_total", "counter", "Handler calls that raised."),
    ("acks_pending", "gauge", "Messages sent and not yet acknowledged by their receiver."),
    ("outbox_depth", "gauge", "Messages waiting in the outbox."),
    ("outbox_bytes", "gauge", "Bytes waiting in the outbox."),
    ("handler_latency_seconds", "histogram", "Time to route one received message."),
    ("handshakes_rejected_total", "counter", "Refused WebSocket handshakes, by reason."),
    ("limit_hits_total", "counter", "Server limits hit (connection closed or refused), by reason."),
    ("cluster_nodes_alive", "gauge", "Hub nodes alive in the cluster, this one included."),
    ("cluster_remote_deliveries_total", "counter",
     "Messages for connections on this node sent by other nodes."),
    ("cluster_redis_rtt_seconds", "gauge",
     "Round trip of a batch of Redis commands (moving average, slowest shard)."),
    ("cluster_redis_shards_down", "gauge",
     "Redis shards this node cannot reach now (its commands wait and are retried)."),
    ("cluster_node_deaths_total", "counter",
     "Other nodes this node saw die (their alive key expired) and took over from."),
    ("cluster_stream_backlog", "gauge",
     "Unacked messages in the Redis streams of the pairs connected to this node."),
    ("cluster_takeovers_total", "counter",
     "Pairs that connected here with a backlog in their stream (from a dead node, or "
     "queued while the receiver was offline)."),
    ("cluster_duplicate_frames_total", "counter",
     "Re-sent frames not handled again because a node had handled them already."),
    ("cluster_frames_held_elsewhere_total", "counter",
     "Re-sent frames that waited for another live node handling them (frame claims)."),
    ("cluster_resyncs_total", "counter",
     "Re-reads of this node's pairs' streams (a node died, a channel reconnected)."),
    ("cluster_fanouts_recovered_total", "counter",
     "Fan-outs missed on the channel while it reconnected, read from the fan-out log."),
    ("ready", "gauge", "1 while /readyz answers 200: 0 while starting or draining, or while "
     "the cluster's Redis is unreachable."),
    ("start_time_seconds", "gauge", "Unix time the hub started."),
)


class _HubCollector:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def describe(self) -> list:  # no describe-time collection
        return []

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        snap = hub.snapshot()
        conns = GaugeMetricFamily(PREFIX + "connections", METRICS[0][2], labels=["platform"])
        for platform, count in sorted(snap["platforms"].items()):
            conns.add_metric([platform], count)
        yield conns
        yield GaugeMetricFamily(PREFIX + "users", METRICS[1][2], value=snap["users"])
        counters = (
            ("connections_accepted", snap["connections_accepted"]),
            ("messages_in", snap["messages_in"]),
            ("messages_out", snap["messages_out"]),
            ("messages_queued", snap["queued"]),
            ("messages_unroutable", snap["unroutable"]),
            ("frames_in", snap["frames_in"]),
            ("frames_out", snap["frames_out"]),
            ("bytes_in", snap["bytes_in"]),
            ("bytes_out", snap["bytes_out"]),
            ("duplicate_messages", snap["duplicates"]),
            ("invalid_frames", snap["invalid_frames"]),
            ("handler_errors", snap["handler_errors"]),
        )
        docs = {name: text for name, _, text in METRICS}
        for name, value in counters:
            yield CounterMetricFamily(PREFIX + name, docs[name + "_total"], value=value)
        yield GaugeMetricFamily(PREFIX + "acks_pending", docs["acks_pending"],
                                value=snap["acks_pending"])
        yield GaugeMetricFamily(PREFIX + "outbox_depth", docs["outbox_depth"],
                                value=snap["outbox"]["depth"])
        yield GaugeMetricFamily(PREFIX + "outbox_bytes", docs["outbox_bytes"],
                                value=snap["outbox"]["bytes"])
        rejected = CounterMetricFamily(PREFIX + "handshakes_rejected",
                                       docs["handshakes_rejected_total"], labels=["reason"])
        for reason, count in sorted(snap["rejected"].items()):
            rejected.add_metric([reason], count)
        yield rejected
        limits = CounterMetricFamily(PREFIX + "limit_hits", docs["limit_hits_total"],
                                     labels=["reason"])
        for reason, count in sorted(snap["limits"].items()):
            limits.add_metric([reason], count)
        yield limits
        cluster = snap["cluster"]
        for name in ("nodes_alive", "redis_rtt_seconds", "redis_shards_down", "stream_backlog"):
            yield GaugeMetricFamily(PREFIX + "cluster_" + name, docs["cluster_" + name],
                                    value=cluster[name])
        for name in ("remote_deliveries", "takeovers", "duplicate_frames",
                     "frames_held_elsewhere", "resyncs", "fanouts_recovered", "node_deaths"):
            yield CounterMetricFamily(PREFIX + "cluster_" + name,
                                      docs["cluster_" + name + "_total"], value=cluster[name])
        yield GaugeMetricFamily(PREFIX + "ready", docs["ready"],
                                value=0 if not_ready(snap["state"], cluster) else 1)
        yield GaugeMetricFamily(PREFIX + "start_time_seconds", docs["start_time_seconds"],
                                value=hub.started_at)


class HubMetrics:
    """The hub's registry: the latency histogram plus the scrape-time collector."""

    def __init__(self, hub: Hub) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = Histogram(
            PREFIX + "handler_latency_seconds", "Time to route one received message.",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.rejected_counts = dict.fromkeys(REJECT_REASONS, 0)
        self.registry.register(_HubCollector(hub))

    def rejected(self, reason: str) -> None:
        """Count one handshake the key table refused."""
        self.rejected_counts[reason] = self.rejected_counts.get(reason, 0) + 1

    def rejected_by_reason(self, limits: Dict[str, int]) -> Dict[str, int]:
        """Key-table refusals plus the server's handshake-time limit refusals."""
        out = dict(self.rejected_counts)
        for reason in HANDSHAKE_LIMITS:
            out[reason] = int(limits.get(reason, 0))
        return out

    def render(self) -> bytes:
        return generate_latest(self.registry)

    content_type: Any = CONTENT_TYPE_LATEST
