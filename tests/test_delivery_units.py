"""Outbox, Delivery and HandlerTasks without sockets (fake connections, injected clock)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, List, Tuple

import orjson
import pytest

from maim_message.core.outbox import Outbox, OutboxEntry
from maim_message.runtime.callbacks import HandlerTasks

from .fakes import FakeHost, conn_of, frame_payload, make_peer

P = ("alice", "qq")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingStore:
    def __init__(self) -> None:
        self.added: List[str] = []
        self.removed: List[str] = []
        self.closed = False

    def load(self) -> List[Tuple[str, str, int, str, bytes, float]]:
        return []

    def add(self, pair: Any, entry: OutboxEntry) -> None:
        self.added.append(entry.msg_id)

    def remove(self, pair: Any, msg_ids: List[str], acked: bool = True) -> None:
        self.removed.extend(msg_ids)

    def close(self) -> None:
        self.closed = True


def ids(outbox: Outbox, pair: Any = P, after: int = 0) -> List[str]:
    return [e.msg_id for e in outbox.pending_after(pair, after)]


# -- Outbox --------------------------------------------------------------------------------


def test_outbox_keeps_order_per_pair_and_forgets_acked_entries() -> None:
    outbox = Outbox()
    first = outbox.append(P, "m1", b"a")
    second = outbox.append(P, "m2", b"bb")
    outbox.append(("bob", "qq"), "x1", b"c")
    assert second.prev_seq == first.seq and ids(outbox) == ["m1", "m2"]
    assert ids(outbox, after=first.seq) == ["m2"]  # a cursor is one integer
    assert outbox.contains(P, "m2") and not outbox.contains(P, "x1")
    assert outbox.ack(P, "m1") and not outbox.ack(P, "m1")  # twice: nothing to forget
    assert ids(outbox) == ["m2"] and outbox.depth() == 2 and outbox.depth(P) == 1
    assert outbox.ack(P, "m2") and P not in outbox.pairs
    assert outbox.stats()["acked"] == 2


def test_outbox_evicts_the_oldest_over_the_count_bound_and_counts_it() -> None:
    outbox = Outbox(max_per_pair=3)
    for i in range(5):
        outbox.append(P, f"m{i}", b"x")
    assert ids(outbox) == ["m2", "m3", "m4"] and outbox.evicted == 2


def test_outbox_byte_bound_evicts_other_pairs_but_keeps_the_new_message() -> None:
    outbox = Outbox(max_bytes=3000)
    outbox.append(("bob", "qq"), "old", b"o" * 1000)
    outbox.append(P, "a", b"a" * 1000)
    outbox.append(P, "b", b"b" * 1000)
    assert outbox.total_bytes <= 3000 and outbox.contains(P, "b")
    assert outbox.evicted >= 1


def test_outbox_expires_by_age_with_an_injected_clock() -> None:
    clock = Clock()
    outbox = Outbox(ttl=60.0, clock=clock)
    outbox.append(P, "old", b"x")
    clock.now += 30
    outbox.append(P, "new", b"x")
    clock.now += 40
    assert outbox.expire() == 1 and ids(outbox) == ["new"] and outbox.expired == 1


def test_outbox_store_mirror_follows_persist_and_can_be_replaced() -> None:
    store = RecordingStore()
    outbox = Outbox(store=store)
    outbox.append(P, "m1", b"x")
    outbox.append(P, "m2", b"x", persist=False)  # the store has it already
    outbox.ack(P, "m1")
    assert store.added == ["m1"] and store.removed == ["m1"]
    other = RecordingStore()
    assert outbox.replace_store(other) is store
    outbox.append(P, "m3", b"x")
    assert other.added == ["m3"] and store.added == ["m1"]
    assert outbox.discard_pair(P) == 2 and other.removed == []  # the store keeps them
    assert outbox.total_count == 0 and outbox.total_bytes == 0


def test_outbox_drop_through_forgets_what_a_non_acking_peer_was_sent() -> None:
    outbox = Outbox()
    entries = [outbox.append(P, f"m{i}", b"x") for i in range(4)]
    assert outbox.drop_through(P, entries[1].seq) == 2 and ids(outbox) == ["m2", "m3"]


# -- Delivery with fake connections --------------------------------------------------------


def payloads(peer: Any) -> List[str]:
    return [orjson.loads(frame_payload(f))["p"] for f in conn_of(peer).frames]


def msg(text: str) -> bytes:
    return orjson.dumps({"p": text})


async def test_delivery_queues_pushes_and_resends_unacked_in_order_on_reconnect() -> None:
    host = FakeHost()
    delivery = host.delivery
    assert delivery.to_pair(P, [], "m1", msg("queued")) == {}
    alice = make_peer("a1", "alice")
    host.peers["a1"] = alice
    delivery.peer_opened(alice)
    assert payloads(alice) == ["queued"]
    assert delivery.to_pair(P, ["a1"], "m2", msg("live")) == {"a1": True}
    delivery.acked(alice, "m1")
    again = make_peer("a1", "alice")  # the same client reconnects
    host.peers["a1"] = again
    delivery.peer_opened(again)
    assert payloads(again) == ["live"]  # only the unacked one, again
    assert host.stats["messages_sent"] == 1 and delivery.stats()["resent"] == 2


async def test_delivery_skips_a_full_connection_and_catches_it_up_in_order() -> None:
    host = FakeHost()
    alice = make_peer("a1", "alice")
    host.peers["a1"] = alice
    host.delivery.peer_opened(alice)
    conn_of(alice).is_writable = False
    for i in range(3):
        assert host.delivery.to_pair(P, ["a1"], f"m{i}", msg(str(i))) == {"a1": True}
    assert payloads(alice) == []
    conn_of(alice).is_writable = True
    assert host.delivery.flush(alice) == 3 and payloads(alice) == ["0", "1", "2"]


async def test_delivery_addressed_to_one_connection_skips_its_siblings() -> None:
    host = FakeHost()
    a1, a2 = make_peer("a1", "alice"), make_peer("a2", "alice")
    host.peers.update({"a1": a1, "a2": a2})
    for peer in (a1, a2):
        host.delivery.peer_opened(peer)
    assert host.delivery.to_connections(["a2", "zz"], "c1", msg("only a2"), only=True) == {
        "a2": True, "zz": False}
    host.delivery.to_pair(P, ["a1", "a2"], "m2", msg("both"))
    assert payloads(a1) == ["both"] and payloads(a2) == ["only a2", "both"]


async def test_delivery_forgets_what_a_never_acking_peer_was_sent_when_it_leaves() -> None:
    host = FakeHost()
    raw = make_peer("r1", "alice", resumable=False)  # a raw client without x-uuid
    host.peers["r1"] = raw
    host.delivery.peer_opened(raw)
    host.delivery.to_pair(P, ["r1"], "m1", msg("once"))
    host.delivery.peer_closed(raw)
    assert host.delivery.stats()["outbox_depth"] == 0


async def test_delivery_ack_waiters_resolve_locally_remotely_or_time_out() -> None:
    host = FakeHost()
    alice = make_peer("a1", "alice")
    host.peers["a1"] = alice
    delivery = host.delivery
    local = asyncio.ensure_future(delivery.wait_ack(P, "m1", 5, delivery.expect_ack(P, "m1")))
    remote = asyncio.ensure_future(delivery.wait_ack(P, "m2", 5,
                                                     delivery.expect_ack(P, "m2")))
    delivery.acked(alice, "m1")  # before the waiting task even ran: not missed
    delivery.remote_acked(P, "m2", "elsewhere")
    assert await local == "a1" and await remote == "elsewhere"
    assert await delivery.wait_ack(P, "never", 0.01, delivery.expect_ack(P, "never")) is None
    delivery.expect_ack(P, "dropped")
    delivery.drop_waiter(P, "dropped")  # a send that failed stops waiting
    assert not delivery._waiters


async def test_delivery_without_cache_writes_directly_and_queues_nothing() -> None:
    host = FakeHost(enable_message_cache=False)
    alice = make_peer("a1", "alice")
    host.peers["a1"] = alice
    assert host.delivery.to_pair(P, ["a1", "gone"], "m1", msg("x")) == {
        "a1": True, "gone": False}
    assert payloads(alice) == ["x"] and host.delivery.stats()["outbox_depth"] == 0
    assert not host.delivery.is_queued(P, "m1")


async def test_delivery_cluster_seam_enqueue_and_forget() -> None:
    host = FakeHost()
    host.delivery.enqueue(P, "m1", msg("later"), persist=False)
    assert host.delivery.is_queued(P, "m1")
    assert host.delivery.forget_pair(P) == 1 and not host.delivery.is_queued(P, "m1")


# -- HandlerTasks ----------------------------------------------------------------------------


async def test_handler_tasks_run_sync_inline_async_as_tasks_and_count_failures(
        caplog: pytest.LogCaptureFixture) -> None:
    tasks = HandlerTasks("test")
    seen: List[str] = []
    release = asyncio.Event()

    async def slow(tag: str) -> None:
        await release.wait()
        seen.append(tag)

    async def broken() -> None:
        raise RuntimeError("boom")

    def sync_broken() -> None:
        raise ValueError("bad")

    tasks.spawn(seen.append, "sync")  # runs now, no task
    tasks.spawn(slow, "async")
    with caplog.at_level(logging.ERROR):
        tasks.spawn(broken)
        tasks.spawn(sync_broken)
        assert seen == ["sync"] and tasks.active == 2
        release.set()
        for _ in range(5):
            await asyncio.sleep(0)
    assert seen == ["sync", "async"] and tasks.active == 0
    assert tasks.completed == 2 and tasks.failed == 2
    assert "boom" in caplog.text and "bad" in caplog.text


async def test_handler_tasks_cancel_all_waits_for_the_grace_then_cancels() -> None:
    tasks = HandlerTasks("test")
    finished: List[str] = []

    async def quick() -> None:
        await asyncio.sleep(0)
        finished.append("quick")

    async def stuck() -> None:
        await asyncio.Event().wait()

    tasks.spawn(quick)
    tasks.spawn(stuck)
    await tasks.cancel_all(grace=0.05)
    assert finished == ["quick"] and tasks.active == 0


async def test_delivery_forgets_a_pair_when_its_last_connection_closes_with_nothing_queued(
) -> None:
    host = FakeHost()
    delivery = host.delivery
    for n in range(200):  # a client reconnecting with a fresh platform name each time
        peer = make_peer(f"c{n}", "alice", platform=f"plat-{n}")
        host.peers[peer.uuid] = peer
        delivery.peer_opened(peer)
        delivery.to_pair(peer.pair, [peer.uuid], f"m{n}", msg("hi"))
        delivery.acked(peer, f"m{n}")
        del host.peers[peer.uuid]
        delivery.peer_closed(peer)
    assert len(delivery._acking) == 0 and len(delivery._written) == 0
    # a pair with messages still queued keeps its state: a reconnect gets them again
    a1 = make_peer("a1", "alice")
    host.peers["a1"] = a1
    delivery.peer_opened(a1)
    delivery.to_pair(P, ["a1"], "kept", msg("kept"))
    del host.peers["a1"]
    delivery.peer_closed(a1)
    assert P in delivery._acking
    again = make_peer("a2", "alice")
    host.peers["a2"] = again
    delivery.peer_opened(again)
    assert payloads(again) == ["kept"]
