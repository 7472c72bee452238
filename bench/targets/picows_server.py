"""The platform's practical limit: a ``picows`` + orjson server, no hub logic.

picows parses frames in C (Cython) under a callback-style listener, so this is the fastest
a Python WebSocket hub can be on this machine. Per received frame it does what the bare
target does and nothing else: decode the JSON and send one ``sys_ack``-shaped frame;
``--echo`` also sends the reply (the payload back to the sender, re-encoded); a
``custom_bench_broadcast`` frame makes it send ``count`` broadcasts of one pre-encoded
``sys_std`` frame to every open connection. Prints ``READY`` when listening.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import time
import uuid
from typing import List, Optional
from urllib.parse import parse_qs, urlsplit

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

CONNS: set = set()
TASKS: set = set()
TEXT = WSMsgType.TEXT
CONT = WSMsgType.CONTINUATION


def _broadcast_frame() -> bytes:
    return orjson.dumps(
        {
            "ver": 1,
            "msg_id": f"msg_{uuid.uuid4().hex[:12]}_{int(time.time())}",
            "type": "sys_std",
            "meta": {"sender_user": "server", "target_user": None, "platform": "bench",
                     "timestamp": time.time()},
            "payload": {
                "message_info": {"platform": "bench", "message_id": "b1", "time": time.time()},
                "message_segment": {"type": "text", "data": "x" * 100},
                "message_dim": {"api_key": "*", "platform": "bench"},
            },
        }
    )


async def _broadcast(count: int) -> None:
    frame = _broadcast_frame()
    for _ in range(count):
        for conn in list(CONNS):
            conn.transport.send(TEXT, frame)
        await asyncio.sleep(0)


class Listener(WSListener):
    def __init__(self, request: WSUpgradeRequest, echo: bool) -> None:
        query = parse_qs(urlsplit(request.path.decode() if isinstance(request.path, bytes)
                                  else request.path).query)
        headers = request.headers
        self.api_key = (query.get("api_key") or [""])[0] or headers.get("x-apikey", "")
        self.platform = (query.get("platform") or [""])[0] or headers.get("x-platform",
                                                                           "unknown")
        self.conn_id = headers.get("x-uuid") or str(uuid.uuid4())
        self.echo = echo
        self.transport: Optional[WSTransport] = None
        self.parts: Optional[List[bytes]] = None  # a fragmented message being collected

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        CONNS.add(self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        CONNS.discard(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if kind == WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
            return
        if kind == TEXT and frame.fin:
            self.message(transport, frame.get_payload_as_memoryview())
        elif kind == TEXT or kind == CONT:
            if self.parts is None:
                self.parts = []
            self.parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                data, self.parts = b"".join(self.parts), None
                self.message(transport, data)

    def message(self, transport: WSTransport, raw) -> None:
        data = orjson.loads(raw)
        msg_id = data.get("msg_id")
        mtype = data.get("type")
        if msg_id and mtype != "sys_ack":
            now = time.time()
            ack = {
                "ver": 1,
                "msg_id": str(uuid.uuid4()),
                "type": "sys_ack",
                "meta": {"uuid": self.conn_id, "acked_msg_id": msg_id, "timestamp": now},
                "payload": {"status": "received", "server_timestamp": now},
            }
            transport.send(TEXT, orjson.dumps(ack))
        if mtype == "custom_bench_broadcast":
            task = asyncio.ensure_future(_broadcast(int(data["payload"]["count"])))
            TASKS.add(task)
            task.add_done_callback(TASKS.discard)
        elif self.echo and mtype == "sys_std":
            payload = data["payload"]
            payload["message_dim"] = {"api_key": self.api_key, "platform": self.platform}
            reply = {
                "ver": 1,
                "msg_id": f"msg_{uuid.uuid4().hex[:12]}_{int(time.time())}",
                "type": "sys_std",
                "meta": {"sender_user": "server", "target_user": self.api_key,
                         "platform": self.platform, "timestamp": time.time()},
                "payload": payload,
            }
            transport.send(TEXT, orjson.dumps(reply))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--echo", action="store_true")
    ap.add_argument("--acked-delivery", action="store_true")
    args = ap.parse_args()
    if args.acked_delivery:
        raise SystemExit("acked delivery: not applicable to the picows server")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await ws_create_server(
        lambda request: Listener(request, args.echo),
        "127.0.0.1",
        args.port,
        max_frame_size=104_857_600,
        backlog=4096,
    )
    print("READY picows", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
