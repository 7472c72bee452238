"""Drive the published maim-message legacy API from a test (run by the 0.6.8 or 0.7.5 venv).

    legacy_peer.py server <ws|tcp> <port> [token]
    legacy_peer.py client <url> <platform> [token]

Protocol: commands are JSON lines on stdin; events are printed on stdout as
``@@{json}`` lines (0.6.8 itself logs and prints to stdout/stderr, those lines are
ignored by the test). ``@@{"event": "ready"}`` is printed once listening/configured.

Commands: {"cmd": "send", "platform"?: p, "msg": {...}}   (server: MessageBase, client: dict)
          {"cmd": "custom", "platform"?: p, "name": n, "content": {...}}
          {"cmd": "drop", "platform": p}                   (server: close that connection)
          {"cmd": "stop"}
Events:   ready | message {data} | custom {data} | sent {id, ok} | platforms {platforms}
          | connected {value} | stopped
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from maim_message import MessageBase, MessageClient, MessageServer


def emit(**event):
    sys.stdout.write("@@" + json.dumps(event) + "\n")
    sys.stdout.flush()


async def stdin_lines():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=32 * 1024 * 1024)  # big messages in one line
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        yield json.loads(line)


def platforms_of(server):
    conn = server.connection
    table = getattr(conn, "platform_websockets", None)
    if table is None:  # 0.7.5: platform -> Socket.IO sid
        table = getattr(conn, "platform_sids", None)
    if table is None:
        table = getattr(conn, "platform_connections", {})
    return sorted(table)


def server_listening(server):
    conn = server.connection
    if server.mode == "tcp":
        return conn._server is not None
    if hasattr(conn, "sio"):  # 0.7.5: aiohttp site behind a Socket.IO server
        return getattr(conn, "_runner", None) is not None
    return conn.server is not None and getattr(conn.server, "started", False)


async def run_server(mode, port, token):
    server = MessageServer(host="127.0.0.1", port=port, mode=mode, enable_token=bool(token))
    if token:
        server.add_valid_token(token)
    server.register_message_handler(lambda m: emit(event="message", data=m))
    server.register_custom_message_handler("cust", lambda m: emit(event="custom", data=m))
    task = asyncio.create_task(server.run())
    while not server_listening(server):
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    emit(event="ready")

    async def watch():
        last = None
        while True:
            current = platforms_of(server)
            if current != last:
                emit(event="platforms", platforms=current)
                last = current
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    async for cmd in stdin_lines():
        kind = cmd["cmd"]
        if kind == "send":
            ok = await server.send_message(MessageBase.from_dict(cmd["msg"]))
            emit(event="sent", id=cmd.get("id"), ok=bool(ok))
        elif kind == "custom":
            ok = await server.send_custom_message(cmd["platform"], cmd["name"], cmd["content"])
            emit(event="sent", id=cmd.get("id"), ok=bool(ok))
        elif kind == "drop":
            conn = server.connection
            if mode == "tcp":
                await conn._remove_connection(cmd["platform"])
            else:
                await conn.platform_websockets[cmd["platform"]].close(code=1000)
        elif kind == "stop":
            break
    watcher.cancel()
    await server.stop()
    task.cancel()
    emit(event="stopped")


async def run_client(url, platform, token):
    client = MessageClient()
    client.register_message_handler(lambda m: emit(event="message", data=m))
    client.register_custom_message_handler("cust", lambda m: emit(event="custom", data=m))
    await client.connect(url, platform, token=token)
    conn = client.connection
    if hasattr(conn, "reconnect_interval"):
        conn.reconnect_interval = 0.2  # ws client: first retry after 0.2 s instead of 2 s
    task = asyncio.create_task(client.run())
    emit(event="ready")

    async def watch():
        last = None
        while True:
            current = client.is_connected()
            if current != last:
                emit(event="connected", value=current)
                last = current
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    async for cmd in stdin_lines():
        kind = cmd["cmd"]
        if kind == "send":
            ok = await client.send_message(cmd["msg"])
            emit(event="sent", id=cmd.get("id"), ok=bool(ok))
        elif kind == "custom":
            ok = await client.send_custom_message(cmd["name"], cmd["content"])
            emit(event="sent", id=cmd.get("id"), ok=bool(ok))
        elif kind == "stop":
            break
    watcher.cancel()
    await asyncio.wait_for(client.stop(), 5)
    task.cancel()
    emit(event="stopped")


def main():
    role = sys.argv[1]
    if role == "server":
        coro = run_server(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        coro = run_client(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    asyncio.run(asyncio.wait_for(coro, 120))


if __name__ == "__main__":
    try:
        main()
    finally:
        sys.stdout.flush()
        os._exit(0)  # 0.6.8 can hang in interpreter shutdown (its defect #18)
