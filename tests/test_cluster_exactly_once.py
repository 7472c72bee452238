"""Exactly-once to handlers across nodes, sharded Redis, and a Redis restart (AOF on).

Real processes: redis-server(s) and hub nodes (tests/scripts/cluster_node.py) are started
here and killed by PID; readiness is a printed line or a PING answer.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, AsyncIterator, List

import pytest

from .conftest import free_port
from .helpers_api import make_message
from .test_cluster import RedisServer, redis_asyncio
from .test_cluster_processes import Node, User, stop_all, wait_all

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def two_redis() -> AsyncIterator[List[str]]:
    servers = [RedisServer(), RedisServer()]
    try:
        for server in servers:
            await server.ready()
        yield [s.url for s in servers]
    finally:
        for server in servers:
            server.stop()


async def send_stream(user: User, target: str, tag: str, count: int) -> None:
    for n in range(count):
        await user.client.send_message(make_message(f"{tag}:{n}", target, "qq"))
        if n % 10 == 0:
            await asyncio.sleep(0.002)


@pytest.mark.parametrize("shards", [1, 2])
async def test_a_client_resending_to_a_survivor_gets_each_frame_handled_once(
        shards: int) -> None:
    """The sender's node is SIGKILLed mid-stream; the client reconnects to the other node
    on the same port and re-sends every unacked frame: none lost, none forwarded twice.
    With two Redis shards the handled-frame record is read on every shard."""
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("SO_REUSEPORT not available on this OS")
    servers = [RedisServer() for _ in range(shards)]
    for server in servers:
        await server.ready()
    url = ",".join(server.url for server in servers)
    port, rx_port = free_port(), free_port()
    nodes: List[Node] = []
    users: List[User] = []
    try:
        victim = await Node.start(port, url, "victim", reuse=True, handled=True)
        nodes.append(victim)
        sender = User(port, "tx")
        users.append(sender)
        assert await sender.client.connect()
        assert json.loads(await victim.ask("local", "LOCAL")) == ["tx"]
        nodes.append(await Node.start(port, url, "survivor", reuse=True, handled=True))
        nodes.append(await Node.start(rx_port, url, "rxnode", handled=True))
        receiver = User(rx_port, "rx")
        users.append(receiver)
        assert await receiver.client.connect()
        total = 400
        stream = asyncio.ensure_future(send_stream(sender, "rx", "s", total))
        await wait_all([receiver], lambda u: u.count() >= 60, timeout=30)
        await victim.kill()
        assert receiver.count() < total, "the stream ended before the kill"
        await asyncio.wait_for(stream, 60)
        await wait_all([receiver], lambda u: u.count() >= total, timeout=40)
        got = receiver.got["s"]
        assert sorted(got) == list(range(total)), "lost or handled twice"
        deadline = time.monotonic() + 15  # the survivors notice the death (node_ttl 1 s)
        while json.loads(await nodes[1].ask("stats", "STATS"))["node_deaths"] < 1:
            assert time.monotonic() < deadline, "the survivor never saw the victim die"
            await asyncio.sleep(0.1)
        assert sorted(receiver.got["s"]) == list(range(total))  # nothing re-delivered since
    finally:
        await stop_all(users, nodes)
        for server in servers:
            server.stop()


async def test_two_redis_shards_carry_pairs_in_order(two_redis: List[str]) -> None:
    urls = ",".join(two_redis)
    ports = [free_port(), free_port()]
    nodes: List[Node] = []
    users: List[User] = []
    try:
        nodes = [await Node.start(p, urls, f"n{i}") for i, p in enumerate(ports)]
        users = [User(ports[i % 2], f"u{i}") for i in range(8)]
        assert all(await asyncio.gather(*(u.client.connect() for u in users)))
        per_sender = 100

        async def talk(i: int, user: User) -> None:
            await send_stream(user, f"u{(i + 1) % 8}", f"from{i}", per_sender)

        await asyncio.gather(*(talk(i, u) for i, u in enumerate(users)))
        await wait_all(users, lambda u: u.count() >= per_sender, timeout=30)
        for i, user in enumerate(users):
            assert user.got == {f"from{(i - 1) % 8}": list(range(per_sender))}, user.key
        # both shards hold pair routing (consistent hashing spread the 8 pairs)
        for url in two_redis:
            client = redis_asyncio.Redis.from_url(url)
            try:
                assert [k async for k in client.scan_iter("maim_hub:w:*")], url
            finally:
                await client.aclose()
        stats = json.loads(await nodes[0].ask("stats", "STATS"))
        assert stats["shards"] == 2
    finally:
        await stop_all(users, nodes)


class AofRedis:
    """redis-server with AOF on, restartable on the same port and directory."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server not installed")
        self.exe, self.dir = exe, workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Any = None

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir),
             "--protected-mode", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis_asyncio.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    if await client.ping():
                        return
                except Exception:
                    assert time.monotonic() < deadline, "redis-server did not start"
                    await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


async def test_a_redis_restarted_with_aof_loses_nothing(tmp_path: Path) -> None:
    redis = AofRedis(tmp_path)
    await redis.start()
    ports = [free_port(), free_port()]
    nodes: List[Node] = []
    users: List[User] = []
    try:
        nodes = [await Node.start(p, redis.url, f"n{i}") for i, p in enumerate(ports)]
        sender, receiver = User(ports[0], "tx"), User(ports[1], "rx")
        users = [sender, receiver]
        assert await sender.client.connect()
        await receiver.client.connect()
        await receiver.client.stop()  # offline: what is sent waits in its stream
        await send_stream(sender, "rx", "q", 50)
        redis.stop(signal.SIGKILL)  # appendfsync always: every acknowledged write is on disk
        await redis.start()
        await send_stream(sender, "rx", "q2", 20)  # the nodes reconnect and go on
        receiver = User(ports[1], "rx")
        users.append(receiver)
        assert await receiver.client.connect()
        await wait_all([receiver], lambda u: u.count() >= 70, timeout=40)
        assert receiver.got == {"q": list(range(50)), "q2": list(range(20))}
    finally:
        await stop_all(users, nodes)
        redis.stop()
