"""``maim-message send / tail / ping`` as processes, against the real hub and against the
published 0.6.8 API server (run from its own virtualenv, see test_interop_api.py)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any, List, Tuple

import orjson
import pytest
import websockets

from .conftest import ROOT, free_port, upstream07_python_path, upstream_python_path
from .test_hub_process import (  # noqa: F401
    ADAPTER_KEY,
    ADMIN_TOKEN,
    CORE_KEY,
    RELAY_CONFIG,
    HubProcess,
    hub_factory,
    until,
)
from .test_interop_api import Upstream, make_message

pytestmark = pytest.mark.timeout(120)

CONFIG = RELAY_CONFIG
T = 30.0  # bound for one command


def cli(*args: str) -> List[str]:
    return [sys.executable, "-m", "maim_message", *args]


async def start(*args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAIM_HUB_")}
    return await asyncio.create_subprocess_exec(
        *cli(*args), cwd=str(ROOT), env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)


async def run(*args: str) -> Tuple[int, str, str]:
    proc = await start(*args)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), T)
    except asyncio.TimeoutError:
        proc.kill()  # the PID we started
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def finish(proc: asyncio.subprocess.Process) -> Tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), T)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def connections(hub: HubProcess) -> int:
    return len(await hub.admin("/api/admin/connections"))


async def test_send_tail_ping_against_the_hub(hub_factory: Any) -> None:  # noqa: F811
    hub = await hub_factory().start(CONFIG)
    url = hub.ws_url
    tail = await start("tail", url, "--key", CORE_KEY, "--platform", "qq", "--json",
                       "--count", "2", "--duration", "25")
    try:
        await until(lambda: _has(hub, 1), timeout=20, what="tail to connect")
        for text in ("hello from cli", "second"):
            rc, out, err = await run("send", url, "--key", ADAPTER_KEY, "--platform", "qq",
                                     "--user-id", "10001", text)
            assert rc == 0, err
            assert out.startswith("acked: message cli-") and "to qq" in out
        rc, out, err = await finish(tail)
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()
    assert rc == 0, err
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert [line["type"] for line in lines] == ["message", "message"]
    first = lines[0]["message"]
    assert first["message_segment"] == {"type": "text", "data": "hello from cli"}
    assert first["message_info"]["sender_info"]["user_info"]["user_id"] == "10001"
    assert lines[0]["meta"]["target_user"] == "maibot"

    # refused: exit 1 with the reason; unreachable: exit 1
    rc, out, err = await run("send", url, "--key", "not-a-key-000000", "--platform", "qq", "x")
    assert rc == 1 and "HTTP 403" in err
    rc, _, err = await run("send", url, "--key", ADAPTER_KEY, "--platform", "telegram", "x")
    assert rc == 1 and "HTTP 403" in err  # the key may only declare qq
    rc, _, err = await run("send", f"ws://127.0.0.1:{free_port()}/ws", "--key", "k",
                           "--platform", "qq", "--timeout", "3", "x")
    assert rc == 1 and err

    rc, out, err = await run("ping", url, "--key", CORE_KEY, "--platform", "qq")
    assert rc == 0, err
    assert "tcp connect" in out and "handshake + auth" in out and "round trip" in out
    rc, out, _ = await run("ping", url)
    assert rc == 0 and "HTTP 401" in out
    rc, _, err = await run("ping", url, "--key", "not-a-key-000000")
    assert rc == 1 and "HTTP 403" in err
    logs = hub.logs()
    assert ADAPTER_KEY not in logs and CORE_KEY not in logs
    assert await hub.terminate() == 0


async def _has(hub: HubProcess, n: int) -> bool:
    return await connections(hub) == n


async def test_send_exits_3_when_the_server_never_acks() -> None:
    async def silent(ws: Any) -> None:  # accepts, reads, never acks
        async for _ in ws:
            pass

    async with websockets.serve(silent, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        rc, _, err = await run("send", f"ws://127.0.0.1:{port}/ws", "--key", "k",
                               "--platform", "qq", "--timeout", "1", "unanswered")
    assert rc == 3 and "not acknowledged within 1 s" in err


KEY = "key-alpha"
USER = "user-alpha"


@pytest.fixture(params=["0.6.8", "0.7.5"])
async def published_server(request: Any, tmp_path: Path) -> Any:
    """The published API server of each generation, in its own virtualenv (killed by PID)."""
    if request.param == "0.6.8":
        python = upstream_python_path()
    else:
        python = upstream07_python_path()
    workdir = tmp_path / "upstream-cwd"
    workdir.mkdir()
    port = free_port()
    server = await Upstream.spawn(python, "api_server.py", {"port": port, "keys": {KEY: USER}},
                                  workdir, f"server-{request.param}")
    try:
        await server.ready()
        yield server, f"ws://127.0.0.1:{port}/ws"
    finally:
        await server.kill()


async def test_send_tail_ping_against_the_published_servers(published_server: Any) -> None:
    """0.6.8 (raw WebSocket) and 0.7.5 (Socket.IO): the client finds the generation."""
    server, url = published_server

    rc, out, err = await run("send", url, "--key", KEY, "--platform", "qq", "to 0.6.8")
    assert rc == 0, err + server.stderr_tail()
    event = await server.events.get(lambda e: e["event"] == "message", what="message")
    assert event["message"]["message_segment"]["data"] == "to 0.6.8"
    assert event["metadata"]["api_key"] == KEY

    tail = await start("tail", url, "--key", KEY, "--platform", "qq", "--json",
                       "--count", "2", "--duration", "25")
    try:
        reply = await server.poll("wait_connections", lambda r: r["ok"], timeout=20)
        uuid = reply["uuids"][0]
        message = make_message("from 0.6.8", "m-1")
        assert (await server.call("send_message", message=message.to_dict()))["result"]
        await server.call("send_custom", type="note", payload={"n": 1}, connection_uuid=uuid)
        rc, out, err = await finish(tail)
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()
    assert rc == 0, err
    lines = [orjson.loads(line) for line in out.splitlines()]
    kinds = sorted(line["type"] for line in lines)
    assert kinds == ["custom", "message"], lines
    custom = next(line for line in lines if line["type"] == "custom")
    assert custom["custom_type"].endswith("note") and custom["payload"] == {"n": 1}
    got = next(line for line in lines if line["type"] == "message")
    assert got["message"]["message_info"]["message_id"] == "m-1"

    rc, out, err = await run("ping", url, "--key", KEY, "--platform", "qq")
    assert rc == 0 and "round trip" in out, err
    # both accept the upgrade and then refuse the key: still exit 1 with the reason
    rc, _, err = await run("send", url, "--key", "wrong-key", "--platform", "qq", "x")
    assert rc == 1 and "refused" in err, err


async def test_tail_says_why_the_hub_closed_it_when_its_key_is_revoked(
        hub_factory: Any) -> None:  # noqa: F811
    hub = await hub_factory().start(CONFIG)
    tail = await start("tail", hub.ws_url, "--key", CORE_KEY, "--platform", "qq",
                       "--duration", "25")
    try:
        await until(lambda: _has(hub, 1), timeout=20, what="tail to connect")
        keys = await hub.admin("/api/admin/keys")
        label = next(k["key"] for k in keys if k["user"] == "maibot")
        await hub.admin("/api/admin/revoke", {"key": label})
        rc, _, err = await finish(tail)
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()
    assert rc == 1
    assert err.count("disconnected: connection closed: 4003 API key revoked") == 1, err
    assert "refused:" in err and "HTTP 403" in err
    assert await hub.terminate() == 0


async def test_tail_count_takes_only_that_many_of_a_queued_backlog(
        hub_factory: Any) -> None:  # noqa: F811
    """The backlog arrives in one burst: `--count 1` prints and acks one, the rest stays
    queued for the next connection."""
    hub = await hub_factory().start(CONFIG)
    for n in range(3):
        rc, _, err = await run("send", hub.ws_url, "--key", ADAPTER_KEY, "--platform", "qq",
                               f"queued {n}")
        assert rc == 0, err
    texts = []
    for count, duration in (("1", "20"), ("5", "3")):
        rc, out, err = await run("tail", hub.ws_url, "--key", CORE_KEY, "--platform", "qq",
                                 "--json", "--count", count, "--duration", duration)
        assert rc == 0, err
        texts.append([orjson.loads(line)["message"]["message_segment"]["data"]
                      for line in out.splitlines()])
    assert texts == [["queued 0"], ["queued 1", "queued 2"]]
    assert await hub.terminate() == 0


async def test_tail_says_when_it_lost_the_hub_and_is_reconnecting(
        hub_factory: Any) -> None:  # noqa: F811
    """A hub killed under a tail: one line on stderr, not minutes of silence."""
    hub = await hub_factory().start(CONFIG)
    tail = await start("tail", hub.ws_url, "--key", CORE_KEY, "--platform", "qq",
                       "--duration", "30")
    try:
        await until(lambda: _has(hub, 1), timeout=20, what="tail to connect")
        hub.kill()  # SIGKILL, the PID we started
        assert tail.stderr is not None
        lines: List[str] = []
        while not any("reconnecting" in line for line in lines):
            line = await asyncio.wait_for(tail.stderr.readline(), 15)
            assert line, f"tail ended without saying so: {lines}"
            lines.append(line.decode())
        assert any(line.startswith("disconnected: ") for line in lines), lines
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()
