"""A pair's backlog read fails on a real redis-server and is tried again.

The pair's stream key holds a string for a while, so the node's XRANGE gets a WRONGTYPE
error, as a read fails when Redis is unreachable for longer than the command queue waits.
The pair stays loading and its read is retried: once the stream is back the receiver gets
its backlog first, then what is sent after it; the log names the pair by fingerprint only.
(The re-read paths are unit-tested on the in-memory bus: test_cluster_resync_units.py.)
"""

from __future__ import annotations

import logging
from typing import Optional

import pytest
from redis import asyncio as redis_asyncio

from maim_message.backends.redis_keys import Keys
from maim_message.core.identity import fingerprint

from .helpers_api import make_message
from .test_cluster import Receiver, node, redis_url, started, until  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(60)

LOGGER = "maim_message.backends.pubsub_cluster"


async def test_a_failed_backlog_read_is_retried_and_the_backlog_comes_first(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    n1, n2 = await started(node(redis_url, "n1"), node(redis_url, "n2"))
    client = redis_asyncio.Redis.from_url(redis_url)
    rx: Optional[Receiver] = None
    key = "api-key-of-carol"
    try:
        for i in range(3):  # carol's backlog, sent while she is offline
            assert await n1.send_message(make_message(str(i), key, "qq")) == {}
        stream = Keys("maim_hub").stream((key, "qq"))
        assert await client.exists(stream)
        await client.rename(stream, stream + ":aside")
        await client.set(stream, "not a stream")  # XRANGE fails: WRONGTYPE
        caplog.set_level(logging.INFO, logger=LOGGER)
        rx = Receiver(n2.port or 0, key)
        assert await rx.client.connect()
        await until(lambda: any(r.name == LOGGER and "failed" in r.getMessage()
                                for r in caplog.records))
        assert rx.texts == []  # nothing goes out before the backlog
        await client.delete(stream)
        await client.rename(stream + ":aside", stream)  # the next retry reads it
        await rx.wait(lambda: len(rx.texts) >= 3)
        await n1.send_message(make_message("3", key, "qq"))
        await rx.wait(lambda: len(rx.texts) >= 4)
        assert rx.texts == ["0", "1", "2", "3"]
    finally:
        if rx is not None:
            await rx.client.stop()
        await client.aclose()
        await n1.stop()
        await n2.stop()
    lines = [r.getMessage() for r in caplog.records
             if r.name == LOGGER and "backlog read" in r.getMessage()]
    assert any("failed" in line for line in lines)
    assert any("succeeded" in line for line in lines)
    assert all(f"{fingerprint(key)}/qq" in line for line in lines)
    assert not any(key in r.getMessage() for r in caplog.records if r.name == LOGGER)
