"""The admin plane through the real hub process (``python -m maim_message serve``).

Token protection (401 that leaks nothing; /healthz and /readyz open; /metrics protectable),
the connection listing, disconnect, key revocation (closed with 4003, refused on
reconnect), outbox show/drain, and the generated admin token of the embedded defaults.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Dict, List

import orjson
import websockets

from .helpers_api import recv_until
from .test_hub_process import (
    ADAPTER_KEY,
    ADMIN_TOKEN,
    CORE_KEY,
    RELAY_CONFIG,
    HubProcess,
    ack,
    close_code,
    expect_refusal,
    hub_factory,  # noqa: F401
    std,
    until,
)

METRICS_TOKEN = "metrics-only-token-0123456789"
CONFIG = RELAY_CONFIG
PROTECTED_METRICS = CONFIG + f"""
    [admin]
    protect_metrics = true
    metrics_token = "{METRICS_TOKEN}"
"""
SECRET_WORDS = ("napcat", "maibot", "qq", "key#", ADAPTER_KEY, CORE_KEY)
READS = ("/api/stats", "/api/admin/connections", "/api/admin/keys", "/api/admin/outboxes",
         "/api/admin/outbox?user=maibot&platform=qq")
ACTIONS = (("/api/admin/disconnect", {"user": "napcat"}),
           ("/api/admin/revoke", {"key": "key#00000000"}),
           ("/api/admin/outbox/drain", {"user": "maibot", "platform": "qq"}),
           ("/api/admin/reload", {}))


def connect(hub: HubProcess, key: str, platform: str = "qq") -> Any:
    return websockets.connect(hub.ws_url, additional_headers={"x-apikey": key,
                                                              "x-platform": platform})


async def rows(hub: HubProcess) -> List[Dict[str, Any]]:
    result: List[Dict[str, Any]] = await hub.admin("/api/admin/connections")
    return result


async def test_without_the_token_nothing_leaks_and_health_stays_open(
    hub_factory: Any,  # noqa: F811
) -> None:
    hub = await hub_factory().start(PROTECTED_METRICS)
    async with connect(hub, ADAPTER_KEY):
        await until(lambda: _count(hub, 1), what="1 connection")
        for token in (None, "wrong-token-0123456789abcdef"):
            for path in READS:
                status, headers, body = await hub.get(path, token=token)
                assert status == 401, (path, status)
                assert headers["www-authenticate"].startswith("Bearer")
                assert not any(w.encode() in body for w in SECRET_WORDS), body
            for path, payload in ACTIONS:
                status, _, body = await hub.request("POST", path, payload, token=token)
                assert status == 401 and not any(w.encode() in body for w in SECRET_WORDS)
            assert (await hub.get("/metrics", token=token))[0] == 401
        # still connected: the refused "disconnect" did nothing
        assert len(await rows(hub)) == 1
        for path in ("/healthz", "/readyz"):
            assert (await hub.get(path, token=None))[0] == 200
        status, _, page = await hub.get("/", token=None)  # the page itself holds no data
        assert status == 200 and not any(w.encode() in page for w in SECRET_WORDS)
        # /metrics: the metrics-only token or the admin token (Bearer or Basic password)
        assert (await hub.get("/metrics", token=METRICS_TOKEN))[0] == 200
        assert (await hub.get("/metrics"))[0] == 200
        basic = base64.b64encode(f"prometheus:{ADMIN_TOKEN}".encode()).decode()
        status, _, body = await hub.request("GET", "/metrics", token=None,
                                            headers={"Authorization": f"Basic {basic}"})
        assert status == 200 and b"maim_hub_connections" in body
        # the metrics token opens nothing else
        assert (await hub.get("/api/stats", token=METRICS_TOKEN))[0] == 401
        stats = await hub.admin("/api/stats")
        assert stats["connections"] == 1
    assert await hub.terminate() == 0


async def _count(hub: HubProcess, n: int) -> bool:
    return len(await rows(hub)) == n


async def test_list_and_disconnect_connections(hub_factory: Any) -> None:  # noqa: F811
    hub = await hub_factory().start(CONFIG)
    async with connect(hub, ADAPTER_KEY) as adapter, connect(hub, CORE_KEY) as core, \
            connect(hub, CORE_KEY, "telegram") as core_tg:
        await until(lambda: _count(hub, 3), what="3 connections")
        await adapter.send(std("m1", "hello", ADAPTER_KEY, "qq"))
        frame = await recv_until(core, "sys_std")
        await core.send(ack(frame))
        await until(lambda: _row_has(hub, "napcat", "messages_in", 1), what="napcat in=1")
        listing = {r["user"] + "/" + r["platform"]: r for r in await rows(hub)}
        assert set(listing) == {"napcat/qq", "maibot/qq", "maibot/telegram"}
        napcat = listing["napcat/qq"]
        assert napcat["remote"] == "127.0.0.1" and napcat["generation"] == "0.6"
        assert napcat["key"].startswith("key#") and napcat["messages_in"] == 1
        assert listing["maibot/qq"]["messages_out"] == 1
        assert listing["maibot/qq"]["outbox_depth"] == 0  # acked
        assert napcat["connected_at"] > 0
        raw = (await hub.get("/api/admin/connections"))[2]
        assert ADAPTER_KEY.encode() not in raw and CORE_KEY.encode() not in raw

        # one connection by uuid: 4001, the others stay
        answer = await hub.admin("/api/admin/disconnect", {"uuid": napcat["uuid"]})
        assert answer == {"closed": [napcat["uuid"]]}
        assert await close_code(adapter) == 4001
        await until(lambda: _count(hub, 2), what="2 connections")
        # a user: all of its connections
        answer = await hub.admin("/api/admin/disconnect", {"user": "maibot"})
        assert len(answer["closed"]) == 2
        assert await close_code(core) == 4001 and await close_code(core_tg) == 4001
    # errors: unknown uuid 404, wrong method 405, bad body 400, cross-origin 403
    assert (await hub.request("POST", "/api/admin/disconnect", {"uuid": "nope"}))[0] == 404
    assert (await hub.get("/api/admin/disconnect"))[0] == 405
    assert (await hub.request("POST", "/api/admin/connections", {}))[0] == 405
    assert (await hub.request("POST", "/api/admin/disconnect", [1]))[0] == 400
    status, _, _ = await hub.request("POST", "/api/admin/disconnect", {"user": "x"},
                                     headers={"Origin": "http://evil.example"})
    assert status == 403
    assert await hub.terminate() == 0


async def _row_has(hub: HubProcess, user: str, field: str, value: Any) -> bool:
    return any(r["user"] == user and r[field] == value for r in await rows(hub))


async def test_revoked_key_is_closed_and_cannot_reconnect(hub_factory: Any) -> None:  # noqa: F811
    hub = await hub_factory().start(CONFIG)
    async with connect(hub, ADAPTER_KEY) as adapter, connect(hub, CORE_KEY) as core:
        await until(lambda: _count(hub, 2), what="2 connections")
        label = next(r["key"] for r in await rows(hub) if r["user"] == "napcat")
        assert (await hub.request("POST", "/api/admin/revoke", {"key": "key#ffffffff"}))[0] == 404
        answer = await hub.admin("/api/admin/revoke", {"key": label})
        assert answer["key"] == label and len(answer["closed"]) == 1
        assert await close_code(adapter) == 4003
        assert await expect_refusal(hub.ws_url, {"x-apikey": ADAPTER_KEY,
                                                 "x-platform": "qq"}) == 403
        keys = {k["key"]: k for k in await hub.admin("/api/admin/keys")}
        assert keys[label]["revoked"] is True and keys[label]["user"] == "napcat"
        # the other key's connection is untouched and still served
        await core.send(std("c1", "still here", CORE_KEY, "qq"))
        assert (await recv_until(core, "sys_ack"))["meta"]["acked_msg_id"] == "c1"
        # a reload does not bring a revoked key back
        await hub.admin("/api/admin/reload", {})
        assert await expect_refusal(hub.ws_url, {"x-apikey": ADAPTER_KEY,
                                                 "x-platform": "qq"}) == 403
    metrics = await hub.metrics()
    assert metrics['maim_hub_handshakes_rejected_total{reason="revoked_key"}'] == 2
    assert ADAPTER_KEY not in hub.logs()
    assert await hub.terminate() == 0


async def test_show_and_drain_a_pairs_outbox(hub_factory: Any) -> None:  # noqa: F811
    hub = await hub_factory().start(CONFIG)
    async with connect(hub, ADAPTER_KEY) as adapter:
        for n in range(3):  # to maibot, who is not connected: they wait in the outbox
            await adapter.send(std(f"q{n}", f"queued {n}", ADAPTER_KEY, "qq"))
            await recv_until(adapter, "sys_ack")
        outboxes = await hub.admin("/api/admin/outboxes")
        assert [(o["user"], o["platform"], o["depth"]) for o in outboxes] == [("maibot", "qq", 3)]
        shown = await hub.admin("/api/admin/outbox?user=maibot&platform=qq")
        assert shown["depth"] == 3 and "queued 0" in shown["messages"][0]["preview"]
        assert all(m["bytes"] > 0 for m in shown["messages"])
        answer = await hub.admin("/api/admin/outbox/drain", {"user": "maibot", "platform": "qq"})
        assert answer["dropped"] == 3
        assert await hub.admin("/api/admin/outboxes") == []
        assert (await hub.request("POST", "/api/admin/outbox/drain", {"user": "maibot"}))[0] == 400
        async with connect(hub, CORE_KEY) as core:  # nothing is delivered after the drain
            await adapter.send(std("after", "fresh", ADAPTER_KEY, "qq"))
            frame = await recv_until(core, "sys_std")
            assert frame["payload"]["message_segment"]["data"] == "fresh"
    assert await hub.terminate() == 0


async def test_embedded_defaults_generate_an_admin_token_printed_once(
    hub_factory: Any,  # noqa: F811
) -> None:
    hub = hub_factory()
    hub.admin_token = None
    await hub.start()
    out = hub.stdout()
    tokens = re.findall(r"Admin token: (\S+)", out)
    assert len(tokens) == 1, out
    token = tokens[0]
    assert f"/#token={token}" in out  # the live page link
    assert token not in hub.stderr()
    assert (await hub.get("/api/stats", token=None))[0] == 401
    status, _, body = await hub.get("/api/stats", token=token)
    assert status == 200 and orjson.loads(body)["state"] == "ready"
    assert await hub.terminate() == 0


async def test_a_socketio_connection_is_listed_as_0_7_and_can_be_disconnected(
    hub_factory: Any,  # noqa: F811
) -> None:
    from maim_message.client import WebSocketClient, create_client_config

    hub = await hub_factory().start(CONFIG)
    client = WebSocketClient(create_client_config(
        hub.ws_url, CORE_KEY, platform="qq", protocol="socketio", auto_reconnect=False))
    try:
        assert await client.connect()
        await until(lambda: _count(hub, 1), what="the Socket.IO connection")
        (row,) = await rows(hub)
        assert row["generation"] == "0.7" and row["user"] == "maibot"
        await hub.admin("/api/admin/disconnect", {"uuid": row["uuid"]})
        await until(lambda: _count(hub, 0), what="the disconnect")
        await until(lambda: not client.is_connected(), what="the client to see it")
    finally:
        await client.stop()
    assert await hub.terminate() == 0


async def test_a_key_revoked_after_the_engineio_handshake_does_not_connect(
    hub_factory: Any,  # noqa: F811
) -> None:
    """A Socket.IO session opened before the revoke is asked about again at its CONNECT."""
    import asyncio

    async def http(method: str, target: str, body: bytes = b"") -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
        writer.write(f"{method} {target} HTTP/1.1\r\nHost: x\r\nx-apikey: {ADAPTER_KEY}\r\n"
                     f"x-platform: qq\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)
        try:
            raw = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        return raw.partition(b"\r\n\r\n")[2]

    hub = await hub_factory().start(CONFIG)
    opened = await http("GET", "/ws/?EIO=4&transport=polling")
    sid = orjson.loads(opened[1:])["sid"]
    label = next(k["key"] for k in await hub.admin("/api/admin/keys") if k["user"] == "napcat")
    await hub.admin("/api/admin/revoke", {"key": label})
    q = f"/ws/?EIO=4&transport=polling&sid={sid}"
    assert await http("POST", q, b"40") == b"ok"
    assert (await http("GET", q)).startswith(b'44{"message":"Authentication failed')
    assert await rows(hub) == []
    assert await hub.terminate() == 0
