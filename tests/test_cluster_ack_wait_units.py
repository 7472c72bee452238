"""``send_message(..., ack_timeout=...)`` in a cluster when the receiver's pair is taken
over by another node, and when the receiver acks before the store answered (the
in-memory bus, no sockets).

Before: the node that read the message from the pair's stream did not know who waited
for its ack, so the waiting sender timed out although the message was delivered and
acked; and a same-node ack arriving before the store's answer was missed.
"""

from __future__ import annotations

import asyncio

from maim_message.backends.memory_bus import MemoryBus, MemoryCluster
from maim_message.backends.pubsub_messages import AcksMessage, decode_batch, encode_message

from .fakes import FakeHost, make_peer
from .test_cluster_seam import settle, stop, texts


async def node(bus: MemoryBus, name: str) -> FakeHost:
    host = FakeHost()
    host.cluster = MemoryCluster(bus, name)
    await host.cluster.start(host)
    return host


def test_acks_for_any_origin_decode_as_one_ack_each() -> None:
    acks = AcksMessage("n3", "alice", "qq", ("m1", "m 2"), "a2")
    decoded = decode_batch(encode_message(acks))
    assert [(a.node, a.pair, a.msg_id, a.uuid) for a in decoded] == [  # type: ignore[union-attr]
        ("n3", ("alice", "qq"), "m1", "a2"), ("n3", ("alice", "qq"), "m 2", "a2")]


async def test_the_waiting_sender_hears_the_ack_after_a_takeover() -> None:
    bus = MemoryBus()
    n1, n2 = await node(bus, "n1"), await node(bus, "n2")
    n3 = None
    try:
        alice = n2.open(make_peer("a1", "alice"))
        await settle(lambda: bus.where.get(("alice", "qq")) == {"a1": "n2"})
        waiting = asyncio.ensure_future(n1.cluster.send_to_pair(
            ("alice", "qq"), "m1", b'{"payload":"x"}', ack_timeout=3))
        await settle(lambda: texts(alice) == ["x"])
        await n2.cluster.stop()  # n2 goes away before alice acks: m1 stays in the stream
        n3 = await node(bus, "n3")
        again = n3.open(make_peer("a2", "alice"))  # alice reconnects to n3
        await settle(lambda: texts(again) == ["x"])  # read from the stream (a takeover)
        assert n3.cluster.takeovers == 1
        n3.ack(again, "m1")
        assert await asyncio.wait_for(waiting, 3) == {"a2": True}
        assert ("alice", "qq") not in bus.streams  # and the store is cleared
    finally:
        await stop(n1, *([n3] if n3 is not None else []))


async def test_an_ack_before_the_store_answered_is_not_missed() -> None:
    bus = MemoryBus()
    n1 = await node(bus, "n1")
    try:
        alice = n1.open(make_peer("a1", "alice"))
        await settle(lambda: bus.where.get(("alice", "qq")) == {"a1": "n1"})
        waiting = asyncio.ensure_future(n1.cluster.send_to_pair(
            ("alice", "qq"), "m1", b'{"payload":"x"}', ack_timeout=3))
        sent = asyncio.get_running_loop().create_future()
        real = n1.cluster._send_pair

        def slow_store(*args: object) -> object:  # the store answers after the ack
            real(*args)
            return sent
        n1.cluster._send_pair = slow_store  # type: ignore[method-assign]
        await settle(lambda: texts(alice) == ["x"])
        n1.ack(alice, "m1")
        sent.set_result(("1-0", []))
        assert await asyncio.wait_for(waiting, 3) == {"a1": True}
    finally:
        await stop(n1)
