"""Sharded Redis's frame check without sockets: each frame is claimed on its sender's
shard only; a frame claimed before (a re-send) has its marks read on every shard; a
failed claim leaves every frame of the call unchecked; one shard reads the marks."""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional, Tuple

import pytest

from maim_message.backends.redis_claims import split_claims
from maim_message.backends.redis_cluster import RedisCluster
from maim_message.server.acks import GatedFrame, Receipt


class FakeQueue:
    """A shard's command queue: records the commands, answers when told."""

    def __init__(self) -> None:
        self.pushed: List[Tuple[Any, ...]] = []
        self.replies: List[asyncio.Future[Any]] = []

    def push(self, args: Tuple[Any, ...], want_result: bool = False) -> Optional[Any]:
        self.pushed.append(args)
        if not want_result:
            return None
        fut = asyncio.get_running_loop().create_future()
        self.replies.append(fut)
        return fut

    def written(self) -> None:
        return None


def frame(user: str, msg_id: str) -> GatedFrame:
    return GatedFrame(Receipt((user, "qq", msg_id)), lambda: None, (), None, None)


def node_with(shards: int) -> Tuple[RedisCluster, List[FakeQueue], List[Any], List[Any]]:
    urls = [f"redis://127.0.0.1:{6000 + n}/0" for n in range(shards)]
    node = RedisCluster(urls, node_id="n1")
    queues = [FakeQueue() for _ in range(shards)]
    for shard, queue in zip(node._shards, queues):
        shard.queue = queue  # type: ignore[assignment]
    checked: List[Any] = []
    marks_read: List[Any] = []
    node._frame_checked = (  # type: ignore[method-assign]
        lambda token, f, seen, error: checked.append((f.receipt.key[2], seen, error)))
    node._push_checks = (  # type: ignore[method-assign]
        lambda tokens, frames: marks_read.append([f.receipt.key[2] for f in frames]))
    return node, queues, checked, marks_read


def senders_on_each_shard(node: RedisCluster) -> List[str]:
    """A sender user whose pair lives on shard 0, one on shard 1."""
    found: dict = {}
    for n in range(200):
        found.setdefault(node._shard((f"u{n}", "qq")).index, f"u{n}")
    return [found[0], found[1]]


def test_a_claim_reply_splits_new_frames_from_re_sends() -> None:
    assert split_claims("0110", 4) == ([0, 3], [1, 2])
    assert split_claims("", 0) == ([], [])
    assert split_claims("*", 3) == ([], [0, 1, 2])  # some were: all read their marks
    with pytest.raises(ValueError):
        split_claims("01", 3)


async def test_frames_are_claimed_on_their_senders_shard_and_re_sends_read_every_shard(
        ) -> None:
    node, queues, checked, marks_read = node_with(2)
    a, b = senders_on_each_shard(node)
    frames = [frame(a, "a1"), frame(b, "b1"), frame(a, "a2")]
    for f in frames:
        node.admit(f)
    node._flush()
    claims = [[args for args in q.pushed if args[1] == "claim"] for q in queues]
    assert [len(c) for c in claims] == [1, 1]  # one call per shard and batch
    assert not any(args[1] == "check" for q in queues for args in q.pushed)
    current, previous = node.dedupe.both("c")
    assert claims[0][0][3:5] == (current, previous) and ":c:" in current
    assert len(claims[0][0]) == 6 + 2 and len(claims[1][0]) == 6 + 1  # a's two, b's one
    queues[0].replies[0].set_result(b"01")  # a2 was claimed before: a re-send
    queues[1].replies[0].set_result(b"0")
    await asyncio.sleep(0)
    assert sorted(checked) == [("a1", False, None), ("b1", False, None)]
    assert marks_read == [["a2"]]  # only the re-send's marks are read (on every shard)


async def test_a_failed_claim_leaves_its_frames_unchecked() -> None:
    node, queues, checked, marks_read = node_with(2)
    a, _b = senders_on_each_shard(node)
    node.admit(frame(a, "a1"))
    node.admit(frame(a, "a2"))
    node._flush()
    boom = ConnectionError("shard down")
    queues[0].replies[0].set_exception(boom)
    await asyncio.sleep(0)
    assert checked == [("a1", False, boom), ("a2", False, boom)] and marks_read == []


async def test_with_one_shard_the_marks_are_read_directly() -> None:
    node, queues, checked, _marks_read = node_with(1)
    node._push_checks = RedisCluster._push_checks.__get__(node)  # type: ignore[method-assign]
    node.admit(frame("u1", "m1"))
    node._flush()
    assert [args[1] for args in queues[0].pushed] == ["check"]
    queues[0].replies[0].set_result(b"1")
    await asyncio.sleep(0)
    assert checked == [("m1", True, None)]
