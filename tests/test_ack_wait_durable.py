"""``send_message(..., ack_timeout=...)`` with the durable outbox: the wait starts before
the send, so an ack that arrives while the commit is awaited is not missed (before, the
waiter was registered after the commit and about half of the quick acks were lost: the
call timed out and returned ``{}`` for a message that was delivered and acked)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from maim_message.server import WebSocketServer, create_server_config

from .conftest import ROOT, free_port
from .helpers_api import make_message

# A peer in its own process that acks every sys_std at once (raw socket, tests/rawws.py).
ACKING_PEER = r"""
import json, os, socket, struct, sys
from tests.rawws import frame, request
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.sendall(request(headers={"x-apikey": "k", "x-platform": "p", "x-uuid": "u1"}))
f = s.makefile("rb")
while f.readline() not in (b"\r\n", b""):
    pass
print("open", flush=True)
def rx(n):
    b = f.read(n)
    if len(b) < n:
        raise SystemExit
    return b
while True:
    _b0, b1 = rx(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", rx(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", rx(8))
    env = json.loads(rx(n))
    if env.get("type") == "sys_std":
        ack = {"ver": 1, "msg_id": os.urandom(6).hex(), "type": "sys_ack",
               "meta": {"uuid": "u1", "acked_msg_id": env["msg_id"]},
               "payload": {"status": "received"}}
        s.sendall(frame(1, json.dumps(ack).encode()))
"""


async def test_quick_acks_are_seen_by_send_message_with_a_durable_outbox(
        tmp_path: Path) -> None:
    port = free_port()
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=port, outbox_path=str(tmp_path / "outbox.db"),
        enable_connection_log=False))
    await server.start()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]))
    peer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ACKING_PEER, str(port), stdout=subprocess.PIPE, env=env)
    try:
        assert peer.stdout is not None
        assert await asyncio.wait_for(peer.stdout.readline(), 10) == b"open\n"
        deadline = asyncio.get_running_loop().time() + 10
        while server.get_connection_count() < 1:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        uuid = next(iter(server.get_connections()))
        answers = [await server.send_message(make_message(f"hi{i}", "k", "p"),
                                             ack_timeout=2.0) for i in range(40)]
        assert answers == [{uuid: True}] * 40  # every ack seen, none timed out
        assert server.delivery.stats()["outbox_depth"] == 0
    finally:
        if peer.returncode is None:
            peer.kill()
        await peer.wait()
        await server.stop()
