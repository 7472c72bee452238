"""Auth before the upgrade, Origin allowlist and connections per key, over raw sockets.

Every refusal must be a plain HTTP answer (401 / 403 / 429) with no ``101`` ever sent, and
no frame a client pipelines behind its request may reach ``on_message`` unless accepted.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any, AsyncIterator, Callable, Dict, List, Optional

import orjson
import pytest

from maim_message.core.identity import fingerprint
from maim_message.server import ServerConfig, WebSocketServer

from .helpers_api import Inbox
from .rawws import RawWS, close_frame, request, text

GOOD = "good-Key-9c1f7e2ab4d84e60"
BAD = "bad-Key-0d2e8f3bc5e95f71"


def std_frame(n: int, api_key: str = GOOD) -> bytes:
    env = {"ver": 1, "msg_id": f"early-{n}", "type": "sys_std", "meta": {}, "payload": {
        "message_info": {"platform": "qq", "message_id": str(n), "time": 1.0},
        "message_segment": {"type": "text", "data": f"early {n}"},
        "message_dim": {"api_key": api_key, "platform": "qq"}}}
    return text(orjson.dumps(env))


class Hub:
    def __init__(self, server: WebSocketServer, inbox: Inbox, auth_calls: List[str]) -> None:
        self.server = server
        self.inbox = inbox
        self.auth_calls = auth_calls

    @property
    def port(self) -> int:
        port = self.server.port
        assert port is not None
        return port


async def start_hub(
    *, sync: bool = False, delay: float = 0.0, **cfg: Any
) -> Hub:
    inbox = Inbox()
    calls: List[str] = []

    def check(metadata: Dict[str, Any]) -> bool:
        calls.append(fingerprint(metadata["api_key"]))
        return bool(metadata["api_key"] == GOOD)

    def user(metadata: Dict[str, Any]) -> Optional[str]:
        return "alice" if metadata.get("api_key") == GOOD else None

    async def check_async(metadata: Dict[str, Any]) -> bool:
        await asyncio.sleep(delay)
        return check(metadata)

    async def user_async(metadata: Dict[str, Any]) -> Optional[str]:
        return user(metadata)

    config = ServerConfig(
        host="127.0.0.1", port=0, on_auth=check if sync else check_async,
        on_auth_extract_user=user if sync else user_async, on_message=inbox, **cfg,
    )
    server = WebSocketServer(config)
    await server.start()
    return Hub(server, inbox, calls)


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    h = await start_hub()
    yield h
    await h.server.stop()


async def refused(port: int, data: bytes) -> bytes:
    """Send ``data``; return the whole reply, asserting the server closed the connection."""
    ws = await RawWS.connect(port)
    ws.send(data)
    reply = await ws.read_all(5)
    ws.close()
    return reply


@pytest.mark.parametrize("sync", [True, False], ids=["sync-callbacks", "async-callbacks"])
async def test_refusals_are_http_answers_and_never_an_upgrade(sync: bool) -> None:
    hub = await start_hub(sync=sync)
    try:
        cases = [
            (request(), 401),  # no key at all
            (request(query={"api_key": BAD}), 403),
            (request(headers={"X-ApiKey": BAD}), 403),  # header names are case-insensitive
            (request(query={"api_key": BAD}, headers={"x-apikey": GOOD}), 403),  # query wins
            (request(query={"api_key": ""}, headers={"x-apikey": BAD}), 403),
        ]
        for data, status in cases:
            reply = await refused(hub.port, data)
            assert reply.startswith(f"HTTP/1.1 {status} ".encode()), reply[:80]
            assert b"101" not in reply and b"Sec-WebSocket-Accept" not in reply
            assert b"Authentication failed" in reply
            assert GOOD.encode() not in reply and BAD.encode() not in reply
        ok = await RawWS.open(hub.port, request(query={"api_key": GOOD}))
        assert ok.status == 101
        ok.close()
        assert hub.server.stats["failed_auths"] == len(cases)
        assert hub.server.stats["successful_auths"] == 1
        assert len(hub.auth_calls) == len(cases) + 1
    finally:
        await hub.server.stop()


@pytest.mark.parametrize("sync", [True, False], ids=["sync-auth", "slow-async-auth"])
async def test_frames_pipelined_before_a_refusal_never_reach_on_message(sync: bool) -> None:
    hub = await start_hub(sync=sync, delay=0.3)
    try:
        early = b"".join(std_frame(i, BAD) for i in range(5))
        ws = await RawWS.connect(hub.port)
        ws.send(request(query={"api_key": BAD}) + early)
        await asyncio.sleep(0.05)
        ws.send(early)  # more while the decision is pending
        reply = await ws.read_all(5)
        assert reply.startswith(b"HTTP/1.1 403 ")
        assert b"101" not in reply and b"sys_ack" not in reply  # nothing acked
        ws.close()
        # A later accepted connection is served; the refused frames never show up.
        good = await RawWS.open(hub.port, request(query={"api_key": GOOD}) + std_frame(99))
        assert good.status == 101
        message, meta = await hub.inbox.next(5)
        assert message.message_segment.data == "early 99" and meta["api_key"] == GOOD
        assert len(hub.inbox.items) == 1
        assert hub.server.stats["messages_received"] == 1
        good.close()
    finally:
        await hub.server.stop()


async def test_frames_pipelined_behind_an_accepted_request_arrive_in_order() -> None:
    hub = await start_hub(delay=0.2)
    try:
        ws = await RawWS.connect(hub.port)
        ws.send(request(headers={"x-apikey": GOOD}) + b"".join(std_frame(i) for i in range(5)))
        assert await ws.read_head() == 101
        got = [(await hub.inbox.next(5))[0].message_segment.data for _ in range(5)]
        assert got == [f"early {i}" for i in range(5)]
        acks = [orjson.loads((await ws.read_frame())[1]) for _ in range(5)]
        assert [a["meta"]["acked_msg_id"] for a in acks] == [f"early-{i}" for i in range(5)]
        ws.send(close_frame())
        assert (await ws.expect_close())[0] == 1000
    finally:
        await hub.server.stop()


async def test_auth_callback_that_raises_or_finds_no_user_is_403(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "raising-Key-5e6f7a8b9c0d"

    def boom(metadata: Dict[str, Any]) -> bool:
        raise RuntimeError(f"database down while checking {metadata['api_key']}")

    server = WebSocketServer(ServerConfig(host="127.0.0.1", port=0, on_auth=boom))
    await server.start()
    assert server.port is not None
    try:
        with caplog.at_level(logging.DEBUG):
            reply = await refused(server.port, request(query={"api_key": secret}))
        assert reply.startswith(b"HTTP/1.1 403 ") and b"101" not in reply
        assert secret not in caplog.text and fingerprint(secret) in caplog.text
    finally:
        await server.stop()

    server = WebSocketServer(ServerConfig(
        host="127.0.0.1", port=0, on_auth=lambda m: True, on_auth_extract_user=lambda m: "",
    ))
    await server.start()
    assert server.port is not None
    try:
        reply = await refused(server.port, request(query={"api_key": GOOD}))
        assert reply.startswith(b"HTTP/1.1 403 ") and b"cannot extract user id" in reply
    finally:
        await server.stop()


async def test_origin_allowlist_refuses_other_sites_before_auth() -> None:
    hub = await start_hub(allowed_origins=["https://chat.example.com"])
    try:
        evil = await refused(hub.port, request(query={"api_key": GOOD},
                                                headers={"Origin": "https://evil.example"}))
        assert evil.startswith(b"HTTP/1.1 403 ") and b"origin" in evil and b"101" not in evil
        assert hub.auth_calls == []  # refused before on_auth ran
        for headers in ({"Origin": "https://CHAT.example.com"}, {}):  # allowed; non-browser
            ws = await RawWS.open(hub.port, request(query={"api_key": GOOD}, headers=headers))
            assert ws.status == 101
            ws.close()
        assert hub.server.get_stats()["limits"]["origin"] == 1
    finally:
        await hub.server.stop()
    # Default: no Origin check at all (0.6.8 behaviour).
    hub = await start_hub()
    try:
        ws = await RawWS.open(hub.port, request(query={"api_key": GOOD},
                                                 headers={"Origin": "https://evil.example"}))
        assert ws.status == 101
        ws.close()
    finally:
        await hub.server.stop()


async def test_connections_per_key_refused_with_429_and_freed_on_close() -> None:
    hub = await start_hub(max_connections_per_key=2)
    try:
        first = await RawWS.open(hub.port, request(query={"api_key": GOOD}))
        second = await RawWS.open(hub.port, request(query={"api_key": GOOD},
                                                     headers={"x-uuid": "conn-2"}))
        assert first.status == second.status == 101
        reply = await refused(hub.port, request(query={"api_key": GOOD}))
        assert reply.startswith(b"HTTP/1.1 429 ") and b"101" not in reply
        # Another key is not affected by this key's count.
        assert hub.server.get_stats()["limits"]["connections_per_key"] == 1
        # Reconnecting with the uuid of a live connection takes over its slot.
        again = await RawWS.open(hub.port, request(query={"api_key": GOOD},
                                                    headers={"x-uuid": "conn-2"}))
        assert again.status == 101
        code, _ = await second.expect_close()
        assert code == 4000
        second.close()
        # Closing one frees a slot.
        first.send(close_frame())
        await first.expect_close()
        first.close()
        await wait_for(lambda: hub.server.get_connection_count() == 1)
        third = await RawWS.open(hub.port, request(query={"api_key": GOOD}))
        assert third.status == 101
        third.close()
        again.close()
    finally:
        await hub.server.stop()


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_hub_key_table_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from maim_message.hub import auth as hub_auth
    from maim_message.hub.config import KeyEntry

    calls: List[int] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hub_auth.hmac, "compare_digest", counting)
    table = hub_auth.KeyTable([KeyEntry(key=GOOD, user="alice")])
    entry = table.lookup(GOOD)
    assert entry is not None and entry.user == "alice"
    for wrong in (BAD, GOOD[:-1], GOOD + "x", GOOD.upper()):
        assert table.lookup(wrong) is None
    assert table.lookup("") is None and table.lookup(None) is None
    # Every non-empty candidate, right or wrong, went through compare_digest.
    assert len(calls) == 5
