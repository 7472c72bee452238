"""A node's channel connection to one Redis shard drops and comes back (real Redis).

redis-py re-subscribes every channel and confirms each; the node re-reads the streams it
may have missed messages of once per reconnect (not once per channel), and only those of
the pairs on that shard: what the other shards published still arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator, List

import pytest
from redis import asyncio as redis_asyncio

from maim_message.backends.redis_keys import Keys
from maim_message.backends.shard_ring import ShardRing
from maim_message.server import WebSocketServer

from .helpers_api import make_message
from .test_cluster import Receiver, RedisServer, node, presence, redis_url, started  # noqa: F401

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def two_shards() -> AsyncIterator[List[str]]:
    servers = [RedisServer(), RedisServer()]
    try:
        for server in servers:
            await server.ready()
        yield [server.url for server in servers]
    finally:
        for server in servers:
            server.stop()


def user_on(urls: List[str], shard: int) -> str:
    ring = ShardRing(urls)
    return next(f"user{n}" for n in range(1000)
                if ring.shard_of(Keys.pair_id((f"user{n}", "qq"))) == shard)


@pytest.mark.parametrize("cut", [0, 1])  # shard 0 also carries the fan-out channel
async def test_a_reconnected_channel_re_reads_its_shards_pairs_once(
        two_shards: List[str], caplog: pytest.LogCaptureFixture, cut: int) -> None:
    url = ",".join(two_shards)
    users = [user_on(two_shards, 0), user_on(two_shards, 1)]
    sender, holder = node(url, "s"), node(url, "h")
    await started(sender, holder)
    receivers = [Receiver(holder.port or 0, user) for user in users]
    cut_shard = redis_asyncio.Redis.from_url(two_shards[cut])
    try:
        for receiver in receivers:
            assert await receiver.client.connect()
        await presence(sender, 2)
        caplog.set_level(logging.INFO, logger="maim_message.backends.pubsub_cluster")
        stats: Any = holder.cluster.stats  # type: ignore[union-attr]
        before = stats()["resyncs"]
        killed = await cut_shard.client_kill_filter(_type="pubsub")
        assert killed >= 1  # the nodes' channel connections to that shard
        deadline = asyncio.get_running_loop().time() + 10
        while stats()["resyncs"] == before:
            assert asyncio.get_running_loop().time() < deadline, "no re-read after the cut"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # further confirmations would have re-read again by now
        assert stats()["resyncs"] == before + 1
        lines = [r.getMessage() for r in caplog.records if "re-reading" in r.getMessage()]
        mine = [line for line in lines if f"shard {cut}" in line]
        # the holder re-read its one pair on that shard (the sender holds none)
        assert mine == [f"cluster: re-reading 1 pair stream(s) (channel to shard {cut} "
                        "reconnected)"]
        # both pairs still get what is sent to them, through either shard
        for n, (user, receiver) in enumerate(zip(users, receivers)):
            await sender.send_message(make_message(f"after {n}", user, "qq"))
            await receiver.wait(lambda r=receiver, n=n: f"after {n}" in r.texts)
    finally:
        for receiver in receivers:
            await receiver.client.stop()
        await cut_shard.aclose()
        await sender.stop()
        await holder.stop()


class FanoutScene:
    """Two nodes on one Redis, a receiver connected to the holder, an admin client."""

    def __init__(self, sender: WebSocketServer, holder: WebSocketServer, receiver: Receiver,
                 admin: Any) -> None:
        self.sender, self.holder, self.receiver, self.admin = sender, holder, receiver, admin
        self.cluster: Any = holder.cluster

    async def broadcast(self, text: str) -> None:
        assert await self.sender.broadcast_message(make_message(text, "x", "qq"))
        await self.receiver.wait(lambda: text in self.receiver.texts)

    async def cut_channels(self) -> None:
        """Both nodes' channel connections dropped; the holder's is away for a second."""
        self.cluster._shards[0].channel._backoff = 1.0
        assert await self.admin.client_kill_filter(_type="pubsub") >= 2


@contextlib.asynccontextmanager
async def fanout_scene(url: str) -> AsyncIterator[FanoutScene]:
    sender, holder = node(url, "s"), node(url, "h")
    await started(sender, holder)
    receiver = Receiver(holder.port or 0, "u1")
    admin = redis_asyncio.Redis.from_url(url)
    try:
        assert await receiver.client.connect()
        await presence(sender, 1)
        yield FanoutScene(sender, holder, receiver, admin)
    finally:
        await receiver.client.stop()
        await admin.aclose()
        for server in (sender, holder):
            await server.stop()


async def test_a_fan_out_sent_while_a_channel_is_away_arrives_once_after(
        redis_url: str) -> None:  # noqa: F811
    """A broadcast reaches another node only through the channel; published while that
    node's channel connection is down, it is read from the fan-out log once the channel
    is back: delivered once, before what was broadcast after it."""
    async with fanout_scene(redis_url) as scene:
        await scene.cut_channels()
        await scene.broadcast("while away")
        await scene.broadcast("after")
        assert scene.receiver.texts == ["while away", "after"]
        assert scene.cluster.stats()["fanouts_recovered"] == 1
        assert scene.cluster.stats()["resyncs"] >= 1
        assert scene.sender.cluster.stats()["fanouts_recovered"] == 0  # type: ignore


async def test_a_bad_log_entry_is_skipped_once_and_the_missed_fan_out_still_arrives(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    async with fanout_scene(redis_url) as scene:
        await scene.cut_channels()
        await scene.admin.xadd(scene.cluster.keys.fanout_log, {"m": b"not a fan-out"})
        await scene.broadcast("while away")
        await scene.broadcast("after")
        assert scene.receiver.texts == ["while away", "after"]
        assert scene.cluster.stats()["fanouts_recovered"] == 1
        skipped = [r for r in caplog.records if "skipping fan-out log entry" in r.getMessage()]
        assert len(skipped) == 2  # once per node (both channels were cut), not in a loop


async def test_a_broadcast_still_goes_out_when_redis_refuses_to_log_it(
        redis_url: str) -> None:  # noqa: F811
    """Out of memory, Redis refuses the log append: the fan-out is published anyway."""
    async with fanout_scene(redis_url) as scene:
        await scene.admin.config_set("maxmemory", 1)
        try:
            await scene.broadcast("out of memory")
            assert await scene.admin.xlen(scene.cluster.keys.fanout_log) == 0
        finally:
            await scene.admin.config_set("maxmemory", 0)


async def test_a_log_made_again_with_older_ids_is_read_from_its_start(
        redis_url: str) -> None:  # noqa: F811
    """After a failover to a primary whose clock is behind, the log's ids are older than
    the last fan-out a node handled: it reads the log whole instead of dropping them."""
    async with fanout_scene(redis_url) as scene:
        scene.cluster._fanouts.last = "99999999999999-0"  # as if handled on the old primary
        await scene.cut_channels()
        await scene.broadcast("while away")
        await scene.broadcast("after")
        assert scene.receiver.texts == ["while away", "after"]
