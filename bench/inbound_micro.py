"""In-process micro-benchmark of the server's inbound path: seconds, no sockets.

``python -m bench.inbound_micro [--frames N] [--rounds R]`` runs a real ``WebSocketServer``
(sink handler, as the S1 target) and feeds one accepted connection, through a fake
socket transport that drops what is written, the S1 frames (``wsclient.build_frames``,
built before the clock) in 64 KiB reads, as the socket delivers them. Prints the process
CPU per message for every round and the best: frame parsing, decoding, checks, the
message objects, dedupe, the ack and the handler start, without the kernel's share.
Under ``valgrind --tool=callgrind`` the difference between two frame counts gives the
instructions per message, a figure the machine's other load does not move.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any, List, Optional

from bench.wsclient import WSClient, build_frames
from maim_message.server import WebSocketServer, create_server_config
from maim_message.transport.asyncio_connection import WSConnection


class DiscardTransport(asyncio.Transport):
    """What the connection writes is counted and dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closing = False

    def set_write_buffer_limits(self, high: Optional[int] = None,
                                low: Optional[int] = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: Any) -> None:
        self.written += len(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


async def one_round(server: WebSocketServer, frames: int, tag: str) -> float:
    """CPU seconds per message for ``frames`` frames on one new connection."""
    sink = DiscardTransport()
    conn = WSConnection(server._transport)  # type: ignore[arg-type]
    conn.connection_made(sink)
    client = WSClient("/ws", f"key-{tag}", "c", "127.0.0.1", 1)
    request = client.request if isinstance(client.request, bytes) else client.request.encode()
    conn.data_received(request)
    for _ in range(100):
        await asyncio.sleep(0)
        if conn.opened:
            break
    if not conn.opened:
        raise SystemExit("the connection was not accepted")
    wire = b"".join(build_frames(f"key-{tag}", tag, frames))
    reads = [wire[i:i + 65536] for i in range(0, len(wire), 65536)]
    gc.collect()
    start = time.process_time()
    for data in reads:
        conn.data_received(data)
        while conn._backlog:  # the slices after the first run in later loop turns
            await asyncio.sleep(0)
    await asyncio.sleep(0)
    spent = time.process_time() - start
    if sink.written < frames * 50:
        raise SystemExit("not every frame was acked")
    conn.connection_lost(None)
    return spent / frames


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    async def on_auth(metadata: dict) -> bool:
        return True

    async def extract_user(metadata: dict) -> str:
        return str(metadata["api_key"])

    async def on_sink(message: Any, metadata: dict) -> None:
        return None

    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, path="/ws", on_auth=on_auth,
        on_auth_extract_user=extract_user, on_message=on_sink))
    await server.start()
    try:
        results: List[float] = [await one_round(server, args.frames, f"r{n}")
                                for n in range(args.rounds)]
    finally:
        await server.stop()
    print("server CPU per message (us):", " ".join(f"{r * 1e6:.2f}" for r in results),
          f"best {min(results) * 1e6:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
