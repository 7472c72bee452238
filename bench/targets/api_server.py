"""One hub script for both API-compatible targets (0.6.8 and ours).

Only the public API-Server interface is used, so the same file runs under the 0.6.8 and
0.7.5 virtualenvs' pythons and under ours. Every load-generator client has its own api_key and
the extractor returns the api_key as the user id, so routing by ``message_dim`` is
per-client. Modes:

- sink (default): ``on_message`` does nothing (the hub still decodes, acks, dispatches).
- ``--echo``: ``on_message`` replies to the sender with ``message_dim = (api_key, platform)``
  of the sending connection.
- always: a ``custom_bench_broadcast`` frame with payload ``{"count": N}`` makes the script
  send N messages to every connected client (``broadcast_message`` when the server has it,
  else one ``send_message`` per connected user, the only way 0.6.8 offers).

Prints ``READY <version> <file>`` when listening. Logging is left unconfigured, as a
library user who configures nothing would run it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import signal
import sys
import time

import maim_message
from maim_message.message import APIMessageBase, BaseMessageInfo, MessageDim, Seg
from maim_message.server import WebSocketServer, create_server_config

PLATFORM = "bench"


def enable_acked_delivery(kwargs: dict) -> None:
    """S6 hook: switch on acknowledged delivery in the server config, if the build has it.

    When the delivery issue lands, make this set the real option (name it in one place).
    """
    from maim_message.server import ServerConfig

    names = {f.name for f in dataclasses.fields(ServerConfig)} if dataclasses.is_dataclass(
        ServerConfig
    ) else set()
    # Ours keeps every server -> client message in an outbox until the peer acks it
    # (docs/delivery.md); the option exists and is on by default. S6 runs with it on and
    # with a load generator that acks, so the outbox drains instead of filling to its bound.
    if "enable_message_cache" in names and "outbox_max_per_pair" in names:
        kwargs["enable_message_cache"] = True
        return
    raise SystemExit("acked delivery: not available in this build")


def broadcast_message(user: str) -> APIMessageBase:
    return APIMessageBase(
        BaseMessageInfo(PLATFORM, "b1", time.time()),
        Seg("text", "x" * 100),
        MessageDim(user, PLATFORM),
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--echo", action="store_true")
    ap.add_argument("--acked-delivery", action="store_true")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    server: WebSocketServer

    async def on_auth(metadata: dict) -> bool:
        return bool(metadata.get("api_key"))

    async def on_auth_extract_user(metadata: dict) -> str:
        return metadata["api_key"]

    async def on_sink(message: APIMessageBase, metadata: dict) -> None:
        return None

    async def on_echo(message: APIMessageBase, metadata: dict) -> None:
        message.message_dim = MessageDim(metadata["api_key"], metadata["platform"])
        await server.send_message(message)

    async def on_broadcast(envelope: dict, metadata: dict) -> None:
        count = int(envelope["payload"]["count"])
        if hasattr(server, "broadcast_message"):
            msg = broadcast_message("*")
            for _ in range(count):
                await server.broadcast_message(msg)
        else:  # 0.6.8: no broadcast; one routed send per connected user
            msgs = [broadcast_message(u) for u in list(server.user_connections)]
            for _ in range(count):
                for m in msgs:
                    await server.send_message(m)

    kwargs = dict(
        host="127.0.0.1",
        port=args.port,
        path="/ws",
        on_auth=on_auth,
        on_auth_extract_user=on_auth_extract_user,
        on_message=on_echo if args.echo else on_sink,
    )
    if args.acked_delivery:
        enable_acked_delivery(kwargs)
    server = WebSocketServer(create_server_config(**kwargs))
    server.register_custom_handler("bench_broadcast", on_broadcast)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    keep = set(asyncio.all_tasks())  # 0.7.5 leaves its server task unreferenced (GC stops it)
    version = getattr(maim_message, "__version__", "?")
    print(f"READY {version} {os.path.dirname(maim_message.__file__)}", flush=True)
    await stop.wait()
    keep.clear()
    try:
        await asyncio.wait_for(server.stop(), 5)
    finally:
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
