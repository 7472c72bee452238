"""A frame re-sent to another node while a live node is still handling it (real Redis).

The client's connection to node A dropped while A's handler of frame f1 was running; the
client reconnects to node B and re-sends f1. B finds A's claim (A is alive) and waits:
once A records the frame, B acks the re-send as a duplicate; if A is gone instead, B
handles it. Either way the handler runs once.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple

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


class Scene:
    """Nodes "a" and "b" on one Redis (or two shards), bob connected to b for the
    forwards, and alice's sockets: all closed and stopped on the way out."""

    def __init__(self, redis_url: str, claims: bool = True, ack_b: str = "handled",
                 on_a: Optional[Callable[..., Any]] = None, nodes: str = "ab",
                 claims_b: Optional[bool] = None, **extra: Any) -> None:
        self.calls: List[Tuple[str, str]] = []
        self.release = asyncio.Event()
        self.handlers = {name: Handler(name, self.calls, self.release) for name in "ab"}
        acks = {"a": "handled", "b": ack_b}
        on = {"a": on_a or self.handlers["a"], "b": self.handlers["b"]}
        claim = {"a": claims, "b": claims if claims_b is None else claims_b}
        self.nodes = {name: node(redis_url, name, on_message=on[name], ack=acks[name],
                                 cluster_frame_claims=claim[name], **extra) for name in nodes}
        for name, server in self.nodes.items():
            self.handlers[name].server = server
        self.sockets: List[Any] = []
        self.bob: Optional[Receiver] = None

    async def __aenter__(self) -> Scene:
        await started(*self.nodes.values())
        self.bob = Receiver(self.nodes["b"].port or 0, "bob")
        assert await self.bob.client.connect()
        if "a" in self.nodes:
            await presence(self.nodes["a"], 1)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release.set()
        for ws in self.sockets:
            await ws.close()
        if self.bob is not None:
            await self.bob.client.stop()
        for server in self.nodes.values():
            await server.stop()

    async def frame_on(self, name: str, uuid: str) -> Any:
        """alice's connection to a node, sending frame f1."""
        port = self.nodes[name].port or 0
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws",
                                      additional_headers=alice(uuid))
        self.sockets.append(ws)
        await ws.send(envelope("f1", make_message("hello", "alice", "qq").to_dict()))
        return ws


async def acked(ws: Any, timeout: float = 5.0) -> Dict[str, Any]:
    answer: Dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
    assert answer["type"] == "sys_ack" and answer["meta"]["acked_msg_id"] == "f1"
    return answer


@pytest.mark.parametrize("a_dies", [False, True])
async def test_a_frame_resent_while_another_node_handles_it_is_handled_once(
        redis_url: str, a_dies: bool) -> None:
    async with Scene(redis_url) as scene:
        a, b = scene.nodes["a"], scene.nodes["b"]
        first = await scene.frame_on("a", "alice-1")
        await asyncio.wait_for(scene.handlers["a"].started.wait(), 5)
        await first.close()  # the client's connection to A drops mid-handling
        second = await scene.frame_on("b", "alice-2")  # and it re-sends f1 to B
        await held_on_b(b)
        with pytest.raises(asyncio.TimeoutError):  # B neither handles nor acks it yet
            await asyncio.wait_for(second.recv(), 0.3)
        assert scene.calls == [("a", "hello")]
        if a_dies:
            # A goes away mid-handling (its handler is cancelled, nothing was recorded): its
            # liveness goes with it (after a crash: once its alive key expires), and so
            # does its claim
            await asyncio.wait_for(a.stop(), 10)
        else:
            scene.release.set()  # A's handler forwards and returns: the frame is recorded
        await acked(second)
        expected = [("a", "hello"), ("b", "hello")] if a_dies else [("a", "hello")]
        assert scene.calls == expected  # with A gone, B handles it; else it is A's alone
        assert scene.bob is not None
        await scene.bob.wait(lambda: len(scene.bob.texts) >= 1)  # type: ignore[union-attr]
        await asyncio.sleep(0.2)  # a second forward would arrive by now
        assert scene.bob.texts == ["hello"]


async def test_a_node_without_claims_waits_for_a_live_claim_of_a_node_with_them(
        redis_url: str) -> None:
    """A cluster part-way through turning claims on: B (claims off) reads the records
    without the script, finds A's claim, asks the script whether A lives, and waits."""
    async with Scene(redis_url, claims_b=False) as scene:
        b = scene.nodes["b"]
        first = await scene.frame_on("a", "alice-1")
        await asyncio.wait_for(scene.handlers["a"].started.wait(), 5)
        await first.close()
        second = await scene.frame_on("b", "alice-2")
        await held_on_b(b)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(second.recv(), 0.3)
        scene.release.set()
        await acked(second)
        assert scene.calls == [("a", "hello")]
        assert b.cluster.stats()["duplicate_frames"] == 1


async def test_a_frame_that_ends_unhandled_gives_its_claim_back(redis_url: str) -> None:
    """A's handler fails (a bug: sys_error, not handled) after the client's connection to
    A dropped; the claim goes with it, so the re-send to B is handled at once."""
    release = asyncio.Event()
    started_a = asyncio.Event()

    async def failing(message: Any, metadata: Dict[str, Any]) -> None:
        started_a.set()
        await release.wait()
        raise RuntimeError("handler bug")

    async with Scene(redis_url, on_a=failing) as scene:
        a, b = scene.nodes["a"], scene.nodes["b"]
        first = await scene.frame_on("a", "alice-1")
        await asyncio.wait_for(started_a.wait(), 5)
        await first.close()
        release.set()  # A's handler raises: the frame was not handled
        deadline = asyncio.get_running_loop().time() + 5
        while a.get_connection_count() or a.cluster.stats()["queue_depth"]:  # type: ignore
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the claim's removal is written
        await acked(await scene.frame_on("b", "alice-2"), timeout=2)
        assert scene.calls == [("b", "hello")]  # handled at once on B
        assert b.cluster.stats()["frames_held_elsewhere"] == 0  # type: ignore[union-attr]


async def test_under_ack_receipt_a_held_frame_is_not_run_when_its_waiting_node_stops(
        redis_url: str) -> None:
    async with Scene(redis_url, ack_b="receipt") as scene:
        b = scene.nodes["b"]
        first = await scene.frame_on("a", "alice-1")
        await asyncio.wait_for(scene.handlers["a"].started.wait(), 5)
        await first.close()
        second = await scene.frame_on("b", "alice-2")
        await acked(second)  # ack="receipt": acked before the check
        await held_on_b(b)
        await second.close()
        await asyncio.wait_for(b.stop(), 10)  # B stops while it waits for A
        await asyncio.sleep(0.3)
        assert scene.calls == [("a", "hello")]  # A handles it; B did not run it on its way


async def test_without_frame_claims_the_record_holds_handled_frames_only(
        redis_url: str) -> None:
    """The default (``cluster_frame_claims=False``): the check reads, never writes."""
    async with Scene(redis_url, claims=False, nodes="b") as scene:
        scene.release.set()
        await acked(await scene.frame_on("b", "alice-1"))
        assert scene.calls == [("b", "hello")]
        assert scene.bob is not None
        await scene.bob.wait(lambda: scene.bob.texts == ["hello"])  # type: ignore[union-attr]
        values: List[bytes] = []
        for url in redis_url.split(","):
            client = redis_asyncio.Redis.from_url(url)
            try:
                async for key in client.scan_iter("maim_hub:f:*"):
                    values += (await client.hgetall(key)).values()
            finally:
                await client.aclose()
        assert values == [b"h"]  # the frame's record; no claim was written


@pytest.mark.parametrize("fail", [False, True])
async def test_a_waiting_node_acks_only_once_the_other_handler_returned(
        redis_url: str, fail: bool) -> None:
    """With claims, a handler's first send records the frame as started: a node waiting
    for it acks the re-send only when that handler has returned, and handles it itself
    when the handler failed after its first send (the record is taken back)."""
    release = asyncio.Event()
    first_sent = asyncio.Event()

    async def two_sends(message: Any, metadata: Dict[str, Any]) -> None:
        server = scene.nodes["a"]
        await server.send_message(make_message("part1", "bob", "qq"))
        first_sent.set()
        await release.wait()
        if fail:
            raise RuntimeError("the second send failed")
        await server.send_message(make_message("part2", "bob", "qq"))

    async with Scene(redis_url, on_a=two_sends) as scene:
        first = await scene.frame_on("a", "alice-1")
        await asyncio.wait_for(first_sent.wait(), 5)
        await asyncio.sleep(0.05)  # the first send (and its record) is stored
        await first.close()
        second = await scene.frame_on("b", "alice-2")
        await held_on_b(scene.nodes["b"])
        with pytest.raises(asyncio.TimeoutError):  # A's handler still runs: B waits
            await asyncio.wait_for(second.recv(), 0.3)
        release.set()
        await acked(second)
        # A returned: a duplicate, handled once; A failed after its first send: B handles it
        assert scene.calls == ([("b", "hello")] if fail else [])


async def test_claims_of_a_node_restarted_under_the_same_id_are_not_waited_for(
        redis_url: str) -> None:
    """A claimed f1 and then restarted under the same node id (a StatefulSet pod): its
    alive key holds the new life's incarnation, so its previous life's claim is not a live
    node's, and the re-send to B is handled at once instead of waiting for the bucket."""
    async with Scene(redis_url) as scene:
        a, b = scene.nodes["a"], scene.nodes["b"]
        first = await scene.frame_on("a", "alice-1")
        await asyncio.wait_for(scene.handlers["a"].started.wait(), 5)
        await first.close()
        cluster = a.cluster
        assert cluster is not None
        cluster.incarnation = "0123abcd"  # the new life, as its join and heartbeats write it
        for url in redis_url.split(","):
            client = redis_asyncio.Redis.from_url(url)
            try:
                await client.set(cluster.keys.alive("a"), cluster.incarnation, px=5000)
            finally:
                await client.aclose()
        await acked(await scene.frame_on("b", "alice-2"), timeout=2)  # not held
        assert scene.calls == [("a", "hello"), ("b", "hello")]
        assert b.cluster.stats()["frames_held_elsewhere"] == 0  # type: ignore[union-attr]


async def test_a_live_node_s_claim_names_its_incarnation(redis_url: str) -> None:
    """The claim is node id, NUL, incarnation; the alive key holds the incarnation."""
    async with Scene(redis_url) as scene:
        a = scene.nodes["a"]
        await scene.frame_on("a", "alice-1")
        await asyncio.wait_for(scene.handlers["a"].started.wait(), 5)
        cluster = a.cluster
        assert cluster is not None
        claims: List[bytes] = []
        for url in redis_url.split(","):
            client = redis_asyncio.Redis.from_url(url)
            try:
                assert await client.get(cluster.keys.alive("a")) == cluster.incarnation.encode()
                for key in await client.keys(f"{cluster.dedupe.prefix}:f:*"):
                    claims += (await client.hgetall(key)).values()
            finally:
                await client.aclose()
        assert claims == [b"@a\x00" + cluster.incarnation.encode()]


async def test_a_claim_is_renewed_while_its_handler_runs_longer_than_the_buckets(
        redis_url: str) -> None:
    """Buckets of 1 s: an unrenewed claim is out of the checks' view within 2 s. A's
    handler runs longer; its claim is written again while it runs, so the re-send to B
    still waits for A (and is acked as a duplicate) instead of running a second time."""
    async with Scene(redis_url, cluster_dedupe_ttl=1.0) as scene:
        b = scene.nodes["b"]
        first = await scene.frame_on("a", "alice-1")
        await asyncio.wait_for(scene.handlers["a"].started.wait(), 5)
        await first.close()
        await asyncio.sleep(2.5)  # past both buckets the claim was first written in
        second = await scene.frame_on("b", "alice-2")
        await held_on_b(b)
        assert scene.calls == [("a", "hello")]
        scene.release.set()
        await acked(second)
        assert scene.calls == [("a", "hello")]
