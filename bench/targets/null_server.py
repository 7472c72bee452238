"""The load generator's own ceiling: a server that does (almost) no work.

Raw asyncio protocol, handshake by hand, frames counted by header only; per client frame
it writes one pre-built ack (plus one pre-built reply with ``--echo``); a small frame
containing ``custom_bench_broadcast`` triggers ``count`` pre-built broadcasts to everyone.
Whatever rate the load generator reaches against this target is the most it can measure,
so it must sit far above every real target. Prints ``READY`` when listening.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import re
import resource
import signal
import struct

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets without its C extension

    def apply_mask(data: bytes, key: bytes) -> bytes:
        k = (key * (len(data) // 4 + 1))[: len(data)]
        return bytes(a ^ b for a, b in zip(data, k))

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONNS: set = set()
TASKS: set = set()


def server_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


ACK = server_frame(
    json.dumps(
        {"ver": 1, "msg_id": "126ea460-d387-452d-9114-510f8edf8692", "type": "sys_ack",
         "meta": {"uuid": "bench-null", "acked_msg_id": "msg_0000000000000000000",
                  "timestamp": 1732500000.964},
         "payload": {"status": "received", "server_timestamp": 1732500000.964}}
    ).encode()
)
REPLY = server_frame(b'{"type": "sys_std", "payload": "' + b"x" * 640 + b'"}')


class Null(asyncio.Protocol):
    def __init__(self, echo: bool):
        self.echo = echo
        self.buf = bytearray()
        self.open = False
        self.t = None

    def connection_made(self, transport):  # type: ignore[override]
        self.t = transport

    def connection_lost(self, exc):  # type: ignore[override]
        CONNS.discard(self)

    def data_received(self, data):  # type: ignore[override]
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            m = re.search(rb"(?i)sec-websocket-key:\s*(\S+)", bytes(buf[:end]))
            del buf[: end + 4]
            key = m.group(1) if m else b""
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            self.t.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.open = True
            CONNS.add(self)
        n, pos, count = len(buf), 0, 0
        while n - pos >= 2:
            ln = buf[pos + 1] & 0x7F
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln, hl = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln, hl = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            end = pos + hl + 4 + ln
            if end > n:
                break
            op = buf[pos] & 0x0F
            if op == 8:
                self.t.close()
                return
            if op == 1:
                count += 1
                if ln < 300:
                    key = bytes(buf[pos + hl : pos + hl + 4])
                    body = apply_mask(bytes(buf[pos + hl + 4 : end]), key)
                    if b"custom_bench_broadcast" in body:
                        cnt = json.loads(body)["payload"]["count"]
                        task = asyncio.ensure_future(broadcast(cnt))
                        TASKS.add(task)
                        task.add_done_callback(TASKS.discard)
            pos = end
        del buf[:pos]
        if count:
            self.t.write((ACK + REPLY if self.echo else ACK) * count)


async def broadcast(count: int) -> None:
    for _ in range(count):
        for c in list(CONNS):
            c.t.write(REPLY)
        await asyncio.sleep(0)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--echo", action="store_true")
    ap.add_argument("--acked-delivery", action="store_true")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    srv = await loop.create_server(lambda: Null(args.echo), "127.0.0.1", args.port, backlog=4096)
    print("READY null", flush=True)
    await stop.wait()
    srv.close()


if __name__ == "__main__":
    asyncio.run(main())
