"""The ceiling: a bare ``websockets`` (new asyncio API) + orjson server, no hub logic.

Per received frame it does the minimum a hub must do: decode the JSON and send one
``sys_ack``-shaped frame. ``--echo`` also sends the reply (the payload back to the sender,
re-encoded). A ``custom_bench_broadcast`` frame makes it send ``count`` broadcasts of one
pre-encoded ``sys_std`` frame to every open connection. Prints ``READY`` when listening.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import broadcast, serve

CONNS: set = set()
TASKS: set = set()


def _identity(conn) -> tuple:
    req = conn.request
    query = parse_qs(urlsplit(req.path).query)
    api_key = (query.get("api_key") or [""])[0] or req.headers.get("x-apikey", "")
    platform = (query.get("platform") or [""])[0] or req.headers.get("x-platform", "unknown")
    return api_key, platform, req.headers.get("x-uuid") or str(uuid.uuid4())


async def _broadcast(count: int) -> None:
    frame = orjson.dumps(
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
    for _ in range(count):
        broadcast(list(CONNS), frame, text=True)
        await asyncio.sleep(0)


def make_handler(echo: bool):
    async def handler(conn) -> None:
        api_key, platform, conn_id = _identity(conn)
        CONNS.add(conn)
        try:
            while True:
                raw = await conn.recv(decode=False)
                data = orjson.loads(raw)
                msg_id = data.get("msg_id")
                mtype = data.get("type")
                if msg_id and mtype != "sys_ack":
                    now = time.time()
                    ack = {
                        "ver": 1,
                        "msg_id": str(uuid.uuid4()),
                        "type": "sys_ack",
                        "meta": {"uuid": conn_id, "acked_msg_id": msg_id, "timestamp": now},
                        "payload": {"status": "received", "server_timestamp": now},
                    }
                    await conn.send(orjson.dumps(ack), text=True)
                if mtype == "custom_bench_broadcast":
                    task = asyncio.ensure_future(_broadcast(int(data["payload"]["count"])))
                    TASKS.add(task)
                    task.add_done_callback(TASKS.discard)
                elif echo and mtype == "sys_std":
                    payload = data["payload"]
                    payload["message_dim"] = {"api_key": api_key, "platform": platform}
                    reply = {
                        "ver": 1,
                        "msg_id": f"msg_{uuid.uuid4().hex[:12]}_{int(time.time())}",
                        "type": "sys_std",
                        "meta": {"sender_user": "server", "target_user": api_key,
                                 "platform": platform, "timestamp": time.time()},
                        "payload": payload,
                    }
                    await conn.send(orjson.dumps(reply), text=True)
        except Exception:
            pass
        finally:
            CONNS.discard(conn)

    return handler


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--echo", action="store_true")
    ap.add_argument("--acked-delivery", action="store_true")
    args = ap.parse_args()
    if args.acked_delivery:
        raise SystemExit("acked delivery: not applicable to the bare server")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        make_handler(args.echo),
        "127.0.0.1",
        args.port,
        compression=None,
        max_size=104_857_600,
        backlog=4096,
    ):
        print("READY bare websockets", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
