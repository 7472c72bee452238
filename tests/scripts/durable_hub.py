"""A hub process for the durable-outbox kill test, driven by lines on stdin.

argv: <port> <outbox sqlite path>. Commands: ``send <key> <first> <last>`` sends messages
``first..last`` (text = the number) to (key, "qq") and prints ``SENT <last>`` once all
were accepted. Prints ``READY`` when listening.
"""

import asyncio
import sys

from maim_message.message import APIMessageBase, BaseMessageInfo, MessageDim, Seg
from maim_message.server import WebSocketServer, create_server_config


async def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=port, outbox_path=path,
        on_auth_extract_user=lambda m: m["api_key"]))
    await server.start()
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        _cmd, key, first, last = line.split()
        for n in range(int(first), int(last) + 1):
            msg = APIMessageBase(BaseMessageInfo("qq", str(n), 1.0), Seg("text", str(n)),
                                 MessageDim(key, "qq"))
            await server.send_message(msg)
        print(f"SENT {last}", flush=True)
    await server.stop()


asyncio.run(main())
