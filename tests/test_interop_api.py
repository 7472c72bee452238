"""API-Server interop with the published maim-message 0.6.8, in both directions.

Matrix: {our server, 0.6.8 server} x {our client, 0.6.8 client}; the cross cells also run
over TLS (trustme certificates). Every cell checks, on a live connection:

- client -> server ``sys_std``: ``on_message`` gets the same message and the connection
  metadata (uuid, api_key, platform, headers, client_ip);
- server -> client via ``send_message`` routed by ``message_dim`` (and a routing miss
  returns ``{}``), with the envelope meta the client's ``on_message`` receives;
- acks both ways (0.6.8 client: acked ids leave its resend cache; our client: one
  ``sys_ack`` frame per sent frame shows in its frame counter; servers: the client's ack
  shows in their frame counters);
- custom messages both ways, with the naming rules of wire-protocol.md §1.9;
- a reconnect: the server is restarted on the same port, the client comes back by itself
  and messages flow again.

Plus: an api_key our server refuses (HTTP 403 before the upgrade) as seen by a 0.6.8
client, and a 0.6.8 client resending cached frames after a reconnect, deduplicated by our
server.

0.6.8 never runs in this process: ``tests/upstream_scripts/api_server.py`` and
``api_client.py`` run under the 0.6.8 virtualenv's interpreter (``-E -s``, no PYTHONPATH,
cwd outside the repository) and speak JSON lines over stdin/stdout.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional

import pytest

from maim_message.client import WebSocketClient, create_client_config
from maim_message.message import (
    APIMessageBase,
    BaseMessageInfo,
    MessageDim,
    Seg,
    SenderInfo,
    UserInfo,
)
from maim_message.server import WebSocketServer, create_server_config, create_ssl_server_config

pytestmark = pytest.mark.timeout(90)

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "upstream_scripts"
OUR_SRC = HERE.parent / "src"

KEY = "key-alpha"
USER = "user-alpha"
KEYS = {KEY: USER}
PLATFORM = "qq"
T = 15.0  # upper bound for any single wait; nothing here should take more than a second


# -- helpers ---------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (as conftest.free_port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inbox:
    """Things that arrived (callback calls, subprocess events); ``get`` waits with a bound."""

    def __init__(self, name: str, describe: Optional[Callable[[], str]] = None) -> None:
        self.name = name
        self.pending: List[Any] = []
        self.seen: List[Any] = []
        self.closed = False
        self._waiters: List[asyncio.Future[None]] = []
        self._describe = describe

    def put(self, item: Any) -> None:
        self.pending.append(item)
        self.seen.append(item)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    async def get(
        self, pred: Callable[[Any], bool] = lambda item: True, timeout: float = T,
        what: str = "",
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, item in enumerate(self.pending):
                if pred(item):
                    return self.pending.pop(i)
            remaining = deadline - loop.time()
            if remaining <= 0 or self.closed:
                extra = self._describe() if self._describe else ""
                raise AssertionError(
                    f"{self.name}: no {what or 'item'} within {timeout}s "
                    f"(closed={self.closed}); pending={self.pending!r}{extra}"
                )
            fut = loop.create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except asyncio.TimeoutError:
                pass


async def until(pred: Callable[[], Any], timeout: float = T, what: str = "condition") -> Any:
    """Poll a cheap in-process condition (no fixed sleeps: bounded, 10 ms steps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


class Upstream:
    """One 0.6.8 script in a subprocess: commands in, replies and events out (JSON lines)."""

    _ids = itertools.count(1)

    def __init__(self, name: str, proc: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.stderr_path = stderr_path
        self.events = Inbox(f"0.6.8 {name} events", self.stderr_tail)
        self._replies: Dict[int, asyncio.Future[Dict[str, Any]]] = {}
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def spawn(
        cls, python: str, script: str, opts: Dict[str, Any], workdir: Path, name: str
    ) -> Upstream:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
        stderr_path = workdir / f"{name}.stderr.log"
        with open(stderr_path, "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                python, "-E", "-s", str(SCRIPTS / script), json.dumps(opts),
                cwd=str(workdir), env=env, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=err, limit=1 << 22,
            )
        return cls(name, proc, stderr_path)

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            text = self.stderr_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return f"\n--- stderr of 0.6.8 {self.name} (tail) ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    break
                text = line.decode("utf-8").strip()
                if not text:
                    continue
                if text == "READY":
                    self.events.put({"event": "READY"})
                    continue
                obj = json.loads(text)
                if "event" in obj:
                    self.events.put(obj)
                    continue
                fut = self._replies.pop(obj.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(obj)
        finally:
            self.events.close()
            for fut in self._replies.values():
                if not fut.done():
                    fut.set_exception(AssertionError(f"0.6.8 {self.name} exited"
                                                     + self.stderr_tail()))

    async def ready(self) -> Dict[str, Any]:
        hello = await self.events.get(lambda e: e["event"] == "hello", what="hello")
        await self.events.get(lambda e: e["event"] == "READY", what="READY")
        # The subprocess imported the published package, not ours.
        assert not str(hello["maim_message"]).startswith(str(OUR_SRC)), hello
        assert "upstream-0.6.8" in hello["maim_message"] or "site-packages" in hello[
            "maim_message"], hello
        return hello

    async def call(self, cmd: str, timeout: float = T, **args: Any) -> Dict[str, Any]:
        ident = next(self._ids)
        fut: asyncio.Future[Dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[ident] = fut
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"id": ident, "cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        try:
            reply = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"0.6.8 {self.name}: no reply to {cmd} within {timeout}s"
                                 + self.stderr_tail()) from None
        if "error" in reply:
            raise AssertionError(f"0.6.8 {self.name}: {cmd} failed: {reply['error']}\n"
                                 f"{reply.get('traceback', '')}")
        return reply

    async def poll(self, cmd: str, pred: Callable[[Dict[str, Any]], bool],
                   timeout: float = T) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            reply = await self.call(cmd)
            if pred(reply):
                return reply
            if time.monotonic() > deadline:
                raise AssertionError(f"0.6.8 {self.name}: {cmd} never satisfied: {reply}")
            await asyncio.sleep(0.02)

    async def kill(self) -> None:
        """SIGKILL the process we started (0.6.8 may hang at exit) and reap it."""
        if self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            await asyncio.wait_for(self.proc.wait(), 10.0)
        finally:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


Spawn = Callable[[str, Dict[str, Any], str], Awaitable[Upstream]]


@pytest.fixture
async def spawn(upstream_python: str, tmp_path: Path):
    """Start 0.6.8 scripts; every one of them is killed (by its own PID) at teardown."""
    started: List[Upstream] = []
    workdir = tmp_path / "upstream-cwd"
    workdir.mkdir()

    async def _spawn(script: str, opts: Dict[str, Any], name: str) -> Upstream:
        proc = await Upstream.spawn(upstream_python, script, opts, workdir, name)
        started.append(proc)
        return proc

    try:
        yield _spawn
    finally:
        for proc in started:
            await proc.kill()


@dataclass
class Certs:
    ca: str
    cert: str
    key: str


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    d = tmp_path_factory.mktemp("tls")
    paths = Certs(ca=str(d / "ca.pem"), cert=str(d / "server.pem"), key=str(d / "server.key"))
    ca.cert_pem.write_to_path(paths.ca)
    issued.private_key_pem.write_to_path(paths.key)
    with open(paths.cert, "wb") as fh:
        for blob in issued.cert_chain_pems:
            fh.write(blob.bytes())
    return paths


def make_message(text: str, message_id: str, api_key: str = KEY,
                 platform: str = PLATFORM) -> APIMessageBase:
    """A standard message with nested segments, non-ASCII text and sender info."""
    return APIMessageBase(
        message_info=BaseMessageInfo(
            platform=platform, message_id=message_id, time=1732500000.5,
            sender_info=SenderInfo(user_info=UserInfo(
                platform=platform, user_id="10001", user_nickname="Alice ü 你好")),
            additional_config={"trace": [1, 2, "三"]},
        ),
        message_segment=Seg("seglist", [Seg("text", text), Seg("face", "14")]),
        message_dim=MessageDim(api_key=api_key, platform=platform),
    )


def has_id(message_id: str) -> Callable[[Any], bool]:
    """Predicate for (message, metadata) tuples and for 0.6.8 ``message`` events."""

    def pred(item: Any) -> bool:
        if isinstance(item, dict):
            return (item.get("event") == "message"
                    and item["message"]["message_info"]["message_id"] == message_id)
        return bool(item[0].message_info.message_id == message_id)

    return pred


def pending(client: WebSocketClient) -> int:
    """Frames our client still keeps for a resend (not acked yet)."""
    return int(client.get_stats()["pending_messages"])


def is_custom(payload: Any) -> Callable[[Dict[str, Any]], bool]:
    return lambda e: e.get("event") == "custom" and e.get("payload") == payload


# -- our side ----------------------------------------------------------------------------------


class OurServer:
    """Our WebSocketServer with recording callbacks (same auth rules as api_server.py)."""

    def __init__(self, certs: Optional[Certs] = None) -> None:
        self.messages = Inbox("our server on_message")
        self.custom = Inbox("our server custom handler")
        self.connects = Inbox("our server on_connect")

        async def on_auth(md: Dict[str, Any]) -> bool:
            return md.get("api_key") in KEYS

        async def extract_user(md: Dict[str, Any]) -> Optional[str]:
            return KEYS.get(md.get("api_key", ""))

        async def on_message(message: APIMessageBase, md: Dict[str, Any]) -> None:
            self.messages.put((message, md))

        async def on_connect(uuid: str, md: Dict[str, Any]) -> None:
            self.connects.put((uuid, md))

        async def on_ping(envelope: Dict[str, Any], md: Dict[str, Any]) -> None:
            self.custom.put((envelope, md))

        common: Dict[str, Any] = dict(
            host="127.0.0.1", port=0, on_auth=on_auth, on_auth_extract_user=extract_user,
            on_message=on_message, on_connect=on_connect,
        )
        if certs is not None:
            config = create_ssl_server_config(
                ssl_certfile=certs.cert, ssl_keyfile=certs.key, **common)
        else:
            config = create_server_config(**common)
        config.register_custom_handler("ping", on_ping)
        self.server = WebSocketServer(config)
        self.scheme = "wss" if certs is not None else "ws"

    async def start(self) -> None:
        await self.server.start()
        # Pin the port so that a restart (same instance) comes back on it.
        self.server.config.port = int(self.server.port or 0)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.config.port}/ws"

    def frames_in(self) -> int:
        return int(self.server.get_stats()["network"]["messages_received"])


class OurClient:
    """Our WebSocketClient with recording callbacks; fast reconnect for the tests."""

    def __init__(self, url: str, certs: Optional[Certs] = None, api_key: str = KEY) -> None:
        self.messages = Inbox("our client on_message")
        self.custom = Inbox("our client custom handler")
        self.connects = Inbox("our client on_connect")

        async def on_message(message: APIMessageBase, meta: Dict[str, Any]) -> None:
            self.messages.put((message, meta))

        async def on_connect(uuid: str, config: Any) -> None:
            self.connects.put(uuid)

        async def on_note(payload: Any, meta: Dict[str, Any]) -> None:
            self.custom.put({"event": "custom", "payload": payload, "meta": meta})

        kwargs: Dict[str, Any] = dict(
            platform=PLATFORM, on_message=on_message, on_connect=on_connect,
            reconnect_delay=0.1, max_reconnect_delay=0.5, max_reconnect_attempts=0,
        )
        if certs is not None:
            kwargs["ssl_ca_certs"] = certs.ca
        self.client = WebSocketClient(create_client_config(url, api_key, **kwargs))
        self.client.register_custom_handler("note", on_note)

    def frames_in(self) -> int:
        return int(self.client.get_stats()["messages_received"])


# -- cells -------------------------------------------------------------------------------------


async def test_our_server_our_client() -> None:
    """Baseline cell: both ends ours, same checks as the cross cells."""
    srv = OurServer()
    await srv.start()
    cli = OurClient(srv.url)
    try:
        assert await cli.client.connect() is True
        uuid, _ = await srv.connects.get(what="connect")
        assert uuid == cli.client.get_connection_uuid()
        await cli.connects.get(what="client on_connect")

        # client -> server, and the server's ack reaches the client
        frames = cli.frames_in()
        m1 = make_message("hello from our client", "c1")
        assert await cli.client.send_message(m1) is True
        msg, md = await srv.messages.get(has_id("c1"))
        assert msg.to_dict() == m1.to_dict()
        assert (md["uuid"], md["api_key"], md["platform"]) == (uuid, KEY, PLATFORM)
        await until(lambda: cli.frames_in() >= frames + 1, what="sys_ack at our client")
        await until(lambda: pending(cli.client) == 0, what="our outbox drained")

        # server -> client by message_dim, and the client's ack reaches the server
        frames = srv.frames_in()
        s1 = make_message("hello from our server", "s1")
        assert await srv.server.send_message(s1) == {uuid: True}
        msg, meta = await cli.messages.get(has_id("s1"))
        assert msg.to_dict() == s1.to_dict()
        assert (meta["sender_user"], meta["target_user"], meta["platform"]) == (
            "server", USER, PLATFORM)
        await until(lambda: srv.frames_in() >= frames + 1, what="client ack at our server")
        assert await srv.server.send_message(make_message("x", "miss", platform="wx")) == {}

        # custom both ways
        assert await cli.client.send_custom_message("ping", {"a": 1}) is True
        env, md = await srv.custom.get()
        assert (env["type"], env["payload"], md["uuid"]) == ("custom_ping", {"a": 1}, uuid)
        assert await srv.server.send_custom_message(
            "note", {"x": 1}, connection_uuid=uuid) == {uuid: True}
        ev = await cli.custom.get(is_custom({"x": 1}))
        assert ev["meta"]["sender_user"] == "server"

        # reconnect: restart the server on the same port
        await srv.server.stop()
        await srv.server.start()
        uuid2, _ = await srv.connects.get(what="reconnect")
        assert uuid2 == uuid
        m2 = make_message("after restart", "c2")
        assert await until(lambda: cli.client.is_connected(), what="client connected")
        assert await cli.client.send_message(m2) is True
        await srv.messages.get(has_id("c2"))
        assert await srv.server.send_message(make_message("back", "s2")) == {uuid: True}
        await cli.messages.get(has_id("s2"))
    finally:
        await cli.client.stop()
        await srv.server.stop()


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_our_server_upstream_client(scheme: str, certs: Certs, spawn: Spawn) -> None:
    srv = OurServer(certs if scheme == "wss" else None)
    await srv.start()
    try:
        opts = {"url": srv.url, "api_key": KEY, "platform": PLATFORM, "reconnect_delay": 0.5}
        if scheme == "wss":
            opts["ca"] = certs.ca
        up = await spawn("api_client.py", opts, f"client-{scheme}")
        # A message for a user that is not connected yet waits in our outbox (0.6.8 drops
        # it) and reaches the 0.6.8 client right after its handshake.
        s0 = make_message("queued before you connected", "s0")
        assert await srv.server.send_message(s0) == {}
        await up.ready()
        r = await up.call("connect")
        assert r["connected"] is True and r["is_connected"] is True, r
        uuid = r["uuid"]
        assert uuid.startswith("single_")
        got_uuid, md = await srv.connects.get(what="connect")
        assert got_uuid == uuid
        ev = await up.events.get(has_id("s0"), what="queued s0")
        assert ev["message"] == s0.to_dict() and ev["meta"]["target_user"] == USER

        # 0.6.8 client -> our server: content and connection metadata
        m1 = make_message("hello from 0.6.8 ü", "c1")
        r = await up.call("send_message", message=m1.to_dict())
        assert r["ok"] is True
        m1_id = r["msg_id"]
        msg, md = await srv.messages.get(has_id("c1"))
        assert msg.to_dict() == m1.to_dict()
        assert (md["uuid"], md["api_key"], md["platform"]) == (uuid, KEY, PLATFORM)
        assert md["client_ip"] == "127.0.0.1"
        assert md["headers"]["x-uuid"] == uuid and md["headers"]["x-apikey"] == KEY
        assert md["headers"]["x-platform"] == PLATFORM

        # our server -> 0.6.8 client, routed by message_dim; its ack reaches our server
        frames = srv.frames_in()
        s1 = make_message("hello from our server ü", "s1")
        assert await srv.server.send_message(s1) == {uuid: True}
        ev = await up.events.get(has_id("s1"))
        assert ev["message"] == s1.to_dict()
        assert (ev["meta"]["sender_user"], ev["meta"]["target_user"],
                ev["meta"]["platform"]) == ("server", USER, PLATFORM)
        await until(lambda: srv.frames_in() >= frames + 1, what="0.6.8 client's sys_ack")
        # routing misses: wrong platform, unknown api_key
        assert await srv.server.send_message(make_message("x", "m1", platform="wx")) == {}
        assert await srv.server.send_message(make_message("x", "m2", api_key="nope")) == {}

        # custom: 0.6.8 prefixes custom_ on send; our server prefixes too, so a 0.6.8 handler
        # registered as "note" fires for send_custom_message("note", ...)
        r = await up.call("send_custom", type="ping", payload={"a": 1})
        env, md = await srv.custom.get(what="custom_ping")
        assert env["type"] == "custom_ping" and env["payload"] == {"a": 1}
        assert env["msg_id"] == r["msg_id"] and md["uuid"] == uuid
        assert await srv.server.send_custom_message(
            "note", {"x": 1}, connection_uuid=uuid) == {uuid: True}
        await up.events.get(is_custom({"x": 1}), what="custom_note by uuid")
        assert await srv.server.send_custom_message(
            "custom_note", {"x": 2}, target_user=USER) == {uuid: True}
        await up.events.get(is_custom({"x": 2}), what="custom_note by user")

        # reconnect with 0.6.8's resend cache: put c1 back into its cache (as if c1's ack
        # had been lost), restart our server (close 1001: 0.6.8 keeps believing it is
        # connected), send c2 while the socket is gone (0.6.8 caches it), start again.
        assert (await up.call("inject_cache", msg_id=m1_id))["ids"] == [m1_id]
        await srv.server.stop()
        assert (await up.call("wait_inactive"))["ok"] is True
        m2 = make_message("sent while the server was down", "c2")
        r = await up.call("send_message", message=m2.to_dict())
        assert r["ok"] is False and r["msg_id"]
        assert sorted((await up.call("cache"))["ids"]) == sorted([m1_id, r["msg_id"]])
        dup_before = srv.server.get_stats()["duplicate_messages_ignored"]
        await srv.server.start()
        got_uuid, _ = await srv.connects.get(what="reconnect")
        assert got_uuid == uuid  # 0.6.8 reuses its x-uuid
        msg, _ = await srv.messages.get(has_id("c2"), what="resent c2")
        assert msg.to_dict() == m2.to_dict()
        # our acks emptied 0.6.8's resend cache; the resent c1 was acked but not delivered
        await up.poll("cache", lambda rep: rep["ids"] == [])
        await until(lambda: srv.server.get_stats()["duplicate_messages_ignored"] > dup_before,
                    what="duplicate counted")
        assert sum(1 for item in srv.messages.seen if has_id("c1")(item)) == 1

        # messages flow again both ways
        m3 = make_message("after reconnect", "c3")
        assert (await up.call("send_message", message=m3.to_dict()))["ok"] is True
        await srv.messages.get(has_id("c3"))
        # send_message(ack_timeout=...) returns once the 0.6.8 client's sys_ack came back
        s3 = make_message("back", "s3")
        assert await srv.server.send_message(s3, ack_timeout=T) == {uuid: True}
        await up.events.get(has_id("s3"))
        for mid in ("c1", "c2"):
            assert sum(1 for item in srv.messages.seen if has_id(mid)(item)) == 1, mid
    finally:
        await srv.server.stop()


async def test_our_server_refuses_upstream_client(certs: Certs, spawn: Spawn) -> None:
    """A wrong api_key: HTTP 403 before the upgrade; 0.6.8 does not believe it connected."""
    srv = OurServer()
    await srv.start()
    try:
        up = await spawn("api_client.py", {"url": srv.url, "api_key": "key-wrong",
                                           "platform": PLATFORM, "reconnect_delay": 0.5},
                         "client-refused")
        await up.ready()
        # 0.6.8's connect() polls for 10 s before giving up; watch its state meanwhile.
        connecting = asyncio.ensure_future(up.call("connect", timeout=20))
        try:
            state = await up.poll("state", lambda s: bool(s["last_error"]))
            assert "HTTP 403" in state["last_error"], state
            assert state["is_connected"] is False and state["active"] is False
            r = await connecting
        finally:
            connecting.cancel()
        assert r["connected"] is False and r["is_connected"] is False, r
        assert "HTTP 403" in (r["last_error"] or ""), r
        stats = srv.server.get_stats()
        assert stats["failed_auths"] >= 1 and stats["successful_auths"] == 0
        assert srv.server.get_connection_count() == 0
        assert not srv.connects.seen and not srv.messages.seen
    finally:
        await srv.server.stop()


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_upstream_server_our_client(scheme: str, certs: Certs, spawn: Spawn) -> None:
    port = free_port()
    opts: Dict[str, Any] = {"port": port, "keys": KEYS}
    if scheme == "wss":
        opts.update(certfile=certs.cert, keyfile=certs.key)
    up = await spawn("api_server.py", opts, f"server-{scheme}")
    await up.ready()
    cli = OurClient(f"{scheme}://127.0.0.1:{port}/ws", certs if scheme == "wss" else None)
    try:
        assert await cli.client.connect() is True
        uuid = cli.client.get_connection_uuid()
        await cli.connects.get(what="client on_connect")
        r = await up.call("wait_connections", n=1)
        assert r["ok"] and r["uuids"] == [uuid], r

        # our client -> 0.6.8 server; 0.6.8's sys_ack arrives (the only frame sent to us)
        frames = cli.frames_in()
        m1 = make_message("hello from our client ü", "c1")
        assert await cli.client.send_message(m1) is True
        ev = await up.events.get(has_id("c1"))
        assert ev["message"] == m1.to_dict()
        md = ev["metadata"]
        assert (md["uuid"], md["api_key"], md["platform"]) == (uuid, KEY, PLATFORM)
        assert md["headers"]["x-uuid"] == uuid and md["client_ip"] == "127.0.0.1"
        await until(lambda: cli.frames_in() >= frames + 1, what="0.6.8 server's sys_ack")
        await until(lambda: pending(cli.client) == 0, what="c1 acked by 0.6.8")

        # 0.6.8 server -> our client, routed by message_dim; our ack reaches 0.6.8
        net = (await up.call("stats"))["network"]["messages_received"]
        s1 = make_message("hello from 0.6.8 server ü", "s1")
        r = await up.call("send_message", message=s1.to_dict())
        assert r["result"] == {uuid: True}
        msg, meta = await cli.messages.get(has_id("s1"))
        assert msg.to_dict() == s1.to_dict()
        assert (meta["sender_user"], meta["target_user"], meta["platform"]) == (
            "server", USER, PLATFORM)
        await up.poll("stats", lambda s: s["network"]["messages_received"] > net)
        miss = make_message("x", "m1", platform="wx")
        assert (await up.call("send_message", message=miss.to_dict()))["result"] == {}

        # custom: ours prefixes custom_; 0.6.8 server sends types verbatim, our client
        # normalises, so both "custom_note" and a bare "note" reach the "note" handler
        assert await cli.client.send_custom_message("ping", {"a": 1}) is True
        ev = await up.events.get(lambda e: e["event"] == "custom", what="custom_ping")
        assert ev["envelope"]["type"] == "custom_ping" and ev["envelope"]["payload"] == {"a": 1}
        assert ev["metadata"]["uuid"] == uuid
        for wire_type, payload in (("custom_note", {"x": 1}), ("note", {"x": 2})):
            r = await up.call("send_custom", type=wire_type, payload=payload,
                              connection_uuid=uuid)
            assert r["result"] == {uuid: True}
            got = await cli.custom.get(is_custom(payload), what=wire_type)
            assert got["meta"]["sender_user"] == "server"

        # every frame we sent was acked by 0.6.8, so nothing waits for a resend
        await until(lambda: pending(cli.client) == 0, what="our outbox drained")

        # reconnect: stop the 0.6.8 server, send while it is down (our client keeps the
        # frame until acked), start a new 0.6.8 server on the same port; our client comes
        # back by itself and delivers the frame once
        await up.call("stop", timeout=30)
        await until(lambda: not cli.client.is_connected(), what="our client noticed")
        m2 = make_message("sent while the 0.6.8 server was down", "c2")
        assert await cli.client.send_message(m2) is True
        await up.call("start", timeout=30)
        assert await cli.connects.get(what="reconnect") == uuid
        r = await up.call("wait_connections", n=1)
        assert r["ok"] and r["uuids"] == [uuid], r
        ev = await up.events.get(has_id("c2"), what="c2 resent after reconnect")
        assert ev["message"] == m2.to_dict()
        m3 = make_message("after restart", "c3")
        assert await cli.client.send_message(m3) is True
        await up.events.get(has_id("c3"))
        assert sum(1 for e in up.events.seen if has_id("c2")(e)) == 1
        s2 = make_message("back", "s2")
        assert (await up.call("send_message", message=s2.to_dict()))["result"] == {uuid: True}
        await cli.messages.get(has_id("s2"))
        await until(lambda: pending(cli.client) == 0, what="our outbox drained")
    finally:
        await cli.client.stop()


async def test_upstream_server_upstream_client(spawn: Spawn) -> None:
    """Reference cell: 0.6.8 against itself, showing the behaviour the other cells match."""
    port = free_port()
    srv = await spawn("api_server.py", {"port": port, "keys": KEYS}, "ref-server")
    await srv.ready()
    cli = await spawn("api_client.py", {"url": f"ws://127.0.0.1:{port}/ws", "api_key": KEY,
                                        "platform": PLATFORM, "reconnect_delay": 0.2},
                      "ref-client")
    await cli.ready()
    r = await cli.call("connect")
    assert r["connected"] is True
    uuid = r["uuid"]
    assert (await srv.call("wait_connections", n=1))["uuids"] == [uuid]

    m1 = make_message("c->s", "c1")
    assert (await cli.call("send_message", message=m1.to_dict()))["ok"] is True
    ev = await srv.events.get(has_id("c1"))
    assert ev["message"] == m1.to_dict() and ev["metadata"]["uuid"] == uuid
    s1 = make_message("s->c", "s1")
    assert (await srv.call("send_message", message=s1.to_dict()))["result"] == {uuid: True}
    ev = await cli.events.get(has_id("s1"))
    assert ev["message"] == s1.to_dict() and ev["meta"]["target_user"] == USER

    assert (await cli.call("send_custom", type="ping", payload={"a": 1}))["ok"] is True
    ev = await srv.events.get(lambda e: e["event"] == "custom")
    assert ev["envelope"]["type"] == "custom_ping"
    # 0.6.8 server sends "note" verbatim and a 0.6.8 client drops it; "custom_note" works.
    for wire_type, payload in (("note", {"x": "verbatim"}), ("custom_note", {"x": 1})):
        r = await srv.call("send_custom", type=wire_type, payload=payload, connection_uuid=uuid)
        assert r["result"] == {uuid: True}
    await cli.events.get(is_custom({"x": 1}))
    s2 = make_message("fence", "s2")  # frames are handled in order: after this, no "note"
    await srv.call("send_message", message=s2.to_dict())
    await cli.events.get(has_id("s2"))
    assert not any(is_custom({"x": "verbatim"})(e) for e in cli.events.seen)

    await srv.call("restart", timeout=30)
    assert (await srv.call("wait_connections", n=1))["uuids"] == [uuid]
    assert (await cli.call("send_message", message=make_message("again", "c2").to_dict()))[
        "ok"] is True
    await srv.events.get(has_id("c2"))


async def test_upstream_server_refuses_our_client(spawn: Spawn) -> None:
    """0.6.8 upgrades first and closes 1000 'Authentication failed: ...' afterwards.

    Our connect() cannot know better than True at the handshake, but the client must then
    report the refusal and stop, not reconnect forever (upstream defect §12.17).
    """
    port = free_port()
    up = await spawn("api_server.py", {"port": port, "keys": KEYS}, "server-refusing")
    await up.ready()
    disconnects = Inbox("our client on_disconnect")
    cli = OurClient(f"ws://127.0.0.1:{port}/ws", api_key="key-wrong")
    cli.client.config.on_disconnect = lambda uuid, error: disconnects.put(error)
    try:
        assert await cli.client.connect() is True  # HTTP 101: 0.6.8 decides after upgrading
        error = await disconnects.get(what="disconnect after the refusal")
        assert error and "Authentication failed" in error, error
        assert "Authentication failed" in (cli.client.get_last_error() or "")
        assert not cli.client.is_connected()
        attempts = cli.client.get_stats()["connect_attempts"]
        # No reconnect loop: with reconnect_delay=0.1 a retry would open within ~0.2 s, so
        # one more on_connect inside a 1.5 s window would mean we are still retrying.
        await cli.connects.get(what="first connect")
        with pytest.raises(AssertionError):
            await cli.connects.get(timeout=1.5, what="a reconnect (must not happen)")
        assert cli.client.get_stats()["connect_attempts"] == attempts
        assert (await up.call("connections"))["uuids"] == []
        assert not cli.messages.seen
    finally:
        await cli.client.stop()
