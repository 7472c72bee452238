"""Two `python -m maim_message serve` processes on one Redis act as one hub."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import redis.asyncio as aredis

from maim_message.backends.redis_keys import Keys
from maim_message.client import WebSocketClient, create_client_config

from .helpers_api import Inbox, make_message
from .test_cluster import redis_url  # noqa: F401  (the fixture)
from .test_hub_process import HubProcess

ADAPTER_KEY = "adapter-secret-0123456789"
CORE_KEY = "core-secret-9876543210"


def cluster_config(url: str) -> str:
    return f"""
    [hub]
    status_interval = 0

    [cluster]
    backend = "redis"
    redis_url = "{url}"
    channel_prefix = "hubtest"

    [[keys]]
    key = "{ADAPTER_KEY}"
    user = "napcat"
    forward_to = "maibot"

    [[keys]]
    key = "{CORE_KEY}"
    user = "maibot"
    """


async def test_two_hub_processes_route_through_redis(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    hubs = []
    clients = []
    try:
        for name in ("one", "two"):
            workdir = tmp_path / name
            workdir.mkdir()
            hubs.append(await HubProcess(workdir).start(cluster_config(redis_url)))
        adapter_inbox, core_inbox = Inbox(), Inbox()
        adapter = WebSocketClient(create_client_config(
            hubs[0].ws_url, ADAPTER_KEY, platform="qq", on_message=adapter_inbox))
        core = WebSocketClient(create_client_config(
            hubs[1].ws_url, CORE_KEY, platform="qq", on_message=core_inbox))
        clients = [adapter, core]
        assert await adapter.connect() and await core.connect()
        where = Keys("hubtest").where(("maibot", "qq"))
        probe = aredis.Redis.from_url(redis_url)
        deadline = time.monotonic() + 15
        while not await probe.hlen(where):  # the core's presence is in Redis
            assert time.monotonic() < deadline, "presence never written"
            await asyncio.sleep(0.02)
        # adapter on hub one -> bot core on hub two (forward_to), and the reply back
        assert await adapter.send_message(make_message("ping", ADAPTER_KEY, "qq"))
        message, meta = await core_inbox.next(15)
        assert message.message_segment.data == "ping" and meta["target_user"] == "maibot"
        assert await core.send_message(make_message("pong", ADAPTER_KEY, "qq"))
        message, _ = await adapter_inbox.next(15)
        assert message.message_segment.data == "pong"
        for hub in hubs:
            logs = hub.logs()
            assert ADAPTER_KEY not in logs and CORE_KEY not in logs
        # the cluster in /metrics and /api/stats: both nodes, remote deliveries
        deadline = time.monotonic() + 15
        for hub in hubs:
            while (await hub.metrics())["maim_hub_cluster_nodes_alive"] != 2:
                assert time.monotonic() < deadline, "the other node never showed up"
                await asyncio.sleep(0.1)
        metrics = await hubs[1].metrics()
        # the ping came from hub one: over the channel, or from the stream when hub two's
        # presence write reached Redis after the send (then it counts as a takeover)
        assert (metrics["maim_hub_cluster_remote_deliveries_total"]
                + metrics["maim_hub_cluster_takeovers_total"]) >= 1
        assert metrics["maim_hub_cluster_redis_rtt_seconds"] > 0
        for name in ("stream_backlog", "takeovers_total", "duplicate_frames_total",
                     "frames_held_elsewhere_total", "resyncs_total",
                     "fanouts_recovered_total"):
            assert f"maim_hub_cluster_{name}" in metrics
        cluster = (await hubs[1].stats())["cluster"]
        assert cluster["backend"] == "redis" and cluster["nodes_alive"] == 2
        # "queued" counts a message kept for a receiver connected on no node: not one for
        # a receiver connected on the other node (what a send from a handler returns is
        # that receiver's connections as of its previous write: none, the first time)
        assert (await hubs[0].stats())["queued"] == 0
        await core.stop()
        deadline = time.monotonic() + 15
        while await probe.hlen(where):  # the core's presence is gone from Redis
            assert time.monotonic() < deadline, "presence never removed"
            await asyncio.sleep(0.02)
        assert await adapter.send_message(make_message("offline", ADAPTER_KEY, "qq"))
        while (await hubs[0].stats())["queued"] != 1:
            assert time.monotonic() < deadline, "a message for nobody not counted"
            await asyncio.sleep(0.05)
        assert (await hubs[0].metrics())["maim_hub_messages_queued_total"] == 1
        await probe.aclose()
    finally:
        for client in clients:
            await client.stop()
        for hub in hubs:
            assert await hub.terminate() == 0


async def test_a_redis_outage_shows_in_metrics_and_readiness(tmp_path: Path) -> None:
    """Redis stops answering (SIGSTOP): /metrics counts the shard down at once; once the
    node's writes have failed for the write timeout (received frames are then not acked)
    /readyz answers 503; both recover when Redis answers again."""
    import os
    import signal

    from .test_cluster import RedisServer
    from .test_hub_process import until

    redis = RedisServer()
    hub = None
    try:
        await redis.ready()
        hub = await HubProcess(tmp_path).start(
            cluster_config(redis.url + "?socket_timeout=0.5"))
        assert (await hub.get("/readyz", token=None))[0] == 200
        assert (await hub.metrics())["maim_hub_cluster_redis_shards_down"] == 0
        os.kill(redis.proc.pid, signal.SIGSTOP)

        async def down() -> bool:
            return (await hub.metrics())["maim_hub_cluster_redis_shards_down"] == 1

        async def unready() -> bool:
            status, _, body = await hub.get("/readyz", token=None)
            return status == 503 and body.startswith(b"redis unreachable")

        await until(down, 10, "the shard counted down")
        await until(unready, 20, "/readyz 503 once the writes stalled")
        assert (await hub.metrics())["maim_hub_ready"] == 0
        os.kill(redis.proc.pid, signal.SIGCONT)

        async def ready() -> bool:
            return (await hub.get("/readyz", token=None))[0] == 200 and not await down()

        await until(ready, 20, "ready again once Redis answers")
        assert (await hub.metrics())["maim_hub_ready"] == 1
        assert "maim_hub_cluster_node_deaths_total" in await hub.metrics()
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
        if hub is not None:
            assert await hub.terminate() == 0
        redis.stop()
