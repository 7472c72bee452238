"""Interop matrix: {our MessageServer, 0.6.8 MessageServer} x {our MessageClient, 0.6.8
MessageClient} x {ws, tcp}. 0.6.8 runs for real in its own virtualenv as a subprocess
(``upstream_scripts/legacy_peer.py``); our side runs in this process. Each cell checks
standard messages both ways, custom messages both ways, token auth and a reconnect after
the server drops the connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import deque
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional

import pytest

from maim_message import MessageBase, MessageClient, MessageServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import free_port

SCRIPT = Path(__file__).resolve().parent / "upstream_scripts" / "legacy_peer.py"
TOKEN = "tok-interop"
PLATFORM = "qq"
T = 15.0  # bound for any single wait
LINE_LIMIT = 32 * 1024 * 1024  # event lines carry whole messages (the deflate test: ~1 MB)


def clean_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_PROXY"] = "*"
    return env


class UpstreamPeer:
    """A 0.6.8 MessageServer or MessageClient in a subprocess, driven over stdin/stdout."""

    def __init__(self, python: str, args: List[str], cwd: Path) -> None:
        self.python = python
        self.args = args
        self.cwd = cwd
        self.events: List[Dict[str, Any]] = []
        self.stderr: Deque[str] = deque(maxlen=200)
        self._changed = asyncio.Event()
        self.proc: Optional[asyncio.subprocess.Process] = None
        self._tasks: List[asyncio.Task[None]] = []
        self._next_id = 0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.python, str(SCRIPT), *self.args, cwd=str(self.cwd), env=clean_env(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=LINE_LIMIT,
        )
        self._tasks = [asyncio.ensure_future(self._read_stdout()),
                       asyncio.ensure_future(self._read_stderr())]
        await self.wait_event(lambda e: e["event"] == "ready", timeout=30)

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.startswith("@@"):
                event = json.loads(line[2:])
                event["_i"] = len(self.events)  # position, for "after this event" waits
                self.events.append(event)
                self._changed.set()
            else:
                self.stderr.append(line)
        self._changed.set()

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def diag(self) -> str:
        return "\n".join(self.stderr)

    async def wait_event(self, pred: Callable[[Dict[str, Any]], bool], timeout: float = T,
                         start: int = 0) -> Dict[str, Any]:
        async def scan() -> Dict[str, Any]:
            seen = start
            while True:
                for event in self.events[seen:]:
                    if pred(event):
                        return event
                seen = len(self.events)
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise AssertionError("upstream peer exited:\n" + self.diag())
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(scan(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"timeout waiting in upstream peer; stderr:\n{self.diag()}") \
                from None

    def mark(self) -> int:
        return len(self.events)

    async def command(self, **cmd: Any) -> Dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self._next_id += 1
        cmd["id"] = self._next_id
        start = self.mark()
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        if cmd["cmd"] in ("send", "custom"):
            return await self.wait_event(
                lambda e: e["event"] == "sent" and e["id"] == cmd["id"], start=start)
        return {}

    async def stop(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.returncode is None:
                await self.command(cmd="stop")
                await asyncio.wait_for(self.proc.wait(), 10)
        except (asyncio.TimeoutError, ConnectionError, AssertionError):
            pass
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def until(cond: Callable[[], bool], timeout: float = T, what: str = "") -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timeout waiting for {what}") from None


def sample_message(text: str) -> Dict[str, Any]:
    return {
        "message_info": {
            "platform": PLATFORM, "message_id": 123456, "time": 1732500000.5,
            "group_info": {"platform": PLATFORM, "group_id": 987654, "group_name": "测试群"},
            "user_info": {"platform": PLATFORM, "user_id": 10001, "user_nickname": "Alice",
                          "user_cardname": None},
            "format_info": {"content_format": ["text", "image"], "accept_format": ["text"]},
            "additional_config": {"allow_tts": True},
        },
        "message_segment": {"type": "seglist", "data": [
            {"type": "reply", "data": "112233"}, {"type": "text", "data": text}]},
        "raw_message": text,
    }


def canon(d: Dict[str, Any]) -> Dict[str, Any]:
    """The JSON value a legacy receiver sees for a MessageBase built from ``d``."""
    return json.loads(json.dumps(MessageBase.from_dict(d).to_dict()))


# -- the two sides behind one interface ----------------------------------------------------
class OurServer:
    def __init__(self, mode: str, port: int) -> None:
        self.server = MessageServer(host="127.0.0.1", port=port, mode=mode, enable_token=True)
        self.server.add_valid_token(TOKEN)
        self.messages: List[Any] = []
        self.customs: List[Any] = []
        self.server.register_message_handler(self.messages.append)

        async def on_custom(m: Any) -> None:  # async handler on purpose
            self.customs.append(m)

        self.server.register_custom_message_handler("cust", on_custom)

    async def start(self) -> None:
        await self.server.start()

    def connected(self) -> bool:
        return PLATFORM in self.server.connected_platforms()

    async def wait_connected(self) -> None:
        await until(self.connected, what="client registered on our server")

    async def drop(self) -> None:
        assert await self.server.connection.disconnect(PLATFORM)

    async def send(self, msg: Dict[str, Any]) -> bool:
        return await self.server.send_message(MessageBase.from_dict(msg))

    async def custom(self, content: Dict[str, Any]) -> bool:
        return await self.server.send_custom_message(PLATFORM, "cust", content)

    async def next_message(self, n: int) -> Any:
        await until(lambda: len(self.messages) > n, what="message on our server")
        return self.messages[n]

    async def next_custom(self, n: int) -> Any:
        await until(lambda: len(self.customs) > n, what="custom message on our server")
        return self.customs[n]

    async def stop(self) -> None:
        await self.server.stop()


class UpServer:
    def __init__(self, python: str, mode: str, port: int, cwd: Path) -> None:
        self.peer = UpstreamPeer(python, ["server", mode, str(port), TOKEN], cwd)
        self.dropped_at = 0

    async def start(self) -> None:
        await self.peer.start()

    async def wait_connected(self) -> None:
        await self.peer.wait_event(
            lambda e: e["event"] == "platforms" and PLATFORM in e["platforms"],
            start=self.dropped_at)

    async def drop(self) -> None:
        start = self.peer.mark()
        await self.peer.command(cmd="drop", platform=PLATFORM)
        ev = await self.peer.wait_event(
            lambda e: e["event"] == "platforms" and PLATFORM not in e["platforms"], start=start)
        self.dropped_at = ev["_i"] + 1

    async def send(self, msg: Dict[str, Any]) -> bool:
        return bool((await self.peer.command(cmd="send", msg=msg))["ok"])

    async def custom(self, content: Dict[str, Any]) -> bool:
        ev = await self.peer.command(cmd="custom", platform=PLATFORM, name="cust",
                                     content=content)
        return bool(ev["ok"])

    async def _nth(self, kind: str, n: int) -> Any:
        count = 0

        def pred(e: Dict[str, Any]) -> bool:
            nonlocal count
            if e["event"] != kind:
                return False
            count += 1
            return count == n + 1

        return (await self.peer.wait_event(pred))["data"]

    async def next_message(self, n: int) -> Any:
        return await self._nth("message", n)

    async def next_custom(self, n: int) -> Any:
        return await self._nth("custom", n)

    async def stop(self) -> None:
        await self.peer.stop()


class OurClient:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = MessageClient()
        self.messages: List[Any] = []
        self.customs: List[Any] = []
        self.client.register_message_handler(self.messages.append)
        self.client.register_custom_message_handler("cust", self.customs.append)
        self.task: Optional[asyncio.Task[None]] = None
        self.receives_after_reconnect = True

    async def start(self) -> None:
        await self.client.connect(self.url, PLATFORM, token=TOKEN)
        self.client.connection.reconnect_interval = 0.2
        self.task = asyncio.ensure_future(self.client.run())

    async def wait_connected(self) -> None:
        assert await self.client.wait_connected(T), "our client did not connect"

    async def wait_disconnected(self) -> None:
        await until(lambda: not self.client.is_connected(), what="our client to notice drop")

    async def send(self, msg: Dict[str, Any]) -> bool:
        return await self.client.send_message(msg)

    async def custom(self, content: Dict[str, Any]) -> bool:
        return await self.client.send_custom_message("cust", content)

    async def next_message(self, n: int) -> Any:
        await until(lambda: len(self.messages) > n, what="message on our client")
        return self.messages[n]

    async def next_custom(self, n: int) -> Any:
        await until(lambda: len(self.customs) > n, what="custom message on our client")
        return self.customs[n]

    async def stop(self) -> None:
        await self.client.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 5)


class UpClient:
    def __init__(self, python: str, url: str, cwd: Path) -> None:
        self.peer = UpstreamPeer(python, ["client", url, PLATFORM, TOKEN], cwd)
        # 0.6.8 defect #29: its TCP client stops reading after its reconnect
        self.receives_after_reconnect = not url.startswith("tcp")
        self._base = 0

    async def start(self) -> None:
        await self.peer.start()

    async def wait_connected(self) -> None:
        ev = await self.peer.wait_event(lambda e: e["event"] == "connected" and e["value"],
                                        start=self._base)
        self._base = ev["_i"] + 1

    async def wait_disconnected(self) -> None:
        ev = await self.peer.wait_event(lambda e: e["event"] == "connected" and not e["value"],
                                        start=self._base)
        self._base = ev["_i"] + 1

    async def send(self, msg: Dict[str, Any]) -> bool:
        return bool((await self.peer.command(cmd="send", msg=msg))["ok"])

    async def custom(self, content: Dict[str, Any]) -> bool:
        return bool((await self.peer.command(cmd="custom", name="cust", content=content))["ok"])

    _nth = UpServer._nth
    next_message = UpServer.next_message
    next_custom = UpServer.next_custom

    async def stop(self) -> None:
        await self.peer.stop()


@pytest.mark.parametrize("mode", ["ws", "tcp"])
@pytest.mark.parametrize("client_impl", ["ours", "0.6.8"])
@pytest.mark.parametrize("server_impl", ["ours", "0.6.8"])
async def test_interop_cell(server_impl: str, client_impl: str, mode: str,
                            upstream_python: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws" if mode == "ws" else f"tcp://127.0.0.1:{port}"
    server: Any = (OurServer(mode, port) if server_impl == "ours"
                   else UpServer(upstream_python, mode, port, tmp_path))
    client: Any = (OurClient(url) if client_impl == "ours"
                   else UpClient(upstream_python, url, tmp_path))
    try:
        await server.start()
        await client.start()
        await client.wait_connected()
        await server.wait_connected()

        # standard message, client -> server and server -> client
        up = sample_message("来自客户端 ü")
        assert await client.send(canon(up))
        assert await server.next_message(0) == canon(up)
        down = sample_message("from the server ✓")
        assert await server.send(canon(down))
        assert await client.next_message(0) == canon(down)

        # custom messages both ways
        assert await client.custom({"a": 1, "text": "ü"})
        got = await server.next_custom(0)
        assert got["is_custom_message"] is True
        assert (got["platform"], got["message_type_name"], got["content"]) == (
            PLATFORM, "cust", {"a": 1, "text": "ü"})
        assert isinstance(got["timestamp"], float)
        assert await server.custom({"b": 2})
        got = await client.next_custom(0)
        assert (got["platform"], got["message_type_name"], got["content"]) == (
            PLATFORM, "cust", {"b": 2})

        # reconnect: the server drops the connection, the client comes back by itself
        await server.drop()
        await client.wait_disconnected()
        await client.wait_connected()
        await server.wait_connected()
        again = sample_message("after reconnect")
        assert await client.send(canon(again))
        assert await server.next_message(1) == canon(again)
        if client.receives_after_reconnect:
            assert await server.send(canon(down))
            assert await client.next_message(1) == canon(down)
    finally:
        await client.stop()
        await server.stop()


async def test_our_client_backs_off_on_068_token_refusal(upstream_python: str,
                                                         tmp_path: Path) -> None:
    """0.6.8 accepts the upgrade, then closes 1008 on a bad token: counted as a failure."""
    port = free_port()
    server = UpServer(upstream_python, "ws", port, tmp_path)
    client = MessageClient()
    await client.connect(f"ws://127.0.0.1:{port}/ws", PLATFORM, token="wrong")
    client.connection.reconnect_interval = 0.05
    task: Optional[asyncio.Task[None]] = None
    try:
        await server.start()
        task = asyncio.ensure_future(client.run())
        await until(lambda: client.connection.retry_count >= 2, what="backoff to grow")
        assert not any(e["event"] == "platforms" and e["platforms"] for e in server.peer.events)
    finally:
        await client.stop()
        if task is not None:
            await asyncio.wait_for(task, 5)
        await server.stop()


async def test_068_client_refused_before_upgrade_by_our_server(upstream_python: str,
                                                               tmp_path: Path) -> None:
    port = free_port()
    server = OurServer("ws", port)
    client = UpstreamPeer(upstream_python,
                          ["client", f"ws://127.0.0.1:{port}/ws", PLATFORM, "wrong"], tmp_path)
    try:
        await server.start()
        await client.start()
        await until(lambda: any("403" in line for line in client.stderr),
                    what="0.6.8 client to log the HTTP 403 refusal")
        assert not server.connected()
        assert not any(e["event"] == "connected" and e["value"] for e in client.events)
    finally:
        await client.stop()
        await server.stop()


@pytest.mark.parametrize("direction", ["068-client", "068-server"])
async def test_deflate_offered_by_068_is_not_needed(direction: str, upstream_python: str,
                                                    tmp_path: Path) -> None:
    """0.6.8's aiohttp client offers permessage-deflate (compress=15) and its uvicorn server
    accepts it; our server negotiates no extension. Big messages flow both ways without it,
    and our client (which offers deflate too) works with either server."""
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    big = sample_message("大" * 300_000 + "x" * 200_000)  # ~1.1 MB of JSON, compressible
    offered: List[str] = []
    server: Any
    client: Any
    if direction == "068-client":
        server, client = OurServer("ws", port), UpClient(upstream_python, url, tmp_path)
        app = server.server.connection
        handshake = app.handshake

        async def spy(info: Any) -> Any:
            offered.extend(v for k, v in info.raw_headers
                           if k.lower() == "sec-websocket-extensions")
            return await handshake(info)

        app.handshake = spy
    else:
        server, client = UpServer(upstream_python, "ws", port, tmp_path), OurClient(url)
    try:
        await server.start()
        await client.start()
        await client.wait_connected()
        await server.wait_connected()
        if direction == "068-client":
            assert offered and "permessage-deflate" in offered[0]
        else:
            ws = client.client.connection._session
            assert ws is not None  # 0.6.8's server accepts the offer of our client
            assert "permessage-deflate" in (ws.response.headers.get(
                "Sec-WebSocket-Extensions") or "")
        assert await client.send(canon(big))
        assert await server.next_message(0) == canon(big)
        assert await server.send(canon(big))
        assert await client.next_message(0) == canon(big)
    finally:
        await client.stop()
        await server.stop()
