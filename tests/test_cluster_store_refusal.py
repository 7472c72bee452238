"""A handler's send in cluster mode when Redis refuses the write (out of memory).

``ack="receipt"`` (the library default): the frame was acked on receipt, so nothing else
can report the failure: the handler's ``send_message`` must raise it, as it did before
sends stopped waiting for Redis under the gate. ``ack="handled"`` (the hub's policy): the
send need not wait, but the frame is not acked (the client re-sends it). Real redis-server.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Tuple

import orjson
import pytest
import websockets
from redis import asyncio as redis_asyncio

from .helpers_api import envelope, make_message, recv_until
from .test_cluster import Receiver, node, presence, redis_url, started  # noqa: F401 (fixture)

ALICE = {"x-apikey": "alice", "x-platform": "qq", "x-uuid": "alice-1"}


class Forwarder:
    """on_message: forward the text to bob, record what send_message did."""

    def __init__(self) -> None:
        self.server: Any = None
        self.outcomes: List[Tuple[str, Any]] = []
        self.done = asyncio.Event()

    async def __call__(self, message: Any, metadata: Dict[str, Any]) -> None:
        try:
            result = await self.server.send_message(
                make_message(message.message_segment.data, "bob", "qq"))
            self.outcomes.append(("returned", result))
        except Exception as exc:  # what the test is about
            self.outcomes.append(("raised", type(exc).__name__))
        self.done.set()


async def refuse_writes(client: Any) -> None:
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("maxmemory", 1)


@pytest.mark.parametrize("ack", ["receipt", "handled"])
async def test_a_refused_write_reaches_the_handler_or_withholds_the_ack(
        redis_url: str, ack: str) -> None:  # noqa: F811
    forward = Forwarder()
    a = node(redis_url, "a", on_message=forward, ack=ack)
    b = node(redis_url, "b")
    forward.server = a
    await started(a, b)
    bob = Receiver(b.port or 0, "bob")
    redis = redis_asyncio.Redis.from_url(redis_url)
    try:
        assert await bob.client.connect()
        await presence(a, 1)
        async with websockets.connect(f"ws://127.0.0.1:{a.port}/ws",
                                      additional_headers=ALICE) as ws:
            await ws.send(envelope("f0", make_message("fwd0", "alice", "qq").to_dict()))
            first = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            await asyncio.wait_for(forward.done.wait(), 5)
            assert first["type"] == "sys_ack" and forward.outcomes[0][0] == "returned"
            forward.done.clear()
            await refuse_writes(redis)
            await ws.send(envelope("f1", make_message("fwd1", "alice", "qq").to_dict()))
            await asyncio.wait_for(forward.done.wait(), 5)
            if ack == "receipt":
                answer = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
                assert answer["type"] == "sys_ack"  # acked on receipt, before the handler
                assert forward.outcomes[1] == ("raised", "OutOfMemoryError")
            else:
                with pytest.raises(asyncio.TimeoutError):  # not acked: the client re-sends
                    await asyncio.wait_for(ws.recv(), 1.0)
        assert "fwd1" not in bob.texts and bob.texts == ["fwd0"]
    finally:
        await redis.config_set("maxmemory", 0)
        await redis.aclose()
        await bob.client.stop()
        for server in (a, b):
            await server.stop()




class TwoSends:
    """on_message: send m1 to bob; on the first call wait (Redis is made to refuse writes
    meanwhile), then send m2."""

    def __init__(self) -> None:
        self.server: Any = None
        self.calls = 0
        self.between = asyncio.Event()
        self.go = asyncio.Event()
        self.done = asyncio.Event()

    async def __call__(self, message: Any, metadata: Dict[str, Any]) -> None:
        self.calls += 1
        try:
            await self.server.send_message(make_message("m1", "bob", "qq"))
            if self.calls == 1:
                self.between.set()
                await self.go.wait()
            await self.server.send_message(make_message("m2", "bob", "qq"))
        finally:
            self.done.set()


async def test_a_frame_whose_later_send_was_refused_is_handled_again_when_resent(
        redis_url: str) -> None:  # noqa: F811
    """ack="handled": the frame's record rode with m1; m2 is refused, so the frame is not
    acked, and its record is taken back: the client's re-send is handled again (m2 is
    delivered then) instead of being acked as a duplicate with m2 lost."""
    handler = TwoSends()
    a = node(redis_url, "a", on_message=handler, ack="handled")
    b = node(redis_url, "b")
    handler.server = a
    await started(a, b)
    bob = Receiver(b.port or 0, "bob")
    redis = redis_asyncio.Redis.from_url(redis_url)
    frame = envelope("f0", make_message("x", "alice", "qq").to_dict())
    try:
        assert await bob.client.connect()
        await presence(a, 1)
        async with websockets.connect(f"ws://127.0.0.1:{a.port}/ws",
                                      additional_headers=ALICE) as ws:
            await ws.send(frame)
            await asyncio.wait_for(handler.between.wait(), 5)
            await a.cluster._written()  # type: ignore[attr-defined]  # m1 and the record stored
            await refuse_writes(redis)
            handler.go.set()
            await asyncio.wait_for(handler.done.wait(), 5)
            with pytest.raises(asyncio.TimeoutError):  # not acked: the client re-sends
                await asyncio.wait_for(ws.recv(), 1.0)
        await redis.config_set("maxmemory", 0)
        handler.done.clear()
        async with websockets.connect(f"ws://127.0.0.1:{a.port}/ws",
                                      additional_headers=ALICE) as ws:
            await ws.send(frame)
            answer = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            assert answer["type"] == "sys_ack"
        assert handler.calls == 2  # handled again, not taken for a duplicate
        deadline = asyncio.get_running_loop().time() + 5
        while "m2" not in bob.texts:
            assert asyncio.get_running_loop().time() < deadline, bob.texts
            await asyncio.wait_for(bob.changed.wait(), 5)
            bob.changed.clear()
        assert bob.texts.count("m2") == 1
    finally:
        await redis.config_set("maxmemory", 0)
        await redis.aclose()
        await bob.client.stop()
        for server in (a, b):
            await server.stop()


async def test_an_ack_frees_its_stream_entry_while_redis_refuses_writes(
        redis_url: str) -> None:  # noqa: F811
    """Out of memory, Redis refuses a transaction but still takes a delete: an acked
    entry's XDEL goes outside the send transaction, so the ack frees memory instead of
    being lost with the refused transaction (and the message redelivered later)."""
    from maim_message.core.envelope import encode_ack

    forward = Forwarder()
    a = node(redis_url, "a", on_message=forward, ack="handled")
    forward.server = a
    await started(a)
    redis = redis_asyncio.Redis.from_url(redis_url)
    bob_headers = {"x-apikey": "bob", "x-platform": "qq", "x-uuid": "bob-1"}
    try:
        cluster: Any = a.cluster
        stream = cluster.keys.pair_keys(("bob", "qq"))[0]
        async with websockets.connect(f"ws://127.0.0.1:{a.port}/ws",
                                      additional_headers=bob_headers) as bob, \
                websockets.connect(f"ws://127.0.0.1:{a.port}/ws",
                                   additional_headers=ALICE) as alice:
            await presence(a, 2)
            await alice.send(envelope("f1", make_message("hi", "alice", "qq").to_dict()))
            got = orjson.loads(await asyncio.wait_for(bob.recv(), 5))
            assert got["type"] == "sys_std"
            deadline = asyncio.get_running_loop().time() + 5
            while await redis.xlen(stream) != 1:  # stored (the frame's ack waits for it)
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.02)
            await refuse_writes(redis)
            await bob.send(encode_ack("c-1", "bob-1", got["msg_id"], from_server=False).decode())
            while await redis.xlen(stream) != 0:
                assert asyncio.get_running_loop().time() < deadline, "the delete was lost"
                await asyncio.sleep(0.02)
    finally:
        await redis.config_set("maxmemory", 0)
        await redis.aclose()
        await a.stop()


async def test_a_broadcast_whose_store_write_is_refused_withholds_the_frames_ack(
        redis_url: str) -> None:  # noqa: F811
    """A handler's broadcast is stored per receiving pair (so a reconnecting receiver
    gets it); when Redis refuses that write, the frame is not acked (the client re-sends
    it) instead of being acked with the broadcast lost for anyone who reconnects."""
    broadcasts: List[str] = []

    async def broadcast(message: Any, metadata: Dict[str, Any]) -> None:
        broadcasts.append(message.message_segment.data)
        await a.broadcast_message(make_message(message.message_segment.data, "x", "qq"))

    a = node(redis_url, "a", on_message=broadcast, ack="handled")
    await started(a)
    bob = Receiver(a.port or 0, "bob")
    redis = redis_asyncio.Redis.from_url(redis_url)
    try:
        assert await bob.client.connect()
        await presence(a, 1)
        async with websockets.connect(f"ws://127.0.0.1:{a.port}/ws",
                                      additional_headers=ALICE) as ws:
            await ws.send(envelope("f0", make_message("b0", "alice", "qq").to_dict()))
            assert (await recv_until(ws, "sys_ack"))["meta"]["acked_msg_id"] == "f0"
            await refuse_writes(redis)
            await ws.send(envelope("f1", make_message("b1", "alice", "qq").to_dict()))
            with pytest.raises(asyncio.TimeoutError):  # not acked: the client re-sends
                await recv_until(ws, "sys_ack", timeout=1.0)  # (alice gets b1 itself)
        assert broadcasts == ["b0", "b1"]
    finally:
        await redis.config_set("maxmemory", 0)
        await redis.aclose()
        await bob.client.stop()
        await a.stop()


async def test_a_durable_admin_action_that_redis_refuses_raises(
        redis_url: str) -> None:  # noqa: F811
    from maim_message.errors import ClusterError

    a = node(redis_url, "a")
    await started(a)
    redis = redis_asyncio.Redis.from_url(redis_url)
    try:
        cluster: Any = a.cluster
        await cluster.admin("disconnect", {"uuid": "u1"}, durable=True)  # stored
        await refuse_writes(redis)
        with pytest.raises(ClusterError, match="not stored"):
            await cluster.admin("disconnect", {"uuid": "u2"}, durable=True)
    finally:
        await redis.config_set("maxmemory", 0)
        await redis.aclose()
        await a.stop()
