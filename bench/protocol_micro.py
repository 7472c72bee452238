"""Micro-benchmark of the sans-I/O WebSocket protocol object: one process, a few seconds.

``python -m bench.protocol_micro [--frames N] [--size BYTES]`` feeds N masked client text
frames through ``ServerProtocol.receive_data`` in 64 KiB reads (as the socket delivers
them), and sends N text frames through ``send_text`` + ``data_to_send`` in groups of 16
(one read slice). Prints frames per second for each; the best of 5 rounds.

``--module PATH`` runs the receive half against an older module that has
``FrameParser(max_size, unmask).feed(data)`` instead (to compare before/after).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import struct
import sys
import time
from typing import Any, Callable, List


def client_frames(count: int, size: int) -> bytes:
    payload = (b'{"type":"sys_std","msg_id":"%d","payload":"' + b"x" * size + b'"}')
    out = bytearray()
    for n in range(count):
        data = payload % n
        mask = os.urandom(4)
        key = int.from_bytes((mask * (len(data) // 4 + 1))[:len(data)], "little")
        masked = (int.from_bytes(data, "little") ^ key).to_bytes(len(data), "little")
        if len(data) < 126:
            out += bytes((0x81, 0x80 | len(data)))
        else:
            out += struct.pack("!BBH", 0x81, 0x80 | 126, len(data))
        out += mask + masked
    return bytes(out)


def best_of(rounds: int, run: Callable[[], int]) -> float:
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        done = run()
        best = max(best, done / (time.perf_counter() - start))
    return best


def receive_new(wire: bytes, count: int) -> Callable[[], int]:
    from maim_message.transport.protocol import OPEN, ServerProtocol

    def run() -> int:
        proto = ServerProtocol(max_message_size=1 << 20, state=OPEN)
        got = 0
        for i in range(0, len(wire), 65536):
            got += len(proto.receive_data(wire[i:i + 65536]))
        assert got == count
        return got

    return run


def receive_old(path: str, wire: bytes, count: int) -> Callable[[], int]:
    spec = importlib.util.spec_from_file_location("old_wsproto", path)
    assert spec is not None and spec.loader is not None
    module: Any = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    from websockets.speedups import apply_mask

    def run() -> int:
        parser = module.FrameParser(1 << 20, apply_mask)
        got = 0
        for i in range(0, len(wire), 65536):
            got += len(parser.feed(wire[i:i + 65536]))
        assert got == count
        return got

    return run


def send_new(count: int, size: int) -> Callable[[], int]:
    from maim_message.transport.protocol import OPEN, ServerProtocol

    payload = b'{"type":"sys_ack","msg_id":"' + b"y" * size + b'"}'

    def run() -> int:
        proto = ServerProtocol(max_message_size=1 << 20, state=OPEN)
        sent = 0
        out: List[Any] = []
        for _ in range(count // 16):
            for _ in range(16):
                proto.send_text(payload)
            out = proto.data_to_send()
            b"".join(out)
            sent += 16
        return sent

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--module", help="an older wsproto.py with FrameParser, to compare")
    args = parser.parse_args()
    wire = client_frames(args.frames, args.size)
    if args.module:
        rate = best_of(5, receive_old(args.module, wire, args.frames))
        print(f"receive (FrameParser.feed, {args.module}): {rate:,.0f} frames/s")
    rate = best_of(5, receive_new(wire, args.frames))
    print(f"receive (ServerProtocol.receive_data): {rate:,.0f} frames/s")
    rate = best_of(5, send_new(args.frames, args.size))
    print(f"send (send_text x16 + data_to_send): {rate:,.0f} frames/s")


if __name__ == "__main__":
    main()
