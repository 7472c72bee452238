"""Liveness faults against a real redis-server: a heartbeat that fails after finding its
node taken for dead, and a reaper racing a node that came back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis import asyncio as redis_asyncio

from maim_message.backends.redis_keys import REAP_WHERE

from .test_cluster import node, redis_url, started  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(60)


async def test_a_node_taken_for_dead_registers_again_even_if_that_heartbeat_failed(
        redis_url: str) -> None:  # noqa: F811
    a = node(redis_url, "a")
    await started(a)
    redis = redis_asyncio.Redis.from_url(redis_url)
    try:
        cluster: Any = a.cluster
        keys = cluster.keys
        # a dead node whose presence cannot be read: reaping it fails every heartbeat
        await redis.sadd(keys.nodes, "ghost")
        await redis.hset(keys.conns("ghost"), "u1", b"not json")
        await redis.delete(keys.alive("a"))  # a's key expired (a long pause)
        await asyncio.sleep(0.6)  # heartbeats (0.2 s) find it gone, then fail on ghost
        assert cluster.stats()["rejoins"] == 0
        await redis.srem(keys.nodes, "ghost")  # the fault goes away
        await redis.delete(keys.conns("ghost"))
        deadline = asyncio.get_running_loop().time() + 5
        while cluster.stats()["rejoins"] == 0:
            assert asyncio.get_running_loop().time() < deadline, "never registered again"
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
        await a.stop()


async def test_the_reaper_leaves_a_node_that_came_back_alone(
        redis_url: str) -> None:  # noqa: F811
    redis = redis_asyncio.Redis.from_url(redis_url)
    try:
        await redis.hset("p:w:pair", "uuid-1", "b")  # b's connection, registered again
        await redis.set("p:alive:b", "inc")  # b is alive again
        assert await redis.eval(REAP_WHERE, 0, "b", "p:alive:b", "p:w:pair", "uuid-1") == -1
        assert await redis.hget("p:w:pair", "uuid-1") == b"b"
        await redis.delete("p:alive:b")  # dead after all
        assert await redis.eval(REAP_WHERE, 0, "b", "p:alive:b", "p:w:pair", "uuid-1") == 0
        assert await redis.hget("p:w:pair", "uuid-1") is None
    finally:
        await redis.aclose()
