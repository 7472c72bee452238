"""The admin plane across a cluster of `python -m maim_message serve` processes on a real
redis-server, and a revocation that outlives a restart (cluster and single node).

Before: a revoke acted on the node that answered the call only (a client of the key on
another node stayed connected and could reconnect there) and was forgotten on restart.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Tuple

import websockets

from .helpers_api import recv_until
from .test_cluster import redis_url  # noqa: F401  (the fixture)
from .test_hub_cluster import ADAPTER_KEY, CORE_KEY, cluster_config
from .test_hub_process import (
    RELAY_CONFIG,
    HubProcess,
    close_code,
    expect_refusal,
    std,
    until,
)

ADAPTER = {"x-apikey": ADAPTER_KEY, "x-platform": "qq"}
CORE = {"x-apikey": CORE_KEY, "x-platform": "qq"}


def connect(hub: HubProcess, headers: Dict[str, str]) -> Any:
    return websockets.connect(hub.ws_url, additional_headers=headers, open_timeout=5)


async def label_of(hub: HubProcess, user: str) -> str:
    keys: List[Dict[str, Any]] = await hub.admin("/api/admin/keys")
    return next(k["key"] for k in keys if k["user"] == user)


async def connected(hub: HubProcess, user: str) -> bool:
    rows = await hub.admin("/api/admin/connections")
    return any(r["user"] == user for r in rows)


async def start(tmp_path: Path, name: str, config: str) -> HubProcess:
    workdir = tmp_path / name
    workdir.mkdir(exist_ok=True)
    return await HubProcess(workdir).start(config)


@asynccontextmanager
async def two_nodes(tmp_path: Path, url: str) -> AsyncIterator[Tuple[HubProcess, HubProcess]]:
    """Hub processes a and b on one Redis; both end with exit code 0."""
    config = cluster_config(url)
    hubs: List[HubProcess] = []
    try:
        hubs.append(await start(tmp_path, "a", config))
        hubs.append(await start(tmp_path, "b", config))
        yield hubs[0], hubs[1]
    finally:
        for hub in hubs:
            assert await hub.terminate() == 0


async def test_a_revoke_on_one_node_closes_and_refuses_the_key_on_every_node(
        tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    config = cluster_config(redis_url)
    hubs: List[HubProcess] = []
    try:
        a, b = await start(tmp_path, "a", config), await start(tmp_path, "b", config)
        hubs += [a, b]
        async with connect(b, ADAPTER) as adapter, connect(b, CORE) as core:
            await until(lambda: connected(b, "napcat"), what="the adapter on node b")
            label = await label_of(a, "napcat")
            answer = await a.admin("/api/admin/revoke", {"key": label})
            assert answer["key"] == label and answer["kept"] == ["cluster"]
            assert await close_code(adapter) == 4003  # closed by node b
            assert await expect_refusal(b.ws_url, ADAPTER) == 403
            assert await expect_refusal(a.ws_url, ADAPTER) == 403
            assert core.state.name == "OPEN"  # the other key is untouched
            keys = {k["key"]: k for k in await b.admin("/api/admin/keys")}
            assert keys[label]["revoked"] is True
        # node b restarts, and a node c joins afterwards: both refuse the key
        assert await b.terminate() == 0
        hubs.remove(b)
        b2 = await start(tmp_path, "b2", config)
        c = await start(tmp_path, "c", config)
        hubs += [b2, c]
        for hub in (b2, c):
            assert await expect_refusal(hub.ws_url, ADAPTER) == 403
            async with connect(hub, CORE):  # and still serve the others
                pass
        metrics = await c.metrics()
        assert metrics['maim_hub_handshakes_rejected_total{reason="revoked_key"}'] == 1
        for hub in hubs:
            assert ADAPTER_KEY not in hub.logs()
    finally:
        for hub in hubs:
            assert await hub.terminate() == 0


async def test_a_disconnect_on_one_node_closes_the_connection_on_another(
        tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    async with two_nodes(tmp_path, redis_url) as (a, b):
        async with connect(b, CORE) as core:
            await until(lambda: connected(b, "maibot"), what="the core on node b")
            uuid = next(r["uuid"] for r in await b.admin("/api/admin/connections"))
            answer = await a.admin("/api/admin/disconnect", {"user": "maibot"})
            assert answer["closed"] == [uuid]  # seen in node b's presence
            assert await close_code(core) == 4001
        async with connect(b, CORE):  # a kick, not a ban
            pass
        status, _, _ = await a.request("POST", "/api/admin/disconnect", {"uuid": "nope"})
        assert status == 404


async def test_a_single_hub_keeps_revocations_in_its_revoked_file(tmp_path: Path) -> None:
    revoked = tmp_path / "revoked-keys"
    config = RELAY_CONFIG + f"""
    [admin]
    revoked_file = "{revoked.as_posix()}"
    """
    hub = await start(tmp_path, "one", config)
    try:
        label = await label_of(hub, "napcat")
        answer = await hub.admin("/api/admin/revoke", {"key": label})
        assert answer["kept"] == ["file"]
        assert ADAPTER_KEY not in revoked.read_text()  # a digest, never the key
        assert await hub.terminate() == 0
        hub = await start(tmp_path, "again", config)
        assert await expect_refusal(hub.ws_url, ADAPTER) == 403
        keys = {k["key"]: k for k in await hub.admin("/api/admin/keys")}
        assert keys[label]["revoked"] is True
        async with connect(hub, CORE):
            pass
    finally:
        assert await hub.terminate() == 0


async def test_a_queue_in_a_cluster_stream_is_shown_and_drained_from_any_node(
        tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    """Messages for a receiver connected on no node live in its pair's Redis stream, on no
    node: `outbox` and `drain` for that pair read and empty the stream (before, they
    showed nothing and dropped 0 while the messages stayed queued)."""
    async with two_nodes(tmp_path, redis_url) as (a, b):
        async with connect(a, ADAPTER) as adapter:
            for n in range(3):  # to maibot, connected nowhere: they wait in its stream
                await adapter.send(std(f"q{n}", f"queued {n}", ADAPTER_KEY, "qq"))
                await recv_until(adapter, "sys_ack")
        shown = await b.admin("/api/admin/outbox?user=maibot&platform=qq")
        assert shown["depth"] == 3 and shown["source"] == "cluster stream"
        assert "queued 0" in shown["messages"][0]["preview"]
        answer = await b.admin("/api/admin/outbox/drain", {"user": "maibot", "platform": "qq"})
        assert answer["dropped"] == 3
        assert (await a.admin("/api/admin/outbox?user=maibot&platform=qq"))["depth"] == 0
        async with connect(a, ADAPTER) as adapter, connect(b, CORE) as core:
            await until(lambda: connected(b, "maibot"), what="the core on node b")
            await adapter.send(std("after", "fresh", ADAPTER_KEY, "qq"))
            frame = await recv_until(core, "sys_std")  # the drained ones never come
            assert frame["payload"]["message_segment"]["data"] == "fresh"
