"""What is measured: scenarios, their sizes (full and smoke), metrics and goals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

MiB = 2**20


@dataclass(frozen=True)
class Metric:
    key: str  # key in the load generator's result
    label: str
    unit: str
    higher_is_better: bool = True
    digits: int = 0


@dataclass(frozen=True)
class Goal:
    """``ours <op> factor x <ref>`` where ref is a target name or ``abs`` (a fixed value)."""

    metric: str
    ref: str  # a target name ("bare", "picows", "0.6.8", ...) or "abs"
    factor: float
    text: str


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    kind: str  # load generator scenario
    full: Dict
    smoke: Dict
    metrics: Tuple[Metric, ...]
    echo: bool = False  # server replies to the sender
    fresh: bool = False  # a new server process per run (RSS measurements)
    acked: bool = False  # S6: acknowledged delivery on (server flag + client acks)
    null: bool = False  # also run against the null server (load generator ceiling)
    targets: Optional[Tuple[str, ...]] = None  # None: every target
    same_as: Optional[str] = None  # other targets' numbers come from this scenario (S6)
    goals: Tuple[Goal, ...] = field(default=())
    timeout: float = 120.0
    runs: int = 3  # full mode; the median is reported
    socketio: bool = False  # S7: clients speak the 0.7 (Socket.IO) wire, except "ours-0.6"


RATE = Metric("msgs_per_s", "msgs/s", "msgs/s")
P50 = Metric("p50_ms", "p50", "ms", higher_is_better=False, digits=3)
P99 = Metric("p99_ms", "p99", "ms", higher_is_better=False, digits=3)
DELIV = Metric("deliveries_per_s", "deliveries/s", "deliveries/s")
HS = Metric("handshakes_per_s", "handshakes/s", "handshakes/s")
KIB = Metric("kib_per_conn", "RSS per conn", "KiB", higher_is_better=False, digits=1)
SECS = Metric("seconds", "time", "s", higher_is_better=False, digits=3)
PEAK = Metric("peak_over_payload", "peak RSS growth / payload", "x", False, digits=2)

S1_GOALS = (
    Goal("msgs_per_s", "0.6.8", 10.0, ">= 10x 0.6.8"),
    Goal("msgs_per_s", "bare", 1.0, ">= 1.0x bare"),
    Goal("msgs_per_s", "picows", 0.9, ">= 0.9x picows"),
)
S2_GOALS = (
    Goal("p50_ms", "bare", 1.0, "p50 <= bare"),
    Goal("p99_ms", "bare", 1.0, "p99 <= bare"),
)
S4_HS = Goal("handshakes_per_s", "0.6.8", 1.5, "handshakes >= 1.5x 0.6.8")
S3_GOAL = Goal("deliveries_per_s", "bare", 1.0, ">= 1.0x bare")
S5_GOAL = Goal("peak_over_payload", "abs", 3.0, "intact, peak growth < 3x payload")

SCENARIOS: List[Scenario] = [
    Scenario("S1a", "inbound, 1 client x 50,000 msgs", "inbound",
             {"clients": 1, "per_client": 50000}, {"clients": 1, "per_client": 300},
             (RATE,), null=True, runs=5, goals=S1_GOALS),
    Scenario("S1b", "inbound, 10 clients x 5,000 msgs", "inbound",
             {"clients": 10, "per_client": 5000}, {"clients": 10, "per_client": 30},
             (RATE,), null=True, runs=5, goals=S1_GOALS),
    Scenario("S3", "broadcast, 100 clients x 1,000 broadcasts", "broadcast",
             {"clients": 100, "count": 1000}, {"clients": 10, "count": 20},
             (DELIV,), null=True, runs=5, goals=(S3_GOAL,)),
    Scenario("S2a", "round trip, 1 in flight (2,000 after 200 warm-up)", "rtt_latency",
             {"count": 2000, "warm": 200}, {"count": 40, "warm": 5},
             (P50, P99), echo=True, null=True, runs=5, goals=S2_GOALS),
    Scenario("S2b", "round trip, 32 in flight, 20,000 msgs", "rtt_throughput",
             {"count": 20000, "inflight": 32}, {"count": 200, "inflight": 32},
             (RATE,), echo=True, null=True, runs=5),
    Scenario("S4a", "idle connections: 1,000", "idle",
             {"count": 1000}, {"count": 50}, (HS, KIB), fresh=True, null=True, goals=(S4_HS,)),
    Scenario("S4b", "idle connections: 10,000", "idle",
             {"count": 10000}, {"count": 200}, (HS, KIB), fresh=True, null=True, timeout=300,
             goals=(S4_HS, Goal("kib_per_conn", "abs", 15.0, "<= 15 KiB per conn"))),
    Scenario("S5a", "media: one 5 MiB base64 image Seg, echoed back", "media",
             {"size": 5 * MiB}, {"size": 64 * 1024}, (SECS, PEAK), echo=True, fresh=True,
             goals=(S5_GOAL,)),
    Scenario("S5b", "media: one 20 MiB base64 image Seg, echoed back", "media",
             {"size": 20 * MiB}, {"size": 256 * 1024}, (SECS, PEAK), echo=True, fresh=True,
             goals=(S5_GOAL,)),
    # S6: acknowledged delivery on (server --acked-delivery, clients ack like 0.6.8 clients).
    # Runs for ours only; reported as "not in this build" until the option exists.
    Scenario("S6a", "S1a with acknowledged delivery", "inbound",
             {"clients": 1, "per_client": 50000, "ack_messages": True},
             {"clients": 1, "per_client": 300, "ack_messages": True},
             (RATE,), acked=True, runs=5, targets=("ours",), same_as="S1a"),
    Scenario("S6b", "S2b with acknowledged delivery", "rtt_throughput",
             {"count": 20000, "inflight": 32, "ack_messages": True},
             {"count": 200, "inflight": 32, "ack_messages": True},
             (RATE,), echo=True, acked=True, runs=5, targets=("ours",), same_as="S2b"),
]

# S7: 0.7-style clients (Socket.IO over a direct Engine.IO WebSocket, wire-0.7.md §8.2):
# ours on its Socket.IO dialect vs the published 0.7.5 server vs ours on the 0.6 path
# ("ours-0.6": the same load, raw WebSocket frames), same run.
S7_TARGETS = ("ours", "0.7.5", "ours-0.6")
S7_GOALS = (
    Goal("msgs_per_s", "0.7.5", 5.0, ">= 5x 0.7.5"),
    Goal("msgs_per_s", "ours-0.6", 0.7, ">= 0.7x ours on the 0.6 path"),
)
SCENARIOS += [
    Scenario("S7a", "inbound from 0.7 clients, 1 client x 20,000 msgs", "inbound",
             {"clients": 1, "per_client": 20000}, {"clients": 1, "per_client": 300},
             (RATE,), runs=5, targets=S7_TARGETS, socketio=True, goals=S7_GOALS),
    Scenario("S7b", "inbound from 0.7 clients, 10 clients x 2,000 msgs", "inbound",
             {"clients": 10, "per_client": 2000}, {"clients": 10, "per_client": 30},
             (RATE,), runs=5, targets=S7_TARGETS, socketio=True, goals=S7_GOALS),
]

BY_ID = {s.id: s for s in SCENARIOS}
