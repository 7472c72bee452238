"""The scaling pieces of the cluster without sockets or Redis: the shard ring, the
"pairs" batch codec, the send batch, stream-entry bookkeeping, the handled-frame record,
and the pub/sub base's batching and cross-node dedupe on the in-memory bus."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, List, Tuple

import pytest

from maim_message.backends.cluster_base import Selector
from maim_message.backends.frame_dedupe import DedupeBuckets, frame_token
from maim_message.backends.memory_bus import MemoryBus, MemoryCluster
from maim_message.backends.pubsub_messages import (
    AckMessage,
    FanoutMessage,
    PairMessage,
    decode_batch,
    encode_message,
    encode_pair_groups,
    encode_pairs,
)
from maim_message.backends.pubsub_state import PairState
from maim_message.backends.redis_batch import SendTurn
from maim_message.backends.redis_keys import Keys
from maim_message.backends.resp_pack import Packed, pack
from maim_message.backends.resp_reader import RespReader
from maim_message.backends.shard_ring import ShardRing
from maim_message.backends.stream_ids import StreamIds
from maim_message.core.dedupe import DedupeWindow
from maim_message.errors import ClusterError
from maim_message.runtime.callbacks import HandlerTasks
from maim_message.server.acks import AckAfterHandling, GatedFrame, Receipt

from .fakes import FakeHost, make_peer
from .test_cluster_seam import settle, stop, texts, two_nodes

# -- shard ring ----------------------------------------------------------------------------


def test_the_ring_spreads_pairs_and_moves_few_when_a_shard_is_added() -> None:
    pairs = [Keys.pair_id((f"user{i}", "qq")) for i in range(3000)]
    two = ShardRing(["redis://a", "redis://b"])
    placed = [two.shard_of(p) for p in pairs]
    assert placed == [two.shard_of(p) for p in pairs]  # stable
    assert 1000 < placed.count(0) < 2000  # both shards carry a fair share
    three = ShardRing(["redis://a", "redis://b", "redis://c"])
    moved = sum(1 for p, s in zip(pairs, placed) if three.shard_of(p) != s)
    assert moved < len(pairs) / 2  # ~1/3 move to the new shard, not most of them
    assert all(three.shard_of(p) == 2 for p, s in zip(pairs, placed)
               if three.shard_of(p) != s)  # and only to the new one
    assert ShardRing(["only"]).shard_of(pairs[0]) == 0
    with pytest.raises(ValueError):
        ShardRing([])


# -- the "pairs" batch on the channels ------------------------------------------------------


def test_a_pairs_batch_round_trips_and_single_messages_still_decode() -> None:
    msgs = [PairMessage("n1", "alice", "qq", "m1", "5-0", b'{"a":"x\\ny"}'),
            PairMessage("n1", "alice", "qq", "m2", "5-0", b"", notify=True),
            PairMessage("n1", "bob", "tg", "m3", "6-1", b"\n\n")]
    assert decode_batch(encode_pairs("n1", msgs)) == msgs
    unstored = [m._replace(stream_id="") for m in msgs]  # as a send batch holds them
    groups = [(("alice", "qq"), unstored[:2], "5-0"), (("bob", "tg"), unstored[2:], "6-1")]
    assert decode_batch(encode_pair_groups("n1", groups)) == msgs  # one id per group
    ack = AckMessage("n2", "alice", "qq", "m1", "u1")
    assert decode_batch(encode_message(ack)) == [ack]
    one_entry = (b'{"type":"pairs","origin":"n1","groups":1}\n'
                 b'["a","qq",[["m1",1,0],["m2",2,0]]]\n7-0\nxyy')
    assert [(m.msg_id, m.stream_id, m.payload) for m in decode_batch(one_entry)] == [
        ("m1", "7-0", b"x"), ("m2", "7-0", b"yy")]  # the batch script's form: one id
    with pytest.raises(ValueError):
        decode_batch(one_entry[:-1])  # shorter than its header says


# -- the send batch (what one script call carries) ------------------------------------------


def transaction(item: Tuple[Any, ...]) -> List[bytes]:
    """A ``("MULTI", Packed)`` item's commands, each as the generic packer writes it."""
    assert item[0] == "MULTI" and len(item) == 2 and isinstance(item[1], Packed)
    reader = RespReader()
    reader.feed(item[1].data)
    commands = reader.take()
    assert len(commands) == item[1].commands and not reader.has_unread
    return [pack(tuple(cmd)) for cmd in commands]


async def test_a_send_batch_makes_one_entry_per_pair_and_publishes_per_node() -> None:
    loop = asyncio.get_running_loop()
    keys = Keys("p")
    turn = SendTurn()
    futs = [loop.create_future() for _ in range(2)]
    turn.add(("alice", "qq"), PairMessage("n1", "alice", "qq", "m1", "", b"a"), True)
    turn.add(("alice", "qq"), PairMessage("n1", "alice", "qq", "m2", "", b"b"), True)
    turn.add(("bob", "qq"), PairMessage("n1", "bob", "qq", "m3", "", b"c"), True)
    turn.waiters += [(("alice", "qq"), futs[0]), (("bob", "qq"), futs[1])]  # who awaits
    turn.mark("tok")
    turn.delete(*keys.pair_keys(("carol", "qq"))[:2], True, ["1-0", "2-0"])
    items = turn.commands(keys, "100", "60000", "p:f:1", 2000)
    stream_a, _, where_a = keys.pair_keys(("alice", "qq"))
    stream_b, _, where_b = keys.pair_keys(("bob", "qq"))
    carol_stream, carol_index, _ = keys.pair_keys(("carol", "qq"))
    # one transaction of plain commands (no message goes through Lua), the acked
    # entries' deletes outside it (a Redis out of memory refuses the transaction but
    # takes a delete), then the idle pair's cleanup script (no per-message arguments)
    assert transaction(items[0]) == [pack(cmd) for cmd in (
        ("HSET", "p:f:1", "tok", "h"), ("PEXPIRE", "p:f:1", 2000),
        ("XADD", stream_a, "MAXLEN", "~", "100", "*", "m1", b"a", "m2", b"b"),
        ("PEXPIRE", stream_a, "60000"), ("HGETALL", where_a),
        ("XADD", stream_b, "MAXLEN", "~", "100", "*", "m3", b"c"),
        ("PEXPIRE", stream_b, "60000"), ("HGETALL", where_b))]
    assert items[1:] == [("XDEL", carol_stream, "1-0", "2-0"),
                         ("EVALSHA", "drop_empty", 0, carol_stream, carol_index)]
    stored: List[Tuple[Any, ...]] = []
    routed: List[Tuple[Any, ...]] = []
    # EXEC's reply; the node leaves out its own connections (n1)
    reply = [1, 1, b"9-0", 1, [b"ua", b"n2", b"ua2", b"n1"], b"9-1", 1, [b"ub", b"n1"]]
    publish = turn.resolve(reply, b"n1", lambda *a: stored.append(a),
                           lambda *a: routed.append(a))
    assert stored == [(("alice", "qq"), ["m1", "m2"], "9-0"), (("bob", "qq"), ["m3"], "9-1")]
    # (with how many messages went into the pair's stream)
    assert routed == [(("alice", "qq"), [("ua", "n2")], 2), (("bob", "qq"), [], 1)]
    assert set(publish) == {"n2"}  # never to the origin itself
    sent = decode_batch(encode_pair_groups("n1", publish["n2"]))
    assert [(m.origin, m.pair, m.msg_id, m.stream_id, m.payload) for m in sent] == [
        ("n1", ("alice", "qq"), "m1", "9-0", b"a"), ("n1", ("alice", "qq"), "m2", "9-0", b"b")]
    assert futs[0].result() == ("9-0", [("ua", "n2")]) and futs[1].result() == ("9-1", [])


def test_a_batch_of_deletes_only_is_no_transaction() -> None:
    keys = Keys("p")
    turn = SendTurn()
    turn.delete(*keys.pair_keys(("carol", "qq"))[:2], False, ["1-0"])
    stream = keys.pair_keys(("carol", "qq"))[0]
    assert turn.commands(keys, "100", "60000", "p:f:1", 2000) == [("XDEL", stream, "1-0")]


async def test_a_failed_send_batch_fails_its_waiters_and_the_receipts_of_its_frames() -> None:
    turn = SendTurn()
    assert turn.empty
    fut = asyncio.get_running_loop().create_future()
    turn.add(("alice", "qq"), PairMessage("n1", "alice", "qq", "m1", "", b"a"), True)
    turn.waiters.append((("alice", "qq"), fut))
    receipt = Receipt(("bob", "qq", "f1"))
    turn.receipts.append(receipt)  # a gated frame: its ack waits, nobody awaits the send
    assert not turn.empty
    error = ClusterError("down")
    turn.fail(error)
    assert fut.exception() is error and receipt.failure is error


def test_a_command_refused_inside_the_transaction_fails_the_batch() -> None:
    from redis.exceptions import ResponseError
    turn = SendTurn()
    turn.add(("alice", "qq"), PairMessage("n1", "alice", "qq", "m1", "", b"a"), True)
    turn.commands(Keys("p"), "100", "60000", "p:f:1", 2000)
    stored: List[Any] = []
    with pytest.raises(ClusterError, match="WRONGTYPE"):
        turn.resolve([ResponseError("WRONGTYPE Operation against a key"), 1, []], b"n1",
                     lambda *a: stored.append(a), lambda *a: stored.append(a))
    assert stored == []  # nothing is taken as stored


# -- stream entries: deleted once every message in them is acked -----------------------------


def test_an_entry_is_deleted_when_all_its_messages_are_acked() -> None:
    ids = StreamIds()
    pair = ("alice", "qq")
    ids.known(pair, "m1", "5-0")
    ids.known(pair, "m2", "5-0", origin="n9")
    ids.known(pair, "m1", "5-0")  # read again (stream + channel): counted once
    first = ids.acked(pair, ["m1"])
    assert first.sids == [] and first.by_msg_id == []
    second = ids.acked(pair, ["m2", "zz"])
    assert second.sids == ["5-0"] and second.notify == [("n9", "m2")]
    assert second.by_msg_id == ["zz"]  # not known here: deleted through the index
    assert ids.idle(pair) and len(ids) == 0


def test_an_entrys_messages_from_another_node_are_counted_once_each() -> None:
    """A channel batch's group (one entry) is known in one call: the entry goes with its
    last ack, and a message whose origin waits for its ack names that origin."""
    ids = StreamIds()
    pair = ("alice", "qq")
    ids.known_entry(pair, [("m1", b"", False), ("m2", b"", True)], "6-0", "n9")
    ids.known_entry(pair, [("m2", b"", True)], "6-0", "n9")  # again (a re-read): once
    ids.known_entry(pair, [("m3", b"", False)], "", "n9")  # not stored: nothing to delete
    assert len(ids) == 2 and not ids.has(pair, "m3")
    assert ids.acked(pair, ["m2"]).notify == [("n9", "m2")]
    last = ids.acked(pair, ["m1"])
    assert last.sids == ["6-0"] and last.notify == []


def test_an_ack_that_beats_the_store_answer_is_applied_when_it_arrives() -> None:
    ids = StreamIds()
    pair = ("alice", "qq")
    ids.pending(pair, "m1")
    ids.pending(pair, "m2")
    assert ids.acked(pair, ["m1"]).sids == []  # its entry is not known yet
    assert ids.stored(pair, ["m1", "m2"], "7-0") == ["m1"]  # ack it again now
    assert ids.acked(pair, ["m1"]).sids == []  # m2 of the same entry is still unacked
    assert ids.acked(pair, ["m2"]).sids == ["7-0"]
    ids.forget(pair)
    assert ids.stored(pair, ["m3"], "8-0") == []  # the pair left: nothing to do here


def test_an_ack_repeated_before_the_store_answer_is_not_taken_for_an_entry() -> None:
    ids = StreamIds()
    pair = ("alice", "qq")
    ids.pending(pair, "m1")
    twice = ids.acked(pair, ["m1", "m1"])  # two connections of the pair ack it at once
    assert twice.sids == [] and twice.by_msg_id == []  # no "acked" marker as a stream id
    assert ids.stored(pair, ["m1"], "9-0") == ["m1"]  # acked again once its entry is known
    assert ids.acked(pair, ["m1"]).sids == ["9-0"]


def test_an_ack_before_the_pair_leaves_still_deletes_its_entry() -> None:
    """A receiver acks and disconnects before Redis answered with the entry (tail
    --count 1): the answer deletes it, and a read of the stream on the pair's return here
    leaves the acked message out."""
    ids = StreamIds()
    pair = ("bob", "qq")
    ids.pending(pair, "m1")
    ids.acked(pair, ["m1"])
    ids.forget(pair)  # the last connection closed
    assert ids.acked_while_away(pair, ["m1"])  # the answer: delete the entry
    assert ids.acked_before_leaving(pair) == {"m1"}  # (its delete follows a read)
    assert ids.acked_before_leaving(pair) == set()  # asked once
    assert not ids.acked_while_away(pair, ["m1"])


def test_an_entry_with_an_unacked_message_stays_when_the_pair_leaves() -> None:
    ids = StreamIds()
    pair = ("bob", "qq")
    ids.pending(pair, "m1")
    ids.pending(pair, "m2")
    ids.acked(pair, ["m1"])
    ids.forget(pair)
    assert not ids.acked_while_away(pair, ["m1", "m2"])  # m2 needs the entry
    assert ids.acked_before_leaving(pair) == {"m1"}  # m1 is left out of a read here
    other = ("carol", "qq")
    ids.pending(other, "m3")
    ids.forget(other)  # nothing acked: nothing kept
    assert not ids.acked_while_away(other, ["m3"]) and ids.acked_before_leaving(other) == set()


def test_a_pair_that_leaves_twice_before_the_answers_keeps_both_acks() -> None:
    ids = StreamIds()
    pair = ("bob", "qq")
    ids.pending(pair, "x")
    ids.acked(pair, ["x"])
    ids.forget(pair)  # left; back here; acked y; left again, before x's answer
    ids.pending(pair, "y")
    ids.acked(pair, ["y"])
    ids.forget(pair)
    assert ids.acked_while_away(pair, ["x"]) and ids.acked_while_away(pair, ["y"])
    assert ids.acked_before_leaving(pair) == {"x", "y"}


def test_released_pairs_are_bounded_oldest_first() -> None:
    from maim_message.backends import stream_ids

    ids = StreamIds()
    for n in range(stream_ids.MAX_RELEASED + 5):
        pair = (f"u{n}", "qq")
        ids.pending(pair, "m")
        ids.acked(pair, ["m"])
        ids.forget(pair)
    assert len(ids._released) == stream_ids.MAX_RELEASED
    assert not ids.acked_while_away(("u0", "qq"), ["m"])  # the oldest went first
    assert ids.acked_while_away((f"u{stream_ids.MAX_RELEASED + 4}", "qq"), ["m"])


def test_a_read_that_skips_an_acked_message_remembers_it_for_re_reads() -> None:
    ids = StreamIds()
    pair = ("bob", "qq")
    ids.acked_in_entry(pair, "5-0", "a")  # the backlog read left it out
    ids.known(pair, "b", "5-0")
    assert ids.was_acked(pair, "5-0", "a") and not ids.was_acked(pair, "5-0", "b")
    assert ids.acked(pair, ["b"]).sids == ["5-0"]  # b was the entry's last unacked one


# -- the handled-frame record ----------------------------------------------------------------


def test_frames_are_recorded_in_expiring_time_buckets() -> None:
    now = [1000.0]
    buckets = DedupeBuckets("p", 300.0, clock=lambda: now[0])
    assert buckets.current() == "p:f:3" and buckets.both() == ("p:f:3", "p:f:2")
    now[0] = 1300.0
    assert buckets.both() == ("p:f:4", "p:f:3")  # a frame from 300 s ago is still found
    assert buckets.ttl_ms == 600_000
    token = frame_token(("alice", "qq", "m1"))
    assert token == frame_token(("alice", "qq", "m1")) and len(token) == 20
    assert token != frame_token(("alice", "qq", "m2"))
    assert "alice" not in token
    with pytest.raises(ValueError):
        DedupeBuckets("p", 0)


# -- the pub/sub base on the in-memory bus ----------------------------------------------------


def gated(handlers: HandlerTasks, key: Tuple[str, str, str], handler: Any,
          *args: Any) -> GatedFrame:
    """A frame acked on receipt whose handler waits for the gate (no ack to wait for)."""
    return GatedFrame(Receipt(key), handler, args, None, handlers)


async def test_a_frame_handled_on_one_node_is_not_handled_again_on_another() -> None:
    bus, n1, n2 = await two_nodes()
    calls: List[str] = []
    handlers = HandlerTasks("test")
    try:
        bob = n2.open(make_peer("b1", "bob"))
        await settle(lambda: ("bob", "qq") in bus.where)
        key = ("alice", "qq", "f1")

        async def forward(text: str) -> None:
            calls.append(text)
            sent = await n1.cluster.send_to_pair(("bob", "qq"), f"out-{text}",
                                                 b'{"payload":"hi"}')
            assert sent == {"b1": True}  # returned at once: bob's entry on n2, known

        first = gated(handlers, key, forward, "first")
        n1.cluster.admit(first)
        assert first.receipt.recorded and frame_token(key) in bus.frames  # with the send
        n2.cluster.admit(gated(handlers, key, forward, "re-sent to n2"))  # client re-send
        assert calls == ["first"] and n2.cluster.duplicate_frames == 1
        await settle(lambda: texts(bob) == ["hi"])

        def quiet() -> None:  # a handler that sends nothing is recorded when it returns
            calls.append("quiet")

        n2.cluster.admit(gated(handlers, ("alice", "qq", "f2"), quiet))
        n1.cluster.admit(gated(handlers, ("alice", "qq", "f2"), quiet))
        assert calls == ["first", "quiet"] and n1.cluster.duplicate_frames == 1
    finally:
        await stop(n1, n2)


async def test_a_frame_the_store_cannot_check_is_handled_if_acked_else_left_to_resend() -> None:
    _bus, n1, n2 = await two_nodes()
    calls: List[str] = []
    acks: List[str] = []
    unanswered: List[str] = []
    try:
        error = ClusterError("Redis gone")
        acked = gated(HandlerTasks("test"), ("alice", "qq", "f1"), calls.append, "acked")
        n1.cluster._frame_checked("t1", acked, False, error)
        assert calls == ["acked"]  # ack="receipt": acked already, handled, not dropped
        after = ack_after_handling(acks, unanswered)
        after.receive(_Conn(), ("alice", "qq", "f2"), calls.append, ("held",),  # type: ignore[arg-type]
                      lambda frame: n1.cluster._frame_checked("t2", frame, False, error))
        assert calls == ["acked"] and acks == [] and unanswered == ["f2"]  # re-sent later
        assert n1.cluster.unchecked_frames == 2
    finally:
        await stop(n1, n2)


class _Conn:
    is_open = True


def ack_after_handling(acks: List[str], unanswered: List[str]) -> AckAfterHandling:
    return AckAfterHandling(
        DedupeWindow(100, 60.0), HandlerTasks("test"), lambda: FakeHost().delivery,
        lambda conn, msg_id: acks.append(msg_id), lambda conns, exc, msg_id: None,
        lambda conns, exc, msg_id, retry: unanswered.append(msg_id))


async def test_a_gated_frame_is_acked_once_the_store_confirmed_its_handlers_send() -> None:
    acks: List[str] = []
    unanswered: List[str] = []
    after = ack_after_handling(acks, unanswered)
    confirmed = asyncio.get_running_loop().create_future()
    gates: List[GatedFrame] = []
    settled: List[Receipt] = []

    def settle_receipt(receipt: Receipt) -> asyncio.Future[Any]:
        settled.append(receipt)
        return confirmed  # the store has not confirmed the handler's send yet

    def handler(text: str) -> None:
        calls.append(text)

    calls: List[str] = []
    after.receive(_Conn(), ("alice", "qq", "f1"), handler, ("hi",),  # type: ignore[arg-type]
                  gates.append)
    assert calls == [] and len(gates) == 1  # waits for the cluster-wide check
    assert after.duplicate(_Conn(), ("alice", "qq", "f1"))  # type: ignore[arg-type]
    gates[0].receipt.settle = settle_receipt  # what the cluster's gate sets
    gates[0].run()
    assert calls == ["hi"] and settled and acks == []  # handled, not acked yet
    confirmed.set_result(None)
    await asyncio.sleep(0)
    assert acks == ["f1", "f1"]  # the first copy and the re-send that joined it

    failed = asyncio.get_running_loop().create_future()
    after.receive(_Conn(), ("alice", "qq", "f2"), handler, ("x",),  # type: ignore[arg-type]
                  gates.append)
    gates[1].receipt.settle = lambda receipt: failed
    gates[1].run()
    failed.set_exception(ClusterError("Redis gone"))
    await asyncio.sleep(0)
    assert acks == ["f1", "f1"] and unanswered == ["f2"]  # not acked: the client re-sends
    assert not after.duplicate(_Conn(), ("alice", "qq", "f2"))  # type: ignore[arg-type]

    after.receive(_Conn(), ("alice", "qq", "f3"), handler, ("y",),  # type: ignore[arg-type]
                  gates.append)
    gates[2].skip()  # a duplicate: another node handled it
    assert acks == ["f1", "f1", "f3"] and calls == ["hi", "x"]


async def test_frames_waiting_for_one_confirmation_are_acked_together_in_order() -> None:
    acks: List[str] = []
    unanswered: List[str] = []
    after = ack_after_handling(acks, unanswered)
    loop = asyncio.get_running_loop()
    batch, failing = loop.create_future(), loop.create_future()
    gates: List[GatedFrame] = []
    for n, confirmation in enumerate([batch, batch, failing, batch]):
        after.receive(_Conn(), ("alice", "qq", f"f{n}"), lambda: None, (),  # type: ignore[arg-type]
                      gates.append)
        gates[-1].receipt.settle = lambda receipt, c=confirmation: c
        gates[-1].run()
    await asyncio.sleep(0)
    assert acks == [] and len(batch._callbacks) == 1  # type: ignore[attr-defined]
    batch.set_result(None)  # one callback for the three frames that wait for it
    await asyncio.sleep(0)
    assert acks == ["f0", "f1", "f3"]
    failing.set_exception(ClusterError("Redis gone"))
    await asyncio.sleep(0)
    assert acks == ["f0", "f1", "f3"] and unanswered == ["f2"]
    assert not after._waiting  # nothing kept once confirmed


def test_a_send_in_a_gated_handler_marks_the_frame_once_and_holds_its_ack() -> None:
    from maim_message.backends.cluster_guard import _FRAME, frame_for_send
    from maim_message.server.acks import CURRENT_RECEIPT

    assert frame_for_send(False) == (None, None)  # not inside a handler
    held = Receipt(("alice", "qq", "f1"))
    held.settle = lambda receipt: None  # the gate's settle: the ack waits for the store
    reset = _FRAME.set((held, "tok1"))
    try:
        assert frame_for_send(False) == ("tok1", held)  # first send records the frame
        assert frame_for_send(False) == (None, held)  # later sends do not
        assert frame_for_send(True) == (None, None)  # ack_timeout=...: that send waits
    finally:
        _FRAME.reset(reset)
    acked = Receipt(("alice", "qq", "f2"), holds_ack=False)  # ack="receipt": acked already
    acked.settle = lambda receipt: None
    reset = _FRAME.set((acked, "tok2"))
    try:
        assert frame_for_send(False) == ("tok2", None)  # recorded, but the send waits
    finally:
        _FRAME.reset(reset)
    plain = Receipt(("bob", "qq", "f3"))  # a handler started without the gate
    token = CURRENT_RECEIPT.set(plain)
    try:
        assert frame_for_send(False) == (frame_token(("bob", "qq", "f3")), None)
        assert frame_for_send(False) == (None, None)
    finally:
        CURRENT_RECEIPT.reset(token)


async def test_acks_of_one_loop_turn_become_one_delete_per_pair() -> None:
    bus = MemoryBus()
    host = FakeHost()
    node = host.cluster = MemoryCluster(bus, "n1")
    await node.start(host)
    deletes: List[Tuple[Any, List[str], bool]] = []
    original = node._store_delete

    def spy(pair: Any, sids: List[str], idle: bool) -> None:
        deletes.append((pair, list(sids), idle))
        original(pair, sids, idle)

    node._store_delete = spy  # type: ignore[method-assign]
    try:
        alice = host.open(make_peer("a1", "alice"))
        await settle(lambda: not node._pairs[alice.pair].loading)
        for i in range(3):
            await node.send_to_pair(alice.pair, f"m{i}", b'{"payload":"%d"}' % i)
        await settle(lambda: len(node._sids) == 3 and texts(alice) == ["0", "1", "2"])
        for i in range(3):
            host.ack(alice, f"m{i}")
        await settle(lambda: alice.pair not in bus.streams)
        assert len(deletes) == 1  # one call for the three acks of the turn
        assert len(deletes[0][1]) == 3 and deletes[0][2] is True  # idle: drop the keys
    finally:
        await node.stop()


@asynccontextmanager
async def memory_node() -> AsyncIterator[Tuple[MemoryBus, FakeHost, MemoryCluster]]:
    """A started MemoryCluster node "n1" on its own bus (stopped on the way out)."""
    bus = MemoryBus()
    host = FakeHost()
    node = host.cluster = MemoryCluster(bus, "n1")
    await node.start(host)
    try:
        yield bus, host, node
    finally:
        await node.stop()


async def test_a_channel_batch_is_handled_per_pair_run_and_entry() -> None:
    """One ``pairs`` batch: every held pair's messages are delivered in order, entries at
    or before what the pair's stream read covered are not delivered twice, a pair still
    loading buffers them, an unheld pair and the node's own messages are skipped, and
    one bad message does not stop the rest."""
    async with memory_node() as (_bus, host, node):
        alice = host.open(make_peer("a1", "alice"))
        bob = host.open(make_peer("b1", "bob"))
        await settle(lambda: not node._pairs[alice.pair].loading
                     and not node._pairs[bob.pair].loading)
        node._pairs[alice.pair].loaded_upto = (5, 0)  # the stream read covered 5-0
        carol = ("carol", "qq")
        node._pairs[carol] = loading = PairState(loading=True)

        def msg(user: str, i: int, sid: str, origin: str = "n2") -> PairMessage:
            return PairMessage(origin, user, "qq", f"{user}{i}", sid,
                               b'{"payload":"%d"}' % i)

        batch: List[Any] = [msg("alice", 0, "5-0"), msg("alice", 1, "7-0"),
                            msg("alice", 2, "7-0"), msg("bob", 0, "3-0"),
                            msg("dave", 0, "7-0"), msg("bob", 1, "3-0", origin="n1"),
                            msg("carol", 0, "7-0"), msg("bob", 9, "not-an-id"),
                            msg("bob", 2, "8-0")]
        node.handle_messages(batch)
        assert texts(alice) == ["1", "2"]  # 5-0 was read from the stream already
        assert texts(bob) == ["0", "2"]  # its own message is not delivered again
        assert [m for m, _p, _s in loading.buffer] == ["carol0"]
        assert node._sids.has(alice.pair, "alice0") and node._sids.has(bob.pair, "bob2")
        assert not node._sids.has(("dave", "qq"), "dave0")
        assert node.remote_deliveries == 7


async def test_a_bad_message_in_a_channel_batch_does_not_stop_the_rest() -> None:
    """A fan-out whose log id does not parse, then a pair message: the pair message is
    delivered and the node's channel reader keeps reading."""
    async with memory_node() as (bus, host, node):
        alice = host.open(make_peer("a1", "alice"))
        await settle(lambda: not node._pairs[alice.pair].loading)
        node.handle_messages([
            FanoutMessage("n2", Selector("all", None), "f1", b'{"payload":"f"}', "bogus"),
            PairMessage("n2", "alice", "qq", "m1", "", b'{"payload":"1"}')])
        assert texts(alice) == ["1"]
        bus.publish("n1", FanoutMessage("n2", Selector("all", None), "f2", b'{"payload":"f"}',
                                        "bogus"))
        bus.publish("n1", PairMessage("n2", "alice", "qq", "m2", "", b'{"payload":"2"}'))
        await settle(lambda: texts(alice) == ["1", "2"])


async def test_a_frame_one_shard_has_is_a_duplicate_whatever_another_shard_answered() -> None:
    """Sharded check (with claims: the script): a shard that failed does not hide another
    shard's "handled"; each frame is claimed on its home shard only."""
    from maim_message.backends.frame_dedupe import home_shard

    shards, sent, replies = fake_shards(2)
    answers: List[Tuple[str, bool, Any]] = []
    cluster = checking_cluster(shards, True, answers)
    t1, t2 = (next(f"{i:08x}" + "00" * 6 for i in range(100) if home_shard(f"{i:08x}", 2) == h)
              for h in (0, 1))
    cluster._push_checks([t1, t2], [object(), object()])
    # every shard gets every frame (a record may be anywhere); each claims its own
    assert [pack(args[8:]) for args in sent] == [pack((0, 2, t1, t2)), pack((1, 2, t1, t2))]
    error = ClusterError("shard b refused")
    replies[0].set_result(b"10")  # shard a has t1, not t2
    replies[1].set_exception(error)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert answers == [(t1, True, None), (t2, False, error)]


def fake_shards(count: int) -> Tuple[List[Any], List[Tuple[Any, ...]],
                                     List[asyncio.Future[Any]]]:
    """Shards whose queues record what is pushed and hand out a future per command."""
    from types import SimpleNamespace

    loop = asyncio.get_running_loop()
    sent: List[Tuple[Any, ...]] = []
    futures: List[asyncio.Future[Any]] = []

    def push(args: Tuple[Any, ...], want_result: bool = False) -> Any:
        sent.append(args)
        futures.append(loop.create_future())
        return futures[-1]

    shards = [SimpleNamespace(index=i, queue=SimpleNamespace(push=push)) for i in range(count)]
    return shards, sent, futures


def checking_cluster(shards: List[Any], claims: bool,
                     answers: List[Tuple[str, bool, Any]]) -> Any:
    from maim_message.backends.redis_cluster import RedisCluster

    cluster: Any = RedisCluster.__new__(RedisCluster)
    cluster._shards = shards
    cluster.dedupe = DedupeBuckets("p", 60.0)
    cluster.node_id = "n1"
    cluster._claimant = "n1\x00abcd1234"  # node id and incarnation
    cluster.keys = Keys("p")
    cluster.frame_claims = claims
    cluster.held_frames = 0
    cluster._frame_checked = lambda token, frame, seen, error: answers.append(
        (token, seen, error))
    return cluster


async def test_without_claims_a_check_is_two_plain_reads_per_shard() -> None:
    """No script and no Lua per frame: HMGET of both buckets on every shard; a record on
    any shard (in either bucket) makes the frame a duplicate, a failed shard leaves the
    others unknown."""
    shards, sent, replies = fake_shards(2)
    answers: List[Tuple[str, bool, Any]] = []
    cluster = checking_cluster(shards, False, answers)
    current, previous = cluster.dedupe.both()
    cluster._push_checks(["t1", "t2", "t3"], [object(), object(), object()])
    assert [pack(args) for args in sent] == [
        pack(("HMGET", bucket, "t1", "t2", "t3")) for bucket in (current, previous) * 2]
    replies[0].set_result([None, None, None])
    replies[1].set_result([b"h", None, None])  # t1 recorded in the previous bucket
    replies[2].set_result([None, None, None])
    replies[3].set_result([None, None, None])
    await asyncio.sleep(0)
    assert answers == [("t1", True, None), ("t2", False, None), ("t3", False, None)]

    answers.clear()
    sent.clear()
    replies.clear()
    cluster._push_checks(["t1", "t2"], [object(), object()])
    error = ClusterError("shard b refused")
    replies[0].set_result([None, b"h"])  # shard a has t2
    replies[1].set_result([None, None])
    replies[2].set_exception(error)
    replies[3].set_result([None, None])
    await asyncio.sleep(0)
    assert answers == [("t1", False, error), ("t2", True, None)]


async def test_a_claim_found_by_a_plain_read_is_asked_of_the_check_script() -> None:
    """A node with claims on wrote a claim or a started record: whether it lives is the
    script's question (only for those frames; the others are answered at once)."""
    from types import SimpleNamespace

    shards, sent, replies = fake_shards(1)
    answers: List[Tuple[str, bool, Any]] = []
    cluster = checking_cluster(shards, False, answers)
    cluster.held_recheck = 3600.0
    frames: List[Any] = [SimpleNamespace(held=False) for _ in range(3)]
    cluster._push_checks(["t1", "t2", "t3"], frames)
    replies[0].set_result([b"@n2\x00beef", None, b"s@n2\x00beef"])
    replies[1].set_result([None, b"h", None])
    await asyncio.sleep(0)
    assert answers == [("t2", True, None)]
    assert len(sent) == 3 and sent[2][:2] == ("EVALSHA", "check")
    assert pack(sent[2][8:]) == pack((0, 0, "t1", "t3"))  # this node claims nothing
    replies[2].set_result(b"21")  # t1: a live node holds it; t3: started by a dead one
    await asyncio.sleep(0)
    assert answers == [("t2", True, None), ("t3", True, None)]
    assert cluster.held_frames == 1  # t1 is checked again later (not within this test)


def test_a_plain_read_answers_per_frame() -> None:
    from maim_message.backends.frame_dedupe import records_answer, split_asks

    assert records_answer([None, None], [None, None]) == "00"
    assert records_answer([b"h", None, None, b"@n\x00x"], [None, b"h", None, None]) == "1103"
    assert records_answer([b"s@n\x00x"], [b"h"]) == "1"  # a record anywhere wins
    # an ASK is asked of the script only where no shard saw it handled and all answered
    assert split_asks(3, ["300", "100"]) == "100"
    assert split_asks(3, ["300", "000"]) == "300"
    assert split_asks(3, ["300", None]) == "???"
    assert split_asks(2, ["01", "00"]) == "01"


def test_the_shards_answers_merge_into_one_per_frame() -> None:
    from maim_message.backends.frame_dedupe import merge_answers

    assert merge_answers(4, ["0120"]) == "0120"  # one shard: as it answered
    assert merge_answers(4, [None]) == "????"
    assert merge_answers(4, ["0000", "0000"]) == "0000"
    # a "handled" anywhere wins; else a home shard's "held" (only homes hold claims)
    assert merge_answers(4, ["1020", "0210"]) == "1210"
    # a failed shard: only what another shard saw handled is known
    assert merge_answers(4, ["1020", None]) == "1???"
    assert merge_answers(4, ["0000", None]) == "????"



def test_a_large_batch_of_checks_is_split_under_luas_unpack_limit() -> None:
    from maim_message.backends.redis_cluster import MAX_CHECK, RedisCluster

    cluster: Any = RedisCluster.__new__(RedisCluster)
    calls: List[Tuple[List[str], List[Any]]] = []
    cluster._push_checks = lambda tokens, frames: calls.append((tokens, frames))
    cluster._flush_scheduled, cluster._shards = True, []
    cluster._flushed = cluster._confirm = None
    count = 2 * MAX_CHECK + 500  # a reconnect storm's re-sends in one batch
    cluster._checks = [f"{n:020x}" for n in range(count)]
    cluster._checked = list(range(count))
    cluster._flush()
    assert [len(tokens) for tokens, _ in calls] == [MAX_CHECK, MAX_CHECK, 500]
    assert [t for tokens, _ in calls for t in tokens] == [f"{n:020x}" for n in range(count)]
    assert [f for _, frames in calls for f in frames] == list(range(count))
    assert MAX_CHECK * 2 < 7999  # the claims' HSET unpacks two arguments per frame
