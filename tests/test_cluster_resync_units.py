"""Reading a pair's stream on a node (the first load, the re-read after a node death or a
channel reconnect) without sockets or Redis: the in-memory bus, reads held or failed at
will. A failed read is tried again while the pair is held (its channel messages wait), a
re-read and the channel messages that arrive meanwhile go out merged in stream order, and
messages acked here are not delivered again by a re-read of an entry that others keep."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, List, Optional, Tuple

import pytest

from maim_message.backends import pubsub_cluster
from maim_message.backends.memory_bus import MemoryBus, MemoryCluster
from maim_message.backends.pubsub_messages import PairMessage
from maim_message.backends.pubsub_state import resync_merge
from maim_message.backends.stream_ids import ANY_ORIGIN, StreamIds
from maim_message.core.identity import fingerprint
from maim_message.errors import ClusterError

from .fakes import FakeHost, make_peer
from .test_cluster_seam import settle, stop, texts, two_nodes

Stored = List[Tuple[str, str, bytes]]
ALICE = ("alice", "qq")


def body(text: str) -> bytes:
    return b'{"payload":"%s"}' % text.encode()


class Reads:
    """Stands in for a node's ``_read_pair``: each read is a future the test settles
    (fail it, or answer with the bus's stream as it is then, or with given entries)."""

    def __init__(self, node: MemoryCluster) -> None:
        self.node = node
        self.pending: List[Tuple[Tuple[str, str], asyncio.Future[Stored]]] = []
        self.count = 0
        node._read_pair = self.read  # type: ignore[method-assign]

    def read(self, pair: Tuple[str, str]) -> Awaitable[Stored]:
        self.count += 1
        fut: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self.pending.append((pair, fut))
        return fut

    def stream(self, pair: Tuple[str, str]) -> Stored:
        stream = self.node.bus.streams.get(pair)
        return [] if stream is None else [
            (sid, msg_id, payload) for msg_id, (sid, payload) in stream.entries.items()]

    async def next(self) -> asyncio.Future[Stored]:
        # a retry comes after a (shortened) backoff timer: wait in time, bounded
        await asyncio.wait_for(self._any(), 5.0)
        return self.pending.pop(0)[1]

    async def _any(self) -> None:
        while not self.pending:
            await asyncio.sleep(0.001)

    async def fail(self, error: Optional[BaseException] = None) -> None:
        (await self.next()).set_exception(error or ClusterError("Redis did not confirm"))

    async def answer(self, entries: Optional[Stored] = None) -> None:
        fut = await self.next()
        fut.set_result(self.stream(ALICE) if entries is None else entries)


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pubsub_cluster, "READ_RETRY_FIRST", 0.001, raising=False)
    monkeypatch.setattr(pubsub_cluster, "READ_RETRY_MAX", 0.004, raising=False)


# -- 1. a failed backlog read ---------------------------------------------------------------


async def test_a_failed_backlog_read_is_tried_again_and_keeps_the_order(
        quick_retries: None, caplog: pytest.LogCaptureFixture) -> None:
    _bus, n1, n2 = await two_nodes()
    caplog.set_level(logging.DEBUG, logger=pubsub_cluster.__name__)
    try:
        for i in range(2):  # alice's backlog, sent while she was offline
            await n1.cluster.send_to_pair(ALICE, f"b{i}", body(f"b{i}"))
        reads = Reads(n2.cluster)
        alice = n2.open(make_peer("a1", "alice"))
        await reads.fail()
        await reads.fail(asyncio.CancelledError())  # a read the queue gave up on
        # meanwhile a new message arrives on the channel: it waits for the backlog
        await n1.cluster.send_to_pair(ALICE, "new", body("new"))
        await settle(lambda: n2.cluster._pairs[ALICE].buffer != [])
        assert texts(alice) == [] and n2.cluster._pairs[ALICE].loading
        await reads.answer()
        await settle(lambda: texts(alice) == ["b0", "b1", "new"])
        assert not n2.cluster._pairs[ALICE].loading and reads.count == 3
        assert n2.cluster.takeovers == 1
    finally:
        await stop(n1, n2)
    lines = [r for r in caplog.records if "backlog read" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.DEBUG, logging.INFO]
    label = fingerprint("alice") + "/qq"
    assert all(label in r.getMessage() and "alice" not in r.getMessage() for r in lines)
    assert all("alice" not in r.getMessage() for r in caplog.records)


async def test_a_pair_that_leaves_stops_the_retries(quick_retries: None) -> None:
    _bus, n1, n2 = await two_nodes()
    try:
        reads = Reads(n2.cluster)
        alice = n2.open(make_peer("a1", "alice"))
        await reads.fail()
        n2.close(alice)  # its last connection here: nothing to read it for
        await asyncio.sleep(0.05)  # several retry periods
        assert reads.count == 1 and ALICE not in n2.cluster._pairs
        again = n2.open(make_peer("a2", "alice"))  # a new load of its own
        await n1.cluster.send_to_pair(ALICE, "m", body("m"))
        await reads.answer()
        await settle(lambda: texts(again) == ["m"])
    finally:
        await stop(n1, n2)


async def test_stop_ends_a_read_that_is_being_retried(quick_retries: None) -> None:
    _bus, n1, n2 = await two_nodes()
    reads = Reads(n2.cluster)
    n2.open(make_peer("a1", "alice"))
    await reads.fail()
    await stop(n1, n2)
    assert not n2.cluster._loads
    count = reads.count
    await asyncio.sleep(0.02)
    assert reads.count == count  # nothing is read after the node stopped


async def test_a_failed_re_read_is_logged_and_tried_again(
        quick_retries: None, caplog: pytest.LogCaptureFixture) -> None:
    bus, n1, n2 = await two_nodes()
    caplog.set_level(logging.INFO, logger=pubsub_cluster.__name__)
    try:
        alice = n2.open(make_peer("a1", "alice"))
        await settle(lambda: not n2.cluster._pairs[ALICE].loading)
        reads = Reads(n2.cluster)
        channel = bus.channels.pop("n2")  # n2's channel is down: m0 is only stored
        await n1.cluster.send_to_pair(ALICE, "m0", body("m0"))
        bus.channels["n2"] = channel
        n2.cluster._resync_all("channel reconnected")
        await reads.fail()
        await reads.answer()
        await settle(lambda: texts(alice) == ["m0"])
    finally:
        await stop(n1, n2)
    failed = [r for r in caplog.records if "re-read of pair" in r.getMessage()]
    assert failed and failed[0].levelno == logging.WARNING
    assert all("alice" not in r.getMessage() for r in caplog.records)


# -- 2. order across a re-read --------------------------------------------------------------


@pytest.mark.parametrize("read_sees_s7", [False, True])
async def test_channel_messages_during_a_re_read_follow_what_it_finds(
        read_sees_s7: bool) -> None:
    bus, n1, n2 = await two_nodes()
    try:
        alice = n2.open(make_peer("a1", "alice"))
        await settle(lambda: not n2.cluster._pairs[ALICE].loading)
        await n1.cluster.send_to_pair(ALICE, "s4", body("s4"))
        await settle(lambda: texts(alice) == ["s4"])
        channel = bus.channels.pop("n2")  # n2's channel drops: s5, s6 are only stored
        for name in ("s5", "s6"):
            await n1.cluster.send_to_pair(ALICE, name, body(name))
        bus.channels["n2"] = channel  # back; the re-read is queued
        reads = Reads(n2.cluster)
        n2.cluster._resync_all("channel reconnected")
        before = reads.stream(ALICE)  # what the XRANGE finds when it runs first
        await n1.cluster.send_to_pair(ALICE, "s7", body("s7"))  # on the channel first
        await settle(lambda: n2.cluster._pairs[ALICE].rebuffer != [])
        assert texts(alice) == ["s4"]  # s7 waits for the re-read
        await reads.answer(None if read_sees_s7 else before)
        await settle(lambda: len(texts(alice)) >= 4)
        await asyncio.sleep(0)
        assert texts(alice) == ["s4", "s5", "s6", "s7"]  # each once, in stream order
        await n1.cluster.send_to_pair(ALICE, "s8", body("s8"))  # delivered at once again
        await settle(lambda: texts(alice)[-1:] == ["s8"])
        assert len(texts(alice)) == 5
    finally:
        await stop(n1, n2)


async def test_a_re_read_asked_for_while_one_is_pending_follows_it() -> None:
    bus, n1, n2 = await two_nodes()
    try:
        alice = n2.open(make_peer("a1", "alice"))
        await settle(lambda: not n2.cluster._pairs[ALICE].loading)
        reads = Reads(n2.cluster)
        n2.cluster._resync_all("node n9 died")
        first = reads.stream(ALICE)
        channel = bus.channels.pop("n2")  # m0 lands after the first read ran
        await n1.cluster.send_to_pair(ALICE, "m0", body("m0"))
        bus.channels["n2"] = channel
        n2.cluster._resync_all("channel reconnected")  # the pair's read is pending
        await reads.answer(first)
        await reads.answer()  # the second read finds m0
        await settle(lambda: texts(alice) == ["m0"])
        assert reads.count == 2
    finally:
        await stop(n1, n2)


def test_the_merge_keeps_stream_order_and_takes_each_message_once() -> None:
    entries = [("5-0", "s5", b"5"), ("6-0", "s6", b"6"), ("7-0", "s7", b"7")]
    held = [("7-0", "s7", b"7", "n1"),  # read too: once, with the origin that waits
            ("4-0", "s4", b"4", None),  # older than the read and not in it: acked
            ("8-0", "s8", b"8", None), ("", "u", b"u", None),  # newer / never stored
            ("9-0", "s9", b"9", None)]
    assert resync_merge(entries, held, (0, 0)) == [
        ("5-0", "s5", b"5", ANY_ORIGIN), ("6-0", "s6", b"6", ANY_ORIGIN),
        ("7-0", "s7", b"7", "n1"), ("8-0", "s8", b"8", None), ("", "u", b"u", None),
        ("9-0", "s9", b"9", None)]
    # an empty stream: what the last read covered still decides what is old
    assert resync_merge([], [("3-0", "a", b"", None), ("6-0", "b", b"", None)],
                        (5, 0)) == [("6-0", "b", b"", None)]


# -- 3. acked messages of an entry that is still in the stream ------------------------------


def test_acked_messages_are_remembered_until_their_entry_goes() -> None:
    ids = StreamIds()
    for msg_id in ("m1", "m2", "m3"):
        ids.known(ALICE, msg_id, "10-0")
    ids.known(ALICE, "n1", "11-0")
    assert ids.acked(ALICE, ["m1"]).sids == []
    assert ids.was_acked(ALICE, "10-0", "m1") and not ids.was_acked(ALICE, "10-0", "m2")
    assert not ids.was_acked(ALICE, "11-0", "m1") and not ids.has(ALICE, "m1")
    assert len(ids) == 3  # the remembered ack is not backlog
    assert ids.acked(ALICE, ["m2", "n1"]).sids == ["11-0"]  # a one-message entry goes
    assert ids.was_acked(ALICE, "10-0", "m2")
    assert ids.acked(ALICE, ["m3"]).sids == ["10-0"]  # the entry is deleted: forgotten
    assert not ids.was_acked(ALICE, "10-0", "m1") and not ids._done
    ids.known(ALICE, "p1", "12-0")
    ids.known(ALICE, "p2", "12-0")
    ids.acked(ALICE, ["p1"])
    ids.forget(ALICE)  # the pair left the node
    assert not ids.was_acked(ALICE, "12-0", "p1") and not ids._done


async def test_a_re_read_skips_what_was_acked_here_from_an_entry_still_kept() -> None:
    bus, n1, n2 = await two_nodes()
    try:
        alice = n2.open(make_peer("a1", "alice"))
        await settle(lambda: not n2.cluster._pairs[ALICE].loading)
        # one stream entry holds m1 and m2 (one sending batch of node n9)
        entry = [("10-0", "m1", body("m1")), ("10-0", "m2", body("m2"))]
        n2.cluster.handle_messages([PairMessage("n9", "alice", "qq", msg_id, sid, payload)
                                    for sid, msg_id, payload in entry])
        await settle(lambda: texts(alice) == ["m1", "m2"])
        n2.ack(alice, "m1")
        await settle(lambda: not n2.cluster._sids.has(ALICE, "m1"))  # the ack was applied
        reads = Reads(n2.cluster)
        n2.cluster._resync_all("node n9 died")
        await reads.answer(entry)
        for _ in range(20):  # the read's task delivers within a few loop turns
            await asyncio.sleep(0)
        assert texts(alice) == ["m1", "m2"]  # neither is delivered again
        n2.ack(alice, "m2")  # the entry goes; nothing is remembered any more
        await settle(lambda: not n2.cluster._sids._done)
        assert bus.streams.get(ALICE) is None
    finally:
        await stop(n1, n2)


async def test_the_node_alone_still_loads_a_pair_it_holds_after_a_retry(
        quick_retries: None) -> None:
    host = FakeHost()
    node = host.cluster = MemoryCluster(MemoryBus(), "n1")
    await node.start(host)
    try:
        await node.send_to_pair(ALICE, "b0", body("b0"))  # stored: nobody holds alice
        reads = Reads(node)
        alice: Any = host.open(make_peer("a1", "alice"))
        await reads.fail(OSError("connection reset"))
        await node.send_to_pair(ALICE, "own", body("own"))  # this node's own send waits
        assert texts(alice) == []
        await reads.answer()
        await settle(lambda: texts(alice) == ["b0", "own"])
    finally:
        await node.stop()
