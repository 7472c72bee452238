"""Cluster mode on a real redis-server: nodes in one process (fast, exact assertions).

The multi-process tests (3 hub processes, one killed mid-stream) are in
test_cluster_processes.py and reuse :class:`RedisServer` from here.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

import pytest

from maim_message.backends.cluster_base import LocalCluster, create_cluster
from maim_message.client import WebSocketClient, create_client_config
from maim_message.errors import ConfigError, ServerStartError
from maim_message.server import WebSocketServer, create_server_config

from .conftest import free_port
from .helpers_api import make_message

if os.environ.get("CI"):  # in CI a missing redis-py is an error, not a skip
    import redis.asyncio as redis_asyncio
else:
    redis_asyncio = pytest.importorskip("redis.asyncio")


class RedisServer:
    """A throwaway ``redis-server`` on a free port (no persistence), killed by PID."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            if os.environ.get("CI"):
                raise RuntimeError("redis-server is not installed (scripts/test installs it)")
            pytest.skip("redis-server not installed (apt-get install redis-server)")
        self.port = free_port()
        self.url = self.url_for(self.port)
        self.proc = self._spawn(exe)

    def _spawn(self, exe: str) -> subprocess.Popen:  # type: ignore[type-arg]
        return subprocess.Popen(
            [exe, *self.listen_args(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def restart(self) -> None:
        """Start it again on the same port (after it was stopped or killed)."""
        exe = shutil.which("redis-server")
        assert exe is not None and self.proc.poll() is not None
        self.proc = self._spawn(exe)

    def url_for(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def listen_args(self, port: int) -> List[str]:
        return ["--port", str(port)]

    async def ready(self, timeout: float = 10.0) -> None:
        client = redis_asyncio.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if await client.ping():
                        return
                except OSError:
                    pass
                except Exception as exc:  # redis ConnectionError while it starts
                    if "Connection" not in type(exc).__name__:
                        raise
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not answer PING")
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    server = RedisServer()
    try:
        await server.ready()
        yield server.url
    finally:
        server.stop()


def node(url: str, name: str, **extra: Any) -> WebSocketServer:
    return WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, on_auth_extract_user=lambda m: m["api_key"],
        cluster_backend="redis", cluster_redis_url=url, cluster_node_id=name,
        cluster_heartbeat_interval=0.2, cluster_node_ttl=1.0, enable_connection_log=False,
        **extra))


class Receiver:
    """A WebSocketClient that records the text of what it gets."""

    def __init__(self, port: int, key: str, platform: str = "qq") -> None:
        self.texts: List[str] = []
        self.custom: List[Any] = []
        self.changed = asyncio.Event()
        self.client = WebSocketClient(create_client_config(
            f"ws://127.0.0.1:{port}/ws", key, platform=platform, on_message=self._on,
            reconnect_delay=0.05, max_reconnect_delay=0.2, max_reconnect_attempts=0,
            enable_connection_log=False))
        self.client.register_custom_handler("note", self._on_custom)

    def _on(self, message: Any, meta: Dict[str, Any]) -> None:
        self.texts.append(message.message_segment.data)
        self.changed.set()

    def _on_custom(self, message: Any, *rest: Any) -> None:
        self.custom.append(message)
        self.changed.set()

    async def wait(self, predicate: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out; got {self.texts[-5:]} {self.custom[-3:]}"
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass


async def until(predicate: Any, timeout: float = 10.0) -> None:
    """Poll a condition that has no event (cluster presence), with a bound."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def presence(server: WebSocketServer, users: int) -> None:
    """Re-read cluster presence until ``server`` sees ``users`` users (writes are queued)."""
    cluster = server.cluster
    assert cluster is not None
    deadline = time.monotonic() + 10
    while True:
        await cluster.refresh()  # type: ignore[attr-defined]
        if server.get_user_count() == users:
            return
        assert time.monotonic() < deadline, f"{server.get_user_count()} users, not {users}"
        await asyncio.sleep(0.02)


async def started(*servers: WebSocketServer) -> Tuple[WebSocketServer, ...]:
    for server in servers:
        await server.start()
    return servers


# -- configuration -------------------------------------------------------------------------


def test_local_is_the_default_and_keeps_the_fast_path() -> None:
    server = WebSocketServer(create_server_config(host="127.0.0.1", port=0))
    # one send path: the server always has a backend; the default one is local
    assert isinstance(server.cluster, LocalCluster) and not server.cluster.distributed
    assert isinstance(create_cluster(server.config), LocalCluster)


def test_redis_backend_needs_a_url_and_unknown_backends_fail() -> None:
    with pytest.raises(ConfigError, match="cluster_redis_url"):
        create_cluster(create_server_config(cluster_backend="redis"))
    with pytest.raises(ConfigError, match="unknown backend"):
        create_cluster(create_server_config(cluster_backend="zookeeper"))


async def test_unreachable_redis_fails_start_without_leaking_the_password() -> None:
    port = free_port()
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, cluster_backend="redis",
        cluster_redis_url=f"redis://:s3cret-pass@127.0.0.1:{port}/0"))
    with pytest.raises(ServerStartError) as info:
        await server.start()
    assert "s3cret-pass" not in str(info.value)
    assert not server.is_running()


@pytest.mark.parametrize("url", [
    "redis://:s3cret-pass@127.0.0.1:{port}/0",
    "redis://127.0.0.1:{port}/0?password=s3cret-pass",  # redis-py reads it there too
    "redis://127.0.0.1:{port}/0?socket_timeout=1&password=s3cret-pass&username=me",
])
async def test_a_password_anywhere_in_the_url_stays_out_of_errors_and_logs(
        url: str, caplog: pytest.LogCaptureFixture) -> None:
    from maim_message.backends.redis_shards import safe_url

    url = url.format(port=free_port())
    assert "s3cret-pass" not in safe_url(url) and "127.0.0.1" in safe_url(url)
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, cluster_backend="redis", cluster_redis_url=url))
    with caplog.at_level("DEBUG"), pytest.raises(ServerStartError) as info:
        await server.start()
    assert "s3cret-pass" not in str(info.value) and "127.0.0.1" in str(info.value)
    assert "s3cret-pass" not in caplog.text


async def test_a_redis_url_redis_py_refuses_fails_start_with_what_is_wrong() -> None:
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, cluster_backend="redis",
        cluster_redis_url="redis://:s3cret-pass@127.0.0.1:6379/0?timeout=3"))
    with pytest.raises(ServerStartError, match=r"unknown option \?timeout=") as info:
        await server.start()
    assert "s3cret-pass" not in str(info.value) and not server.is_running()


async def test_local_cluster_delivers_like_a_single_hub() -> None:
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, on_auth_extract_user=lambda m: m["api_key"],
        enable_connection_log=False))
    await server.start()
    local = LocalCluster("solo")
    await local.start(server)
    rx = Receiver(server.port or 0, "alice")
    try:
        assert await rx.client.connect()
        await until(lambda: local.user_count() == 1)
        sent = await local.send_to_pair(("alice", "qq"), "m1", _std("hello"))
        assert list(sent.values()) == [True]
        await local.fanout(("all", None), "m2", _std("everyone"))
        await rx.wait(lambda: rx.texts == ["hello", "everyone"])
        assert list(local.connections()) == list(server.get_connections())
    finally:
        await rx.client.stop()
        await local.stop()
        await server.stop()


def _std(text: str) -> bytes:
    import orjson

    from maim_message.core.envelope import std_envelope

    msg = make_message(text, "x", "qq")
    return orjson.dumps(std_envelope("id_" + text, msg.to_dict(), {}))


# -- routing across nodes ------------------------------------------------------------------


async def test_send_message_reaches_a_user_on_another_node(redis_url: str) -> None:
    n1, n2 = await started(node(redis_url, "n1"), node(redis_url, "n2"))
    rx = Receiver(n2.port or 0, "bob")
    try:
        assert await rx.client.connect()
        await until(lambda: n2.get_connection_count() == 1)
        results: Dict[str, bool] = {}
        for i in range(50):
            results = await n1.send_message(make_message(str(i), "bob", "qq"))
        assert results == {rx.client.get_connection_uuid(): True}
        await rx.wait(lambda: len(rx.texts) == 50)
        assert rx.texts == [str(i) for i in range(50)]
        acked = await n1.send_message(make_message("acked?", "bob", "qq"), ack_timeout=5.0)
        assert list(acked.values()) == [True]
    finally:
        await rx.client.stop()
        await n1.stop()
        await n2.stop()


async def test_offline_queue_is_delivered_on_any_node_in_order(redis_url: str) -> None:
    n1, n2 = await started(node(redis_url, "n1"), node(redis_url, "n2"))
    rx: Optional[Receiver] = None
    try:
        for i in range(100):
            assert await n1.send_message(make_message(str(i), "carol", "qq")) == {}
        rx = Receiver(n2.port or 0, "carol")
        assert await rx.client.connect()
        await n2.send_message(make_message("100", "carol", "qq"))
        await rx.wait(lambda: len(rx.texts) >= 101)
        assert rx.texts == [str(i) for i in range(101)]
        # everything was acked: the pair's stream is gone from Redis
        client = redis_asyncio.Redis.from_url(redis_url)
        try:
            await until(lambda: n2.delivery.stats()["outbox_depth"] == 0)
            keys = [k async for k in client.scan_iter("maim_hub:s:*")]
            for _ in range(100):
                if not keys:
                    break
                await asyncio.sleep(0.02)
                keys = [k async for k in client.scan_iter("maim_hub:s:*")]
            assert keys == []
        finally:
            await client.aclose()
    finally:
        if rx is not None:
            await rx.client.stop()
        await n1.stop()
        await n2.stop()


async def test_broadcast_custom_and_queries_span_nodes(redis_url: str) -> None:
    n1, n2, n3 = await started(node(redis_url, "n1"), node(redis_url, "n2"),
                               node(redis_url, "n3"))
    rxs = [Receiver(n.port or 0, f"user{i}", "qq" if i % 2 == 0 else "tg")
           for i, n in enumerate((n1, n2, n3, n1, n2, n3))]
    try:
        for rx in rxs:
            assert await rx.client.connect()
        cluster = n1.cluster
        assert cluster is not None
        await until(lambda: sum(n.get_connection_count() for n in (n1, n2, n3)) == 6)
        await presence(n1, 6)
        conns = n1.get_connections()
        assert len(conns) == 6
        assert {info["node"] for info in conns.values()} == {"n1", "n2", "n3"}

        results = await n2.broadcast_message(make_message("all", "x", "qq"))
        assert len(results) == 6 and all(results.values())
        await n3.broadcast_message(make_message("qq only", "x", "qq"), platform="qq")
        await n1.send_custom_message("note", {"to": "user5"}, target_user="user5")
        await n1.send_custom_message("note", {"to": "tg"}, target_platform="tg")
        uuid4 = rxs[4].client.get_connection_uuid()
        assert uuid4 is not None
        await n3.send_custom_message("note", {"to": "conn4"}, connection_uuid=uuid4)
        for i, rx in enumerate(rxs):
            want = ["all", "qq only"] if i % 2 == 0 else ["all"]
            await rx.wait(lambda rx=rx, want=want: rx.texts == want)
        for i, rx in enumerate(rxs):
            expected = set()
            if i % 2 == 1:
                expected.add("tg")
            if i == 5:
                expected.add("user5")
            if i == 4:
                expected.add("conn4")
            await rx.wait(lambda rx=rx, e=expected: len(rx.custom) >= len(e))
            got = {m["to"] for m in rx.custom}
            assert got == expected, (i, rx.custom)
    finally:
        for rx in rxs:
            await rx.client.stop()
        for n in (n1, n2, n3):
            await n.stop()


async def test_stopped_node_leaves_presence_and_survivor_reaps_a_dead_one(
        redis_url: str) -> None:
    n1, n2, n3 = await started(node(redis_url, "n1"), node(redis_url, "n2"),
                               node(redis_url, "n3"))
    rx2, rx3 = Receiver(n2.port or 0, "dave"), Receiver(n3.port or 0, "erin")
    try:
        assert await rx2.client.connect()
        assert await rx3.client.connect()
        c1 = n1.cluster
        assert c1 is not None
        await until(lambda: n2.get_connection_count() == 1 and n3.get_connection_count() == 1)
        await presence(n1, 2)
        await rx2.client.stop()
        await n2.stop()  # graceful: its presence goes at once
        await c1.refresh()  # type: ignore[attr-defined]
        assert {i["node"] for i in n1.get_connections().values()} == {"n3"}
        # n3 "dies": its heartbeat stops, its entries stay until a survivor reaps them
        c3 = n3.cluster
        assert c3 is not None
        for task in c3._tasks:  # type: ignore[attr-defined]
            task.cancel()
        await until(lambda: c1.reaped >= 1, timeout=10)  # type: ignore[attr-defined]
        await c1.refresh()  # type: ignore[attr-defined]
        assert n1.get_connections() == {}
        assert n1.get_user_count() == 0
    finally:
        await rx2.client.stop()
        await rx3.client.stop()
        for n in (n1, n2, n3):
            await n.stop()


async def test_a_receiver_on_a_node_that_joined_after_a_heartbeat_is_reported(
        redis_url: str) -> None:
    """send_message lists a receiver on a node that started after the sender's last
    heartbeat (not yet in its list of live nodes): only nodes seen gone are left out."""
    n1 = node(redis_url, "n1")
    n2 = node(redis_url, "n2")
    await n1.start()
    cluster: Any = n1.cluster
    await until(lambda: cluster._alive is not None)  # n1's first heartbeat: n2 not there
    await n2.start()
    rx = Receiver(n2.port or 0, "bob")
    try:
        assert await rx.client.connect()
        await until(lambda: n2.get_connection_count() == 1)
        result: Dict[str, bool] = {}
        for i in range(3):
            result = await n1.send_message(make_message(str(i), "bob", "qq"))
        assert result == {rx.client.get_connection_uuid(): True}
    finally:
        await rx.client.stop()
        await n1.stop()
        await n2.stop()
