"""Issue 14 against the real hub process (``python -m maim_message serve``), raw sockets.

Each test reproduces one defect of the adversarial pass and shows it fixed: log lines
forged through a query parameter, made-up platforms growing the outbox without bound,
one key evicting another user's queue, bad ``message_dim`` types acked then dropped with
a traceback each; and, on an in-process hub whose buffers the test can read, same-pair
traffic skipping backpressure.
"""

from __future__ import annotations

import asyncio
import socket
import textwrap
from pathlib import Path
from typing import Any, Dict, List
from urllib.parse import quote

import orjson
import pytest
import websockets

from maim_message.client import WebSocketClient, create_client_config
from maim_message.hub.config import load_config
from maim_message.hub.runner import Hub

from .conftest import free_port
from .helpers_api import envelope, make_message, recv_json
from .rawws import RawWS, request
from .test_hub_process import HubProcess


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def start_hub(tmp_path: Path, config: str) -> HubProcess:
    return await HubProcess(tmp_path).start(config)


def std(msg_id: str, text: str, key: str, platform: str) -> str:
    return envelope(msg_id, make_message(text, key, platform).to_dict())


async def replies(ws: Any, count: int, timeout: float = 60.0) -> Dict[str, int]:
    """Read ``count`` frames; how many of each type."""
    kinds: Dict[str, int] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for _ in range(count):
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - loop.time())))
        kinds[frame["type"]] = kinds.get(frame["type"], 0) + 1
    return kinds


# -- item 6: log injection without a key -------------------------------------------------------


async def test_request_fields_cannot_forge_log_lines(tmp_path: Path) -> None:
    hub = await start_hub(tmp_path, """
        [hub]
        log_level = "DEBUG"
        status_interval = 0
        [[keys]]
        key = "good-key-000001"
        user = "u"
    """)
    forged = quote("x\n2099-01-01 00:00:00,000 INFO    maim_message.hub: FORGED", safe="")
    try:
        for key in ("wrong", "good-key-000001"):
            ws = await RawWS.connect(hub.port)
            target = f"/ws?api_key={key}&platform={forged}&uuid={forged}"
            ws.send(request().replace(b"GET /ws HTTP/1.1", f"GET {target} HTTP/1.1".encode()))
            await ws.read_head()
            ws.close()
        await asyncio.sleep(0.3)
        assert await hub.terminate() == 0
        lines = hub.stderr().splitlines() + hub.stdout().splitlines()
        assert any("FORGED" in line for line in lines), "the refusal was not logged at all"
        for line in lines:
            assert not line.startswith("2099-01-01"), f"forged log line: {line!r}"
            if "FORGED" in line:
                assert "\\x0a2099-01-01" in line, line
    finally:
        hub.kill()


# -- item 3: made-up platforms ------------------------------------------------------------------

FORWARD_CONFIG = """
    [hub]
    status_interval = 0
    [limits]
    rate_limit_per_second = 0
    [[keys]]
    key = "adapter-key-0001"
    user = "adapter"
    forward_to = "bot"
    [[keys]]
    key = "bot-key-00000001"
    user = "bot"
"""


async def test_made_up_platforms_are_refused_and_memory_stays_bounded(tmp_path: Path) -> None:
    hub = await start_hub(tmp_path, FORWARD_CONFIG)
    total, queued = 20_000, 64  # ServerConfig.outbox_max_pairs_per_user
    try:
        assert hub.proc is not None
        async with websockets.connect(
                f"{hub.ws_url}?api_key=adapter-key-0001&platform=qq", max_size=None) as ws:
            await ws.send(std("warm", "w", "adapter-key-0001", "qq"))
            assert (await recv_json(ws))["type"] == "sys_ack"
            rss_before = rss_bytes(hub.proc.pid)

            async def send_all() -> None:
                for n in range(total):
                    await ws.send(std(f"m{n}", "x", "adapter-key-0001", f"made-up-{n}"))

            sender = asyncio.ensure_future(send_all())
            kinds = await replies(ws, total)
            await sender
            rss_after = rss_bytes(hub.proc.pid)
        assert kinds == {"sys_ack": queued - 1, "sys_error": total - queued + 1}, kinds
        stats = await hub.stats()
        assert stats["outbox"]["depth"] == queued  # "warm" on qq + 63 made-up platforms
        grown = rss_after - rss_before
        print(f"made-up platforms: {total} sent, {kinds}, hub grew {grown / 2**20:.1f} MiB")
        assert grown < 40 * 1024 * 1024, f"hub grew {grown / 2**20:.0f} MiB"
    finally:
        hub.kill()


# -- item 4: one key evicting everybody's queue ---------------------------------------------------


async def test_one_key_cannot_evict_another_users_queue(tmp_path: Path) -> None:
    hub = await start_hub(tmp_path, """
        [hub]
        status_interval = 0
        [outbox]
        max_bytes = 1048576
        [[keys]]
        key = "friend-key-00001"
        user = "friend"
        forward_to = "victim"
        [[keys]]
        key = "attacker-key-001"
        user = "attacker"
        forward_to = "sink"
        [[keys]]
        key = "victim-key-00001"
        user = "victim"
        [[keys]]
        key = "sink-key-0000001"
        user = "sink"
    """)
    got: List[str] = []
    all_ten = asyncio.Event()

    def record(message: Any, meta: Dict[str, Any]) -> None:
        got.append(message.message_segment.data)
        if len(got) >= 10:
            all_ten.set()

    victim = None
    try:
        async with websockets.connect(f"{hub.ws_url}?api_key=friend-key-00001&platform=qq") as ws:
            for n in range(10):
                await ws.send(std(f"f{n}", f"for victim {n}", "friend-key-00001", "qq"))
            assert await replies(ws, 10) == {"sys_ack": 10}
        async with websockets.connect(
                f"{hub.ws_url}?api_key=attacker-key-001&platform=qq") as ws:
            blob = "a" * 20_000
            for n in range(60):  # 1.2 MB, each to a new platform, against a 1 MiB outbox
                await ws.send(std(f"a{n}", blob, "attacker-key-001", f"p{n}"))
            assert await replies(ws, 60) == {"sys_ack": 60}
        victim = WebSocketClient(create_client_config(
            hub.ws_url, "victim-key-00001", platform="qq", on_message=record))
        assert await victim.connect()
        await asyncio.wait_for(all_ten.wait(), 10)
        assert sorted(got) == sorted(f"for victim {n}" for n in range(10))
        stats = await hub.stats()
        assert stats["outbox"]["evicted"] > 0  # the attacker's own queue made room
        assert stats["outbox"]["bytes"] <= 1048576
    finally:
        if victim is not None:
            await victim.stop()
        hub.kill()


# -- item 7: wrong field types in message_dim -----------------------------------------------


async def test_bad_message_dim_types_are_refused_once_logged(tmp_path: Path) -> None:
    hub = await start_hub(tmp_path, FORWARD_CONFIG)
    try:
        async with websockets.connect(f"{hub.ws_url}?api_key=adapter-key-0001&platform=qq") as ws:
            for n in range(1000):
                body = make_message("x", "adapter-key-0001", "qq").to_dict()
                body["message_dim"]["platform"] = {"n": n}
                await ws.send(envelope(f"bad{n}", body))
            assert await replies(ws, 1000) == {"sys_error": 1000}  # never acked
            await ws.send(std("ok", "fine", "adapter-key-0001", "qq"))
            assert (await recv_json(ws))["type"] == "sys_ack"
        assert await hub.terminate() == 0
        log = hub.stderr() + hub.stdout()
        assert "Traceback" not in log
        assert log.count("bad frame") == 1, log[-2000:]
        assert len(log) < 20_000, f"{len(log)} bytes of log for 1,000 bad frames"
    finally:
        hub.kill()


# -- item 8: same-pair traffic and backpressure ---------------------------------------------


async def test_same_pair_receiver_that_never_reads_is_held_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """In-process hub (to read the receiver's send buffer exactly), raw receiver socket."""
    high = 1024 * 1024
    path = tmp_path / "hub.toml"
    path.write_text(textwrap.dedent(f"""
        [hub]
        host = "127.0.0.1"
        port = {free_port()}
        status_interval = 0
        [limits]
        ping_interval = 1.0
        ping_timeout = 60.0
        send_buffer_high = {high}
        slow_consumer_timeout = 2.0
        rate_limit_per_second = 0
        [outbox]
        max_bytes = 16777216
        [[keys]]
        key = "pair-key-0000001"
        user = "u"
    """), encoding="utf-8")
    hub = Hub(load_config(path, env={}))
    await hub.start()
    port = hub.port
    assert port is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        receiver = RawWS(reader, writer)
        receiver.send(request(query={"api_key": "pair-key-0000001", "platform": "qq"},
                              headers={"x-uuid": "never-reads"}))
        assert await receiver.read_head() == 101  # and then never reads again
        slow = hub.server.peers["never-reads"]
        assert slow.conn is not None
        conn = slow.conn
        blob = "b" * (1024 * 1024)
        peak_buffer = peak_outbox = 0
        async with websockets.connect(
                f"ws://127.0.0.1:{port}/ws?api_key=pair-key-0000001&platform=qq",
                max_size=None) as ws:
            for n in range(150):  # 150 MB for a receiver that reads nothing
                await ws.send(std(f"s{n}", blob, "pair-key-0000001", "qq"))
                assert (await recv_json(ws, 30))["type"] == "sys_ack"
                peak_buffer = max(peak_buffer, conn.write_buffer_size())
                peak_outbox = max(peak_outbox, hub.server.delivery.stats()["outbox_bytes"])
        print(f"same pair, receiver not reading: 150 MB sent, send buffer peak "
              f"{peak_buffer / 2**20:.1f} MiB (mark {high / 2**20:.0f} MiB), "
              f"outbox peak {peak_outbox / 2**20:.1f} MiB")
        assert peak_buffer <= 2 * high + len(blob) + 4096, peak_buffer
        assert peak_outbox <= 16777216
        assert hub.server.delivery.stats()["evicted"] > 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while "never-reads" in hub.server.peers and loop.time() < deadline:
            await asyncio.sleep(0.1)
        assert "never-reads" not in hub.server.peers, "the slow consumer was not closed"
        assert hub.server.get_stats()["limits"]["write_buffer"] >= 1
        closed = [r.getMessage() for r in caplog.records if "slow consumer" in r.getMessage()]
        assert closed and "never-reads key=key#" in closed[0], closed  # who it was
        writer.close()
    finally:
        sock.close()
        await hub.shutdown()
