"""Cluster mode: a message its receiver keeps refusing as too big is given up there too
(deleted from the pair's stream, so a reconnect does not read it back)."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers_api import Inbox
from .test_client import check_too_big_given_up
from .test_cluster import node, redis_url  # noqa: F401  (the fixture)


async def test_a_message_refused_as_too_big_is_given_up_in_cluster_mode(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    inbox = Inbox()
    server = node(redis_url, "n1", on_message=inbox)
    await check_too_big_given_up(server, inbox, caplog)


async def test_the_ack_script_tells_a_waiting_origin_only_of_an_ack(
        redis_url: str) -> None:  # noqa: F811
    """Deleted by msg_id (the node does not know the entry): an acked message's waiting
    origin is told; a given-up one's is not, and both leave the stream."""
    import orjson
    import redis.asyncio as aredis

    server = node(redis_url, "n1")
    await server.start()
    r = aredis.Redis.from_url(redis_url)
    pubsub = r.pubsub()
    try:
        cluster: Any = server.cluster
        pair = ("alice", "qq")
        stream, index, _ = cluster.keys.pair_keys(pair)
        for msg_id in ("acked", "given-up"):
            sid = (await r.xadd(stream, {msg_id: b"x"})).decode()
            await r.hset(index, msg_id, f"{sid}|n9")  # n9 waits for its ack
        # (and nothing at all: not on a channel named without the prefix either)
        await pubsub.subscribe(cluster.keys.channel("n9"), "n9")
        for _ in range(2):
            await pubsub.get_message(timeout=1)  # the subscribe confirmations
        cluster._store_ack(pair, ["given-up"], "u1", notify=False)
        cluster._store_ack(pair, ["acked"], "u1")
        await cluster._written()
        told = []
        for _ in range(20):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                told.append(orjson.loads(message["data"])["msg_id"])
            elif told:
                break
        assert told == ["acked"]
        assert await r.exists(stream) == 0  # both deleted (and the keys with the stream)
    finally:
        await pubsub.aclose()
        await r.aclose()
        await server.stop()
