"""A pair with an acking connection on one node and a raw, non-acking one on another: the
raw one leaving deletes nothing the acking one still needs, and a waiting sender is not
told "acked" by a close (memory bus, two nodes)."""

from __future__ import annotations

import asyncio

import pytest

from maim_message.backends.memory_bus import MemoryBus, MemoryCluster

from .fakes import FakeHost, make_peer
from .test_cluster_seam import settle, stop, texts

PAIR = ("alice", "qq")


async def started(bus: MemoryBus, name: str) -> FakeHost:
    host = FakeHost()
    host.cluster = MemoryCluster(bus, name)
    await host.cluster.start(host)
    return host


async def test_a_raw_connection_leaving_keeps_what_an_acking_one_still_needs() -> None:
    """Whether a pair acks is known per node: the node of the raw connection must not
    delete the pair's unacked messages from its stream when that connection closes."""
    bus = MemoryBus()
    n1, n2 = await started(bus, "n1"), await started(bus, "n2")
    try:
        a1 = n1.open(make_peer("a1", "alice"))  # a maim_message client: it acks
        r1 = n2.open(make_peer("r1", "alice", resumable=False))  # raw: it never acks
        await settle(lambda: bus.where.get(PAIR) == {"a1": "n1", "r1": "n2"})
        await n1.cluster.send_to_pair(PAIR, "m1", b'{"payload":"x"}')
        await settle(lambda: texts(a1) == ["x"] and texts(r1) == ["x"])
        n1.close(a1)  # cut before its ack went out
        n2.close(r1)
        await settle(lambda: not bus.where.get(PAIR))
        back = n1.open(make_peer("a1", "alice"))
        await settle(lambda: texts(back) == ["x"])  # read back from the stream
    finally:
        await stop(n1, n2)


async def test_a_close_is_not_reported_to_a_waiting_sender_as_an_ack() -> None:
    bus = MemoryBus()
    n1, n2 = await started(bus, "n1"), await started(bus, "n2")
    try:
        r1 = n2.open(make_peer("r1", "alice", resumable=False))
        await settle(lambda: bus.where.get(PAIR) == {"r1": "n2"})
        waiting = asyncio.ensure_future(n1.cluster.send_to_pair(
            PAIR, "m1", b'{"payload":"x"}', ack_timeout=0.5))
        await settle(lambda: texts(r1) == ["x"])
        n2.close(r1)  # never acked
        assert not any((await asyncio.wait_for(waiting, 3)).values())
    finally:
        await stop(n1, n2)


@pytest.mark.parametrize("entry_known", [True, False])
async def test_a_message_given_up_is_deleted_but_not_reported_as_acked(
        entry_known: bool) -> None:
    """A message its receiver kept refusing as too big (or drained) leaves the stream, and a
    sender on another node waiting for its ack is not told it arrived (whether the node
    knows the message's stream entry, or deletes it by msg_id)."""
    bus = MemoryBus()
    n1, n2 = await started(bus, "n1"), await started(bus, "n2")
    try:
        r1 = n2.open(make_peer("r1", "alice"))
        await settle(lambda: bus.where.get(PAIR) == {"r1": "n2"})
        waiting = asyncio.ensure_future(n1.cluster.send_to_pair(
            PAIR, "m1", b'{"payload":"x"}', ack_timeout=0.5))
        await settle(lambda: texts(r1) == ["x"])
        outbox = n2.delivery.outbox
        if not entry_known:
            n2.cluster._sids.forget(PAIR)
        assert outbox is not None and outbox.ack(PAIR, "m1", acked=False)
        assert not any((await asyncio.wait_for(waiting, 3)).values())
        await settle(lambda: PAIR not in bus.streams)  # deleted from the stream all the same
    finally:
        await stop(n1, n2)
