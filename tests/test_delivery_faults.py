"""Nothing lost: 50 clients x 1,000 messages each way through a relay that cuts at random."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

from maim_message.client import WebSocketClient, create_client_config
from maim_message.server import WebSocketServer, create_server_config

from .helpers_api import make_message
from .relay import CuttingRelay

CLIENTS = 50
PER_CLIENT = 1000


async def wait_until(predicate: Any, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


def check_sequence(got: List[int], n: int) -> Dict[str, int]:
    return {
        "lost": len(set(range(n)) - set(got)),
        "duplicates": len(got) - len(set(got)),
        "out_of_order": sum(1 for a, b in zip(got, got[1:]) if b < a),
    }


async def test_random_cuts_lose_nothing_duplicate_nothing_keep_order() -> None:
    at_server: Dict[str, List[int]] = {}
    at_client: Dict[str, List[int]] = {}

    def server_handler(message: Any, meta: Dict[str, Any]) -> None:
        at_server.setdefault(meta["api_key"], []).append(int(message.message_segment.data))

    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, on_auth_extract_user=lambda m: m["api_key"],
        on_message=server_handler, enable_connection_log=False))
    await server.start()
    relay = CuttingRelay(server.port or 0, seed=7)
    await relay.start()
    clients: List[WebSocketClient] = []
    try:
        for i in range(CLIENTS):
            key = f"key{i}"

            def record(message: Any, meta: Dict[str, Any], key: str = key) -> None:
                at_client.setdefault(key, []).append(int(message.message_segment.data))

            client = WebSocketClient(create_client_config(
                f"ws://127.0.0.1:{relay.port}/ws", key, platform="qq", on_message=record,
                reconnect_delay=0.01, max_reconnect_delay=0.1, max_reconnect_attempts=0,
                enable_connection_log=False))
            clients.append(client)
        results = await asyncio.gather(*(c.connect() for c in clients))
        assert all(results)

        async def client_sends(client: WebSocketClient, key: str) -> None:
            for n in range(PER_CLIENT):
                assert await client.send_message(make_message(str(n), key, "qq"))
                if n % 50 == 0:
                    await asyncio.sleep(0)

        async def server_sends() -> None:
            for n in range(PER_CLIENT):
                for i in range(CLIENTS):
                    await server.send_message(make_message(str(n), f"key{i}", "qq"))
                await asyncio.sleep(0)

        await asyncio.gather(server_sends(),
                             *(client_sends(c, f"key{i}") for i, c in enumerate(clients)))
        relay.cutting = False
        complete = await wait_until(
            lambda: all(len(at_server.get(f"key{i}", [])) >= PER_CLIENT
                        and len(at_client.get(f"key{i}", [])) >= PER_CLIENT
                        for i in range(CLIENTS)), 90)
        totals = {"lost": 0, "duplicates": 0, "out_of_order": 0}
        for i in range(CLIENTS):
            for side in (at_server, at_client):
                for k, v in check_sequence(side.get(f"key{i}", []), PER_CLIENT).items():
                    totals[k] += v
        assert relay.cuts > 0, "the relay never cut a connection"
        assert complete, totals
        assert totals == {"lost": 0, "duplicates": 0, "out_of_order": 0}
        sent = CLIENTS * PER_CLIENT
        assert sum(len(v) for v in at_server.values()) == sent
        assert sum(len(v) for v in at_client.values()) == sent
    finally:
        for c in clients:
            await c.stop()
        await relay.stop()
        await server.stop()
