"""Three hub processes on one Redis: users on different nodes, broadcast, a node killed.

Every process here (redis-server, the hub nodes) is started by the test and killed by PID.
Readiness is a printed line (``READY``) or a PING answer, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from maim_message.client import WebSocketClient, create_client_config

from .conftest import ROOT, free_port
from .helpers_api import make_message
from .test_cluster import redis_url  # noqa: F401  (the fixture)

SCRIPT = Path(__file__).parent / "scripts" / "cluster_node.py"


class Node:
    def __init__(self, proc: asyncio.subprocess.Process, name: str, port: int) -> None:
        self.proc, self.name, self.port = proc, name, port

    @classmethod
    async def start(cls, port: int, url: str, name: str, reuse: bool = False,
                    handled: bool = False) -> Node:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        args = [str(SCRIPT), str(port), url, name] + (["reuse"] if reuse else []) + (
            ["handled"] if handled else [])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env)
        node = cls(proc, name, port)
        await node.expect("READY", timeout=20)
        return node

    async def expect(self, prefix: str, timeout: float = 20) -> str:
        assert self.proc.stdout is not None
        while True:
            line = (await asyncio.wait_for(self.proc.stdout.readline(), timeout)).decode()
            assert line, f"node {self.name} exited (rc={self.proc.returncode})"
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    async def ask(self, command: str, answer: str, timeout: float = 20) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.expect(answer, timeout)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 10)


class User:
    """A client whose handler records ``<tag>:<n>`` texts per tag."""

    def __init__(self, port: int, key: str) -> None:
        self.key = key
        self.got: Dict[str, List[int]] = {}
        self.other: List[str] = []
        self.changed = asyncio.Event()
        self.client = WebSocketClient(create_client_config(
            f"ws://127.0.0.1:{port}/ws", key, platform="qq", on_message=self._on,
            reconnect_delay=0.05, max_reconnect_delay=0.2, max_reconnect_attempts=0,
            enable_connection_log=False))

    def _on(self, message: Any, meta: Dict[str, Any]) -> None:
        text = message.message_segment.data
        tag, sep, n = text.rpartition(":")
        if sep:
            self.got.setdefault(tag, []).append(int(n))
        else:
            self.other.append(text)
        self.changed.set()

    def count(self, tag: Optional[str] = None) -> int:
        if tag is not None:
            return len(self.got.get(tag, []))
        return sum(len(v) for v in self.got.values())


async def wait_all(users: List[User], predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(predicate(u) for u in users):
        remaining = deadline - time.monotonic()
        assert remaining > 0, {u.key: {t: len(v) for t, v in u.got.items()} for u in users}
        waiters = [asyncio.ensure_future(u.changed.wait()) for u in users]
        await asyncio.wait(waiters, timeout=min(remaining, 0.5),
                           return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        for u in users:
            u.changed.clear()


async def stop_all(users: List[User], nodes: List[Node]) -> None:
    for user in users:
        await user.client.stop()
    for node in nodes:
        await node.kill()


async def test_three_nodes_route_between_users_and_broadcast(redis_url: str) -> None:  # noqa: F811
    ports = [free_port() for _ in range(3)]
    nodes: List[Node] = []
    users: List[User] = []
    try:
        nodes = list(await asyncio.gather(*(
            Node.start(p, redis_url, f"node{i}") for i, p in enumerate(ports))))
        users = [User(ports[i % 3], f"u{i}") for i in range(6)]
        assert all(await asyncio.gather(*(u.client.connect() for u in users)))
        for i, node in enumerate(nodes):
            assert json.loads(await node.ask("local", "LOCAL")) == [f"u{i}", f"u{i + 3}"]
        deadline = time.monotonic() + 10  # presence writes are queued: read until seen
        while (count := await nodes[0].ask("count", "COUNT")) != "6 6":
            assert time.monotonic() < deadline, count

        per_sender = 200

        async def talk(i: int, user: User) -> None:
            target = f"u{(i + 1) % 6}"  # always a user on another node
            for n in range(per_sender):
                assert await user.client.send_message(make_message(f"from{i}:{n}", target, "qq"))
                if n % 20 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(*(talk(i, u) for i, u in enumerate(users)))
        await wait_all(users, lambda u: u.count() >= per_sender, timeout=30)
        for i, user in enumerate(users):
            sender = (i - 1) % 6
            assert user.got == {f"from{sender}": list(range(per_sender))}, user.key

        assert await nodes[1].ask("bcast hello", "BCAST") == "6"
        await wait_all(users, lambda u: u.other == ["hello"], timeout=10)
    finally:
        await stop_all(users, nodes)


async def test_node_killed_mid_stream_loses_nothing(redis_url: str) -> None:  # noqa: F811
    """Three nodes behind one port (SO_REUSEPORT); the busiest is SIGKILLed mid-stream."""
    if not hasattr(__import__("socket"), "SO_REUSEPORT"):
        import pytest

        pytest.skip("SO_REUSEPORT not available on this OS")
    port = free_port()
    nodes: List[Node] = []
    users: List[User] = []
    try:
        for i in range(3):  # one after the other: each binds the shared port
            nodes.append(await Node.start(port, redis_url, f"node{i}", reuse=True))
        users = [User(port, f"r{i}") for i in range(9)]
        assert all(await asyncio.gather(*(u.client.connect() for u in users)))
        held = {n.name: json.loads(await n.ask("local", "LOCAL")) for n in nodes}
        assert sorted(k for ks in held.values() for k in ks) == sorted(u.key for u in users)
        victim = max(nodes, key=lambda n: len(held[n.name]))
        survivors = [n for n in nodes if n is not victim]
        on_victim = [u for u in users if u.key in held[victim.name]]
        keys = " ".join(u.key for u in users)
        per_tag = 300
        for s in survivors:
            s.send(f"stream {s.name} {per_tag} 0.004 {keys}")
        # kill once the victim's users are well into the stream
        await wait_all(on_victim, lambda u: u.count() >= 40, timeout=30)
        await victim.kill()
        total = per_tag * len(survivors)
        assert min(u.count() for u in on_victim) < total, "the stream ended before the kill"
        for s in survivors:
            await s.expect("SENT", timeout=60)
        await wait_all(users, lambda u: u.count() >= total, timeout=30)
        for user in users:
            for s in survivors:
                seq = user.got.get(s.name, [])
                assert seq == list(range(per_tag)), (user.key, s.name, len(seq))
        # the dead node's presence disappears; every user is connected again elsewhere
        deadline = time.monotonic() + 15
        while True:
            where = json.loads(await survivors[0].ask("conns", "CONNS"))
            if victim.name not in where.values() and len(where) == len(users):
                break
            assert time.monotonic() < deadline, where
            await asyncio.sleep(0.1)
        assert await survivors[1].ask("count", "COUNT") == f"{len(users)} {len(users)}"
    finally:
        await stop_all(users, nodes)
