"""A frame re-sent to another node while a live node is still handling it (real Redis).

The client's connection to node A dropped while A's handler of frame f1 was running; the
client reconnects to node B and re-sends f1. B finds A's claim (A is alive) and waits:
once A records the frame, B acks the re-send as a duplicate; if A is gone instead, B
handles it. Either way the handler runs once.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Dict, List, Tuple

import orjson
import pytest
import websockets
from redis import asyncio as redis_asyncio

from .helpers_api import envelope, make_message
from .test_cluster import Receiver, RedisServer, node, presence, started

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=[1, 2], ids=["one Redis", "two shards"])
async def redis_url(request: Any) -> AsyncIterator[str]:
    servers = [RedisServer() for _ in range(request.param)]
    try:
        for server in servers:
            await server.ready()
        yield ",".join(server.url for server in servers)
    finally:
        for server in servers:
            server.stop()


class Handler:
    """on_message of one node: record the call, wait for ``release`` on node A, forward."""

    def __init__(self, name: str, calls: List[Tuple[str, str]],
                 release: asyncio.Event) -> None:
        self.name = name
        self.calls = calls
        self.release = release
        self.started = asyncio.Event()
        self.server: Any = None

    async def __call__(self, message: Any, metadata: Dict[str, Any]) -> None:
        self.calls.append((self.name, message.message_segment.data))
        self.started.set()
        if self.name == "a":
            await self.release.wait()
        await self.server.send_message(make_message(message.message_segment.data, "bob", "qq"))


def alice(uuid: str) -> Dict[str, str]:
    return {"x-apikey": "alice", "x-platform": "qq", "x-uuid": uuid}


async def held_on_b(b: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while b.cluster.stats()["frames_held_elsewhere"] == 0:
        assert asyncio.get_running_loop().time() < deadline, "B never found A's claim"
        await asyncio.sleep(0.01)


async def frame_on(port: int, uuid: str) -> Any:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws", additional_headers=alice(uuid))
    await ws.send(envelope("f1", make_message("hello", "alice", "qq").to_dict()))
    return ws


@pytest.mark.parametrize("a_dies", [False, True])
async def test_a_frame_resent_while_another_node_handles_it_is_handled_once(
        redis_url: str, a_dies: bool) -> None:
    calls: List[Tuple[str, str]] = []
    release = asyncio.Event()
    handlers = {name: Handler(name, calls, release) for name in ("a", "b")}
    a = node(redis_url, "a", on_message=handlers["a"], ack="handled", cluster_frame_claims=True)
    b = node(redis_url, "b", on_message=handlers["b"], ack="handled", cluster_frame_claims=True)
    handlers["a"].server, handlers["b"].server = a, b
    await started(a, b)
    bob = Receiver(b.port or 0, "bob")
    first = second = None
    try:
        assert await bob.client.connect()
        await presence(a, 1)
        first = await frame_on(a.port or 0, "alice-1")
        await asyncio.wait_for(handlers["a"].started.wait(), 5)
        await first.close()  # the client's connection to A drops mid-handling
        second = await frame_on(b.port or 0, "alice-2")  # and it re-sends f1 to B
        await held_on_b(b)
        with pytest.raises(asyncio.TimeoutError):  # B neither handles nor acks it yet
            await asyncio.wait_for(second.recv(), 0.3)
        assert calls == [("a", "hello")]
        if a_dies:
            # A goes away mid-handling (its handler is cancelled, nothing was recorded): its
            # liveness goes with it (after a crash: once its alive key expires), and so
            # does its claim
            await asyncio.wait_for(a.stop(), 10)
        else:
            release.set()  # A's handler forwards and returns: the frame is recorded
        answer = orjson.loads(await asyncio.wait_for(second.recv(), 5))
        assert answer["type"] == "sys_ack" and answer["meta"]["acked_msg_id"] == "f1"
        expected = [("a", "hello"), ("b", "hello")] if a_dies else [("a", "hello")]
        assert calls == expected  # with A gone, B handles it; else it is A's alone
        await bob.wait(lambda: len(bob.texts) >= 1)
        await asyncio.sleep(0.2)  # a second forward would arrive by now
        assert bob.texts == ["hello"]
    finally:
        release.set()
        for ws in (first, second):
            if ws is not None:
                await ws.close()
        await bob.client.stop()
        await a.stop()
        await b.stop()


async def test_a_frame_that_ends_unhandled_gives_its_claim_back(
        redis_url: str) -> None:
    """A's handler fails (a bug: sys_error, not handled) after the client's connection to
    A dropped; the claim goes with it, so the re-send to B is handled at once."""
    calls: List[Tuple[str, str]] = []
    release = asyncio.Event()

    async def failing(message: Any, metadata: Dict[str, Any]) -> None:
        calls.append(("a", message.message_segment.data))
        await release.wait()
        raise RuntimeError("handler bug")

    on_b = Handler("b", calls, release)
    a = node(redis_url, "a", on_message=failing, ack="handled", cluster_frame_claims=True)
    b = node(redis_url, "b", on_message=on_b, ack="handled", cluster_frame_claims=True)
    on_b.server = b
    await started(a, b)
    bob = Receiver(b.port or 0, "bob")
    first = second = None
    try:
        assert await bob.client.connect()
        await presence(a, 1)
        first = await frame_on(a.port or 0, "alice-1")
        while not calls:
            await asyncio.sleep(0.01)
        await first.close()
        release.set()  # A's handler raises: the frame was not handled
        deadline = asyncio.get_running_loop().time() + 5
        while a.get_connection_count() or a.cluster.stats()["queue_depth"]:  # type: ignore
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the claim's removal is written
        second = await frame_on(b.port or 0, "alice-2")
        answer = orjson.loads(await asyncio.wait_for(second.recv(), 2))
        assert answer["type"] == "sys_ack" and answer["meta"]["acked_msg_id"] == "f1"
        assert calls == [("a", "hello"), ("b", "hello")]
        assert b.cluster.stats()["frames_held_elsewhere"] == 0  # type: ignore[union-attr]
    finally:
        release.set()
        for ws in (first, second):
            if ws is not None:
                await ws.close()
        await bob.client.stop()
        await a.stop()
        await b.stop()


async def test_under_ack_receipt_a_held_frame_is_not_run_when_its_waiting_node_stops(
        redis_url: str) -> None:
    calls: List[Tuple[str, str]] = []
    release = asyncio.Event()
    handlers = {name: Handler(name, calls, release) for name in ("a", "b")}
    a = node(redis_url, "a", on_message=handlers["a"], ack="handled", cluster_frame_claims=True)
    b = node(redis_url, "b", on_message=handlers["b"], ack="receipt", cluster_frame_claims=True)
    handlers["a"].server, handlers["b"].server = a, b
    await started(a, b)
    first = second = None
    try:
        first = await frame_on(a.port or 0, "alice-1")
        await asyncio.wait_for(handlers["a"].started.wait(), 5)
        await first.close()
        second = await frame_on(b.port or 0, "alice-2")
        answer = orjson.loads(await asyncio.wait_for(second.recv(), 5))
        assert answer["type"] == "sys_ack"  # ack="receipt": acked before the check
        await held_on_b(b)
        await second.close()
        await asyncio.wait_for(b.stop(), 10)  # B stops while it waits for A
        await asyncio.sleep(0.3)
        assert calls == [("a", "hello")]  # A handles it; B did not run it on its way out
    finally:
        release.set()
        for ws in (first, second):
            if ws is not None:
                await ws.close()
        await a.stop()
        await b.stop()


async def test_without_frame_claims_the_record_holds_handled_frames_only(
        redis_url: str) -> None:
    """The default (``cluster_frame_claims=False``): the check reads, never writes."""
    calls: List[Tuple[str, str]] = []
    release = asyncio.Event()
    release.set()
    handler = Handler("b", calls, release)
    b = node(redis_url, "b", on_message=handler, ack="handled")
    handler.server = b
    await started(b)
    bob = Receiver(b.port or 0, "bob")
    ws = None
    try:
        assert await bob.client.connect()
        ws = await frame_on(b.port or 0, "alice-1")
        answer = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert answer["type"] == "sys_ack" and calls == [("b", "hello")]
        await bob.wait(lambda: bob.texts == ["hello"])
        values: List[bytes] = []
        for url in redis_url.split(","):
            client = redis_asyncio.Redis.from_url(url)
            try:
                async for key in client.scan_iter("maim_hub:f:*"):
                    values += (await client.hgetall(key)).values()
            finally:
                await client.aclose()
        assert values == [b"h"]  # the frame's record; no claim was written
    finally:
        if ws is not None:
            await ws.close()
        await bob.client.stop()
        await b.stop()
