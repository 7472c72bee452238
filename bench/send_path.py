"""In-process micro-benchmark of the server's send path (no sockets, a few seconds).

``python -m bench.send_path`` times ``send_message`` (to a pair with 1 connection),
``broadcast_message`` (to 100 connections) and ``send_custom_message`` (to one connection
uuid) on a WebSocketServer whose connections are fakes that only count bytes, so what is
measured is the hub's own per-call work: routing, encoding, the outbox, the cluster
backend call. Run it with two PYTHONPATHs to compare two versions of the code.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any, Callable, Coroutine, Dict, List

from maim_message.message import APIMessageBase, BaseMessageInfo, MessageDim, Seg
from maim_message.server import WebSocketServer, create_server_config
from maim_message.server.peer import Peer


class CountingConnection:
    """Accepts every write and keeps nothing but a byte count."""

    def __init__(self) -> None:
        self.context: Any = None
        self.is_open = True
        self.is_writable = True
        self.client_ip = "127.0.0.1"
        self.written = 0

    def send_raw(self, frame: Any, body: bytes = b"") -> bool:
        self.written += len(frame) + len(body)
        return True

    def send_prepared(self, frame: Any) -> bool:
        self.written += frame.nbytes
        return True

    def send_text(self, payload: bytes) -> bool:
        self.written += len(payload)
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.is_open = False

    def write_buffer_size(self) -> int:
        return 0


def _connect(server: WebSocketServer, uuid: str, user: str, platform: str) -> Peer:
    peer = Peer(uuid, user, platform, user, {"client_ip": "127.0.0.1"}, "fp", 0.0)
    conn = CountingConnection()
    conn.context = peer
    server.connection_opened(conn)
    return peer


async def _time(label: str, n: int, runs: int,
                call: Callable[[], Coroutine[Any, Any, Any]],
                ack: Callable[[], None]) -> Dict[str, Any]:
    samples: List[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(n):
            await call()
        samples.append((time.perf_counter() - start) / n * 1e6)
        ack()  # keep the outbox from growing between runs
    return {"case": label, "us_per_call": statistics.median(samples), "min": min(samples)}


async def run(n: int, runs: int) -> List[Dict[str, Any]]:
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, on_auth_extract_user=lambda m: m["api_key"],
        enable_connection_log=False, rate_limit_per_second=None,
        max_connections_per_key=None, outbox_max_per_pair=1_000_000))
    target = _connect(server, "t0", "alice", "qq")
    for i in range(99):
        _connect(server, f"b{i}", f"user{i}", "qq")
    message = APIMessageBase(BaseMessageInfo("qq", "1", 0.0), Seg("text", "hello"),
                             MessageDim("alice", "qq"))

    def ack_all() -> None:
        outbox = server.delivery.outbox
        if outbox is not None:
            for pair in list(outbox.pairs):
                outbox.drop_through(pair, outbox.last_seq(pair))

    return [
        *await _seam_rows(server, n, runs, ack_all),
        await _time("send_message (1 connection)", n, runs,
                    lambda: server.send_message(message), ack_all),
        await _time("broadcast_message (100 connections)", max(1, n // 20), runs,
                    lambda: server.broadcast_message(message), ack_all),
        await _time("send_custom_message (connection uuid)", n, runs,
                    lambda: server.send_custom_message("ping", {"n": 1},
                                                       connection_uuid=target.uuid), ack_all),
    ]


async def _seam_rows(server: WebSocketServer, n: int, runs: int,
                     ack_all: Callable[[], None]) -> List[Dict[str, Any]]:
    """The cluster seam alone: the same delivery with and without the backend call."""
    cluster = getattr(server, "cluster", None)
    if cluster is None or getattr(cluster, "distributed", True):
        return []  # code from before the single send path
    from maim_message.backends.cluster_base import Selector

    data = b'{"type":"sys_std","msg_id":"x","payload":{}}'
    pair = ("alice", "qq")
    delivery, routes = server.delivery, server.routes
    ids = iter(range(10 ** 9))

    async def direct_pair() -> None:
        delivery.to_pair(pair, routes.lookup(*pair), f"d{next(ids)}", data)
        await delivery.committed()

    async def seam_pair() -> None:
        await cluster.send_to_pair(pair, f"s{next(ids)}", data)

    async def direct_conn() -> None:
        delivery.to_connections(["t0"], f"d{next(ids)}", data, only=True)

    async def seam_conn() -> None:
        await cluster.fanout(Selector("conn", "t0"), f"s{next(ids)}", data)

    rows: List[Dict[str, Any]] = []
    for label_a, call_a, label_b, call_b in (
            ("Delivery.to_pair (no seam)", direct_pair,
             "cluster.send_to_pair (LocalCluster)", seam_pair),
            ("Delivery.to_connections (no seam)", direct_conn,
             "cluster.fanout(conn) (LocalCluster)", seam_conn)):
        a: List[Dict[str, Any]] = []
        b: List[Dict[str, Any]] = []
        for _ in range(runs):  # interleaved: both see the same machine load
            a.append(await _time(label_a, n, 1, call_a, ack_all))
            b.append(await _time(label_b, n, 1, call_b, ack_all))
        for label, samples in ((label_a, a), (label_b, b)):
            values = [row["us_per_call"] for row in samples]
            rows.append({"case": label, "us_per_call": statistics.median(values),
                         "min": min(values)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="calls per run")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    for row in asyncio.run(run(args.n, args.runs)):
        print(f"{row['case']:<40} {row['us_per_call']:7.2f} us/call "
              f"(median of {args.runs}; best {row['min']:.2f})")


if __name__ == "__main__":
    main()
