"""What a node takes back from the record of handled frames when a frame ends unhandled
while Redis stalls (real redis-server, paused with SIGSTOP and resumed).

The commands of a stalled batch stay queued and run once Redis is back: the frame was
not acked (the client re-sends it), but its record, queued with its first send, must
survive; and a record another node wrote must never be taken back, or the re-send is
handled twice. And the client's side of it: a message the hub could not store is
written again on the same connection until the hub takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from typing import Any, AsyncIterator, Dict, List, Tuple

import orjson
import pytest
import websockets
from redis import asyncio as redis_asyncio

from maim_message.backends.frame_dedupe import frame_token
from maim_message.client import WebSocketClient, create_client_config

from .helpers_api import envelope, make_message
from .test_cluster import Receiver, RedisServer, node, presence, started

pytestmark = pytest.mark.timeout(60)

ALICE = {"x-apikey": "alice", "x-platform": "qq", "x-uuid": "alice-1"}
FAST = {"cluster_write_timeout": 0.5}  # a send gives up on Redis after 0.5 s


@pytest.fixture
async def redis() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    await server.ready()
    try:
        yield server
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)  # never leave it stopped
        server.stop()


def fast_url(server: RedisServer) -> str:
    return server.url + "?socket_timeout=0.5"  # a silent Redis fails a batch in 0.5 s


class Forwarder:
    def __init__(self) -> None:
        self.server: Any = None
        self.calls: List[str] = []
        self.started = asyncio.Event()
        self.go = asyncio.Event()
        self.then_wait = False

    async def __call__(self, message: Any, metadata: Dict[str, Any]) -> None:
        self.calls.append(message.message_segment.data)
        self.started.set()
        await self.go.wait()
        await self.server.send_message(make_message(message.message_segment.data, "bob", "qq"))
        if self.then_wait:
            await self.server.send_message(make_message("second", "bob", "qq"), ack_timeout=5)


async def drained(server: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while server.cluster.stats()["queue_depth"]:
        assert asyncio.get_running_loop().time() < deadline, "queue never drained"
        await asyncio.sleep(0.02)


async def answer(ws: Any, timeout: float) -> Dict[str, Any]:
    result: Dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
    return result


async def handled_while_redis_stalls(ws: Any, node_a: Any, redis: RedisServer,
                                     forward: Forwarder) -> None:
    """Frame f1 on ``ws``: checked (fresh), then Redis stops while its handler sends; the
    frame is not acked (the client would re-send it); Redis comes back and the stalled
    batch (the send and the frame's record) is written."""
    await ws.send(envelope("f1", make_message("hello", "alice", "qq").to_dict()))
    await asyncio.wait_for(forward.started.wait(), 5)  # checked: FRESH
    os.kill(redis.proc.pid, signal.SIGSTOP)
    forward.go.set()  # its send goes into a batch that stalls
    with pytest.raises(asyncio.TimeoutError):  # not acked: the client re-sends
        await answer(ws, 2.0)
    os.kill(redis.proc.pid, signal.SIGCONT)
    await drained(node_a)


@contextlib.asynccontextmanager
async def forwarding_pair(url: str, **extra: Any
                          ) -> AsyncIterator[Tuple[Any, Any, Forwarder, Receiver, Any]]:
    """Node a forwards alice's frames (ack="handled", 0.5 s write timeout) to bob, who is
    connected to node b; yields (a, b, the forwarder, bob, alice's socket on a).
    ``extra``: more settings for both nodes (with claims, b forwards too)."""
    forward = Forwarder()
    a = node(url, "a", on_message=forward, ack="handled", **FAST, **extra)
    b_handles = {"on_message": forward, "ack": "handled"} if extra else {}
    b = node(url.split("?")[0], "b", **b_handles, **extra)
    forward.server = a
    await started(a, b)
    bob = Receiver(b.port or 0, "bob")
    try:
        assert await bob.client.connect()
        await presence(a, 1)
        async with websockets.connect(f"ws://127.0.0.1:{a.port}/ws",
                                      additional_headers=ALICE) as ws:
            yield a, b, forward, bob, ws
    finally:
        await bob.client.stop()
        await a.stop()
        await b.stop()


async def test_a_stalled_check_never_takes_back_another_nodes_record(
        redis: RedisServer) -> None:
    forward = Forwarder()
    forward.go.set()
    b = node(fast_url(redis), "b", on_message=forward, ack="handled", **FAST)
    forward.server = b
    await started(b)
    client = redis_asyncio.Redis.from_url(redis.url)
    try:
        cluster: Any = b.cluster
        token = frame_token(("alice", "qq", "f1"))
        await client.hset(cluster.dedupe.current(), token, "h")  # node A handled f1
        async with websockets.connect(f"ws://127.0.0.1:{b.port}/ws",
                                      additional_headers=ALICE) as ws:
            os.kill(redis.proc.pid, signal.SIGSTOP)
            await ws.send(envelope("f1", make_message("hello", "alice", "qq").to_dict()))
            with pytest.raises(asyncio.TimeoutError):  # not checked: not answered
                await answer(ws, 2.0)
            os.kill(redis.proc.pid, signal.SIGCONT)
            await drained(b)
            # A's record is kept (in the bucket it was written to: the current one or, past
            # a bucket boundary meanwhile, the previous one)
            assert b"h" in [await client.hget(bucket, token) for bucket in cluster.dedupe.both()]
            await ws.send(envelope("f1", make_message("hello", "alice", "qq").to_dict()))
            acked = await answer(ws, 5.0)
            assert acked["type"] == "sys_ack" and acked["meta"]["acked_msg_id"] == "f1"
        assert forward.calls == []  # a duplicate of A's: never handled here
    finally:
        await client.aclose()
        await b.stop()


async def test_a_frame_whose_send_stalled_is_acked_as_a_duplicate_once_it_is_written(
        redis: RedisServer) -> None:
    async with forwarding_pair(fast_url(redis)) as (a, _b, forward, bob, ws):
        await handled_while_redis_stalls(ws, a, redis, forward)
        await ws.send(envelope("f1", make_message("hello", "alice", "qq").to_dict()))
        acked = await answer(ws, 5.0)
        assert acked["type"] == "sys_ack" and acked["meta"]["acked_msg_id"] == "f1"
        assert forward.calls == ["hello"]  # handled once
        await bob.wait(lambda: bob.texts == ["hello"])
        await asyncio.sleep(0.3)  # a second forward would have arrived by now
        assert bob.texts == ["hello"]


async def test_with_claims_a_stalled_frame_is_a_duplicate_on_another_node_too(
        redis: RedisServer) -> None:
    """With frame claims the first send records the frame as started by its node; when
    the handler then fails because Redis stalls, that record must end as handled (its
    send is still queued and will be written), or a re-send to another node would wait
    for a live node that no longer handles it, and then run it a second time."""
    async with forwarding_pair(fast_url(redis), cluster_frame_claims=True) as (
            a, b, forward, _bob, ws):
        forward.then_wait = True  # a second send that waits for Redis: QueueStalled, raised
        await handled_while_redis_stalls(ws, a, redis, forward)
        await ws.close()
        async with websockets.connect(f"ws://127.0.0.1:{b.port}/ws",
                                      additional_headers=ALICE) as ws:
            await ws.send(envelope("f1", make_message("hello", "alice", "qq").to_dict()))
            acked = await answer(ws, 5.0)  # at once: not held for a live node's claim
            assert acked["type"] == "sys_ack" and acked["meta"]["acked_msg_id"] == "f1"
        assert forward.calls == ["hello"]  # handled once


async def test_a_send_that_outlived_a_redis_restart_still_reaches_a_remote_receiver(
        redis: RedisServer) -> None:
    """Redis is killed while a handler's forward is queued, long enough for the send to
    fail (the frame is not acked), then started again: the queued batch is written, and
    the node holding the receiver is told, so the receiver (connected all along to the
    other node) gets the message without reconnecting."""
    async with forwarding_pair(redis.url) as (_a, _b, forward, bob, ws):
        await ws.send(envelope("f1", make_message("hello", "alice", "qq").to_dict()))
        await asyncio.wait_for(forward.started.wait(), 5)
        redis.proc.send_signal(signal.SIGKILL)  # the PID we started
        redis.proc.wait(5)
        forward.go.set()  # its send is queued; Redis is gone
        with pytest.raises(asyncio.TimeoutError):  # not acked: the client re-sends
            await answer(ws, 2.0)
        redis.restart()  # same port, empty (no persistence)
        await redis.ready()
        await bob.wait(lambda: bob.texts == ["hello"], timeout=15)


async def test_a_check_that_stalls_leaves_no_failure_unread(redis: RedisServer) -> None:
    """Both bucket reads of a stalled check fail; each failure is read (an unread one is
    an ERROR "Future exception was never retrieved" in the operator's log)."""
    loop = asyncio.get_running_loop()
    errors: List[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(str(context.get("message"))))
    forward = Forwarder()
    a = node(fast_url(redis), "a", on_message=forward, ack="handled", **FAST)
    forward.server = a
    try:
        await started(a)
        async with websockets.connect(f"ws://127.0.0.1:{a.port}/ws",
                                      additional_headers=ALICE) as ws:
            os.kill(redis.proc.pid, signal.SIGSTOP)
            await ws.send(envelope("f1", make_message("hello", "alice", "qq").to_dict()))
            with pytest.raises(asyncio.TimeoutError):  # not checked: not acked, not handled
                await answer(ws, 2.0)
            assert forward.calls == []
            os.kill(redis.proc.pid, signal.SIGCONT)
            await drained(a)
        await a.stop()
        gc.collect()
        assert [e for e in errors if "never retrieved" in e] == []
    finally:
        loop.set_exception_handler(previous)


async def test_a_message_sent_while_redis_stalls_arrives_once_redis_is_back(
        redis: RedisServer) -> None:
    """The hub cannot check the frame (Redis stopped) and withholds its ack; the client
    writes it again on the same connection until the hub handles it: delivered once,
    with no reconnect."""
    forward = Forwarder()
    forward.go.set()
    a = node(fast_url(redis), "a", on_message=forward, ack="handled", **FAST)
    b = node(redis.url, "b")
    forward.server = a
    await started(a, b)
    bob = Receiver(b.port or 0, "bob")
    alice = WebSocketClient(create_client_config(
        f"ws://127.0.0.1:{a.port}/ws", "alice", platform="qq", resend_interval=0.5,
        enable_connection_log=False))
    try:
        assert await bob.client.connect()
        assert await alice.connect()
        await presence(a, 2)  # alice here, bob on b
        os.kill(redis.proc.pid, signal.SIGSTOP)
        assert await alice.send_message(make_message("during the stall", "alice", "qq"))
        await asyncio.sleep(1.5)  # the hub gave up on Redis (0.5 s): not acked
        assert alice.get_stats()["pending_messages"] == 1 and forward.calls == []
        os.kill(redis.proc.pid, signal.SIGCONT)
        await bob.wait(lambda: bob.texts == ["during the stall"], timeout=15)
        stats = alice.get_stats()
        assert stats["messages_resent"] >= 1 and stats["reconnect_attempts"] == 0
        for _ in range(300):  # bounded: until the re-send's ack arrived
            if alice.get_stats()["pending_messages"] == 0:
                break
            await asyncio.sleep(0.02)
        assert alice.get_stats()["pending_messages"] == 0
        await asyncio.sleep(1.0)  # a second delivery would arrive by now
        assert bob.texts == ["during the stall"] and forward.calls == ["during the stall"]
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
        await alice.stop()
        await bob.client.stop()
        await a.stop()
        await b.stop()
