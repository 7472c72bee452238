"""The hub as a subprocess (``python -m maim_message serve``): clients, metrics, shutdown."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import orjson
import pytest
import trustme
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from maim_message.client import WebSocketClient, create_client_config

from .conftest import ROOT, free_port
from .helpers_api import Inbox, make_message, recv_until

START_TIMEOUT = 20.0
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


class HubProcess:
    """One hub subprocess; stopped (SIGTERM, then SIGKILL by PID) by the fixture."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.stdout_path = workdir / "hub.stdout"
        self.stderr_path = workdir / "hub.stderr"
        self.ssl: Optional[ssl.SSLContext] = None  # set for a TLS hub (wss://, https://)
        # Given to the hub as MAIM_HUB_ADMIN_TOKEN and sent by get(); None: the hub
        # generates one (read it from the start-up summary).
        self.admin_token: Optional[str] = ADMIN_TOKEN

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.ssl else 'ws'}://127.0.0.1:{self.port}/ws"

    async def start(
        self, config: Optional[str] = None, args: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
    ) -> HubProcess:
        argv = [sys.executable, "-m", "maim_message", "serve", "--port", str(self.port), *args]
        if config is not None:
            path = self.workdir / "hub.toml"
            path.write_text(textwrap.dedent(config), encoding="utf-8")
            argv += ["--config", str(path)]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MAIM_HUB_")}
        if self.admin_token is not None:
            full_env["MAIM_HUB_ADMIN_TOKEN"] = self.admin_token
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=str(ROOT),
                                         env=full_env)
        await self.wait_ready()
        return self

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll /healthz until it answers 200 (bounded); fail early if the process died."""
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"hub exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                status, _, _ = await http_get(self.port, "/healthz", 1.0, self.ssl)
                if status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"hub not healthy after {timeout}s:\n{self.logs()}")

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def logs(self) -> str:
        return f"--- stdout\n{self.stdout()}\n--- stderr\n{self.stderr()}"

    async def get(self, path: str, token: Optional[str] = "") -> Tuple[int, Dict[str, str], bytes]:
        """GET with the admin token (``token=None``: without one; a string: that one)."""
        return await self.request("GET", path, token=token)

    async def request(
        self, method: str, path: str, body: Optional[Any] = None, token: Optional[str] = "",
        headers: Optional[Dict[str, str]] = None,
    ) -> Tuple[int, Dict[str, str], bytes]:
        sent = dict(headers or {})
        token = self.admin_token if token == "" else token
        if token:
            sent["Authorization"] = f"Bearer {token}"
        data = b"" if body is None else orjson.dumps(body)
        return await http_get(self.port, path, ssl_context=self.ssl, method=method, body=data,
                              headers=sent)

    async def admin(self, path: str, body: Optional[Any] = None) -> Any:
        """An authenticated admin call (POST when ``body`` is given); its JSON answer."""
        status, _, data = await self.request("GET" if body is None else "POST", path, body)
        assert status == 200, (status, data)
        return orjson.loads(data)

    async def stats(self) -> Dict[str, Any]:
        status, _, body = await self.get("/api/stats")
        assert status == 200
        result: Dict[str, Any] = orjson.loads(body)
        return result

    async def metrics(self) -> Dict[str, float]:
        status, headers, body = await self.get("/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        return parse_metrics(body.decode())

    async def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait (bounded) for the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.proc.wait(timeout)  # type: ignore[union-attr]
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # this PID only: we started it
            self.proc.wait(10)


async def http_get(
    port: int, path: str, timeout: float = 5.0, ssl_context: Optional[ssl.SSLContext] = None,
    method: str = "GET", body: bytes = b"", headers: Optional[Dict[str, str]] = None,
) -> Tuple[int, Dict[str, str], bytes]:
    """One HTTP/1.1 request on 127.0.0.1; the hub answers and closes the connection."""

    async def run() -> Tuple[int, Dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_context)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        if body or method == "POST":
            extra += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        try:
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
                         "Connection: close\r\n\r\n".encode() + body)
            data = await reader.read()
        finally:
            writer.close()
        head, _, answer = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        got = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            got[name.strip().lower()] = value.strip()
        return status, got, answer

    return await asyncio.wait_for(run(), timeout)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)$")


def parse_metrics(text: str) -> Dict[str, float]:
    """Prometheus text -> {'name{labels}': value}."""
    out: Dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        match = _SAMPLE.match(line)
        assert match, f"unparsable metrics line: {line!r}"
        out[match.group(1)] = float(match.group(2))
    return out


@pytest.fixture
def hub_factory(tmp_path: Path) -> Any:
    started: List[HubProcess] = []

    def make(name: str = "hub") -> HubProcess:
        workdir = tmp_path / name
        workdir.mkdir()
        hub = HubProcess(workdir)
        started.append(hub)
        return hub

    yield make
    for hub in started:
        hub.kill()


def dumps(obj: Any) -> str:
    """JSON text (a str, so websockets sends a text frame)."""
    return orjson.dumps(obj).decode()


async def until(predicate: Any, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def close_code(ws: Any, timeout: float = 10.0) -> Optional[int]:
    """Read (and drop) frames until the server closes; the close code it sent."""
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
    rcvd = closed.value.rcvd
    return rcvd.code if rcvd is not None else None


async def expect_refusal(url: str, headers: Dict[str, str]) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, additional_headers=headers, open_timeout=5):
            pass
    return int(info.value.response.status_code)


CONFIG = """
    [hub]
    log_level = "DEBUG"
    status_interval = 0

    [limits]
    shutdown_grace = 2.0

    # A platform adapter: its messages go to the bot core, whatever its message_dim says.
    [[keys]]
    key = "adapter-secret-0123456789"
    user = "napcat"
    platforms = ["qq"]
    forward_to = "maibot"

    # The bot core: its replies go where their message_dim points (the adapter's key).
    [[keys]]
    key = "core-secret-9876543210"
    user = "maibot"

    [[keys]]
    key = "other-secret-555555555"
    user = "someone-else"
"""
ADAPTER_KEY = "adapter-secret-0123456789"
CORE_KEY = "core-secret-9876543210"
# The same adapter -> core relay without debug logging: the admin and CLI tool tests.
RELAY_CONFIG = f"""
    [hub]
    status_interval = 0

    [[keys]]
    key = "{ADAPTER_KEY}"
    user = "napcat"
    platforms = ["qq"]
    forward_to = "maibot"

    [[keys]]
    key = "{CORE_KEY}"
    user = "maibot"
"""
OTHER_KEY = "other-secret-555555555"
ALL_KEYS = (ADAPTER_KEY, CORE_KEY, OTHER_KEY)


def std(msg_id: str, text: str, key: str, platform: str) -> str:
    """A 0.6.8-style sys_std envelope as a raw client sends it."""
    return dumps({"ver": 1, "msg_id": msg_id, "type": "sys_std", "meta": {},
                  "payload": make_message(text, key, platform).to_dict()})


def ack(frame: Dict[str, Any]) -> str:
    return dumps({"ver": 1, "msg_id": "ack-" + frame["msg_id"], "type": "sys_ack",
                  "meta": {"acked_msg_id": frame["msg_id"]}, "payload": {"status": "received"}})


async def test_routes_between_clients_counts_metrics_and_exits_cleanly(hub_factory: Any) -> None:
    hub = await hub_factory().start(CONFIG)
    assert (await hub.get("/readyz"))[0] == 200
    before = await hub.metrics()
    assert before["maim_hub_messages_in_total"] == 0
    assert before["maim_hub_outbox_depth"] == 0 and before["maim_hub_acks_pending"] == 0

    # Refused handshakes, answered before the upgrade, counted by reason.
    assert await expect_refusal(hub.ws_url, {"x-platform": "qq"}) == 401
    assert await expect_refusal(hub.ws_url, {"x-apikey": "nope", "x-platform": "qq"}) == 403
    assert await expect_refusal(hub.ws_url, {"x-apikey": ADAPTER_KEY, "x-platform": "tg"}) == 403

    # Adapter: our WebSocketClient. Bot core and a third user: raw websockets clients.
    adapter_inbox = Inbox()
    adapter = WebSocketClient(create_client_config(
        hub.ws_url, ADAPTER_KEY, platform="qq", on_message=adapter_inbox))
    core = await websockets.connect(
        hub.ws_url + "?platform=qq", additional_headers={"x-apikey": CORE_KEY})
    other = await websockets.connect(
        hub.ws_url, additional_headers={"x-apikey": OTHER_KEY, "x-platform": "qq"})
    late: Any = None
    try:
        await adapter.start()
        assert await adapter.connect() is True
        await until(lambda: _connections(hub, 3), what="3 connections")

        # adapter -> core (forward_to), its message_dim untouched
        assert await adapter.send_message(make_message("hello core", ADAPTER_KEY, "qq"))
        frame = await recv_until(core, "sys_std")
        assert frame["payload"]["message_segment"]["data"] == "hello core"
        assert frame["payload"]["message_dim"] == {"api_key": ADAPTER_KEY, "platform": "qq"}
        assert frame["meta"]["target_user"] == "maibot" and frame["meta"]["platform"] == "qq"
        await core.send(ack(frame))

        # core -> adapter: the reply names the adapter's key in message_dim (0.6.8 style)
        await core.send(std("core-1", "hello adapter", ADAPTER_KEY, "qq"))
        assert (await recv_until(core, "sys_ack"))["meta"]["acked_msg_id"] == "core-1"
        message, meta = await adapter_inbox.next(10)
        assert message.message_segment.data == "hello adapter"
        assert meta["target_user"] == "napcat"

        # to a receiver that is not connected: kept in the outbox, delivered on connect
        await core.send(std("core-2", "for later", OTHER_KEY, "tg"))
        # naming no known key: refused (sys_error) and counted
        await core.send(std("core-3", "lost", "no-such-key", "qq"))
        refused = await recv_until(core, "sys_error")
        assert refused["meta"]["ref_msg_id"] == "core-3"
        # to a platform the adapter's key may not use: it could never be delivered
        await core.send(std("core-4", "never", ADAPTER_KEY, "discord"))
        refused = await recv_until(core, "sys_error")
        assert refused["meta"]["ref_msg_id"] == "core-4"
        assert refused["payload"]["field"] == "message_dim.platform"
        with pytest.raises(asyncio.TimeoutError):
            await recv_until(other, "sys_std", timeout=0.3)

        async def counted() -> bool:
            m = await hub.metrics()
            return bool(m["maim_hub_messages_in_total"] == 5
                        and m["maim_hub_messages_queued_total"] == 1
                        and m["maim_hub_messages_unroutable_total"] == 2
                        and m["maim_hub_outbox_depth"] == 1)

        await until(counted, what="metrics to count 5 messages, 1 queued, 2 unroutable")
        after = await hub.metrics()
        assert after["maim_hub_messages_out_total"] == 2
        assert after["maim_hub_outbox_bytes"] > 0 and after["maim_hub_acks_pending"] == 0
        assert after['maim_hub_connections{platform="qq"}'] == 3
        assert after["maim_hub_users"] == 3
        assert after["maim_hub_connections_accepted_total"] == 3
        assert after["maim_hub_handler_latency_seconds_count"] == 5
        assert after["maim_hub_handler_errors_total"] == 0  # a refusal is not an error
        assert after["maim_hub_frames_in_total"] > before["maim_hub_frames_in_total"]
        assert after["maim_hub_frames_out_total"] > before["maim_hub_frames_out_total"]
        assert after['maim_hub_handshakes_rejected_total{reason="missing_key"}'] == 1
        assert after['maim_hub_handshakes_rejected_total{reason="unknown_key"}'] == 1
        assert after['maim_hub_handshakes_rejected_total{reason="platform_not_allowed"}'] == 1
        assert after["maim_hub_ready"] == 1

        late = await websockets.connect(
            hub.ws_url, additional_headers={"x-apikey": OTHER_KEY, "x-platform": "tg"})
        frame = await recv_until(late, "sys_std")
        assert frame["payload"]["message_segment"]["data"] == "for later"
        await late.send(ack(frame))
        await until(lambda: _metric_is(hub, "maim_hub_outbox_depth", 0), what="outbox empty")

        stats = await hub.stats()
        assert stats["connections"] == 4 and stats["platforms"] == {"qq": 3, "tg": 1}
        assert {u["user"]: u["platforms"] for u in stats["by_user"]} == {
            "maibot": {"qq": 1}, "napcat": {"qq": 1}, "someone-else": {"qq": 1, "tg": 1}}
        # the held message counts out once it is written to the late connection
        assert stats["messages_in"] == 5 and stats["messages_out"] == 3

        # SIGTERM: exit 0, every client sees a clean close (1001 going away).
        rc = await hub.terminate()
        assert rc == 0, hub.logs()
        for ws in (core, other, late):
            assert await close_code(ws) == 1001
        await until(lambda: not adapter.is_connected(), what="adapter to notice the close")
    finally:
        await adapter.stop()
        for ws in (core, other, late):
            if ws is not None:
                await ws.close()

    logs = hub.logs()
    for key in ALL_KEYS:
        assert key not in logs, "an API key leaked into the hub's output"
    assert "key#" in logs  # fingerprints are what the logs show
    assert "hub stopped" in hub.stderr()


async def _metric_is(hub: HubProcess, name: str, value: float) -> bool:
    return (await hub.metrics())[name] == value


async def _connections(hub: HubProcess, count: int) -> bool:
    return bool((await hub.stats())["connections"] == count)


async def test_embedded_defaults_generate_a_key_printed_once(hub_factory: Any) -> None:
    hub = await hub_factory().start()
    out = hub.stdout()
    keys = re.findall(r"API key: (\S+)", out)
    assert len(keys) == 1, out
    key = keys[0]
    assert f"{hub.ws_url}?api_key={key}" in out  # how to use it
    assert key not in hub.stderr()
    # Two clients sharing the generated key and a platform reach each other (not themselves).
    async with websockets.connect(f"{hub.ws_url}?api_key={key}&platform=qq") as ws, \
            websockets.connect(hub.ws_url, additional_headers={"x-apikey": key,
                                                               "x-platform": "qq"}) as peer:
        await until(lambda: _connections(hub, 2), what="2 connections")
        await ws.send(std("x1", "hi", key, "qq"))
        assert (await recv_until(ws, "sys_ack"))["meta"]["acked_msg_id"] == "x1"
        frame = await recv_until(peer, "sys_std")
        assert frame["payload"]["message_segment"]["data"] == "hi"
        with pytest.raises(asyncio.TimeoutError):
            await recv_until(ws, "sys_std", timeout=0.3)
        stats = await hub.stats()
        assert stats["by_user"] == [{"user": "default", "platforms": {"qq": 2}}]
    assert await expect_refusal(hub.ws_url, {"x-apikey": key + "x"}) == 403
    status, headers, body = await hub.get("/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]  # no inline, no CDN
    assert b"http" not in body  # every resource comes from the hub itself
    assert b"/api/stats" in (await hub.get("/static/hub.js"))[2]
    assert (await hub.get("/nope"))[0] == 404
    assert await hub.terminate() == 0


async def test_environment_and_command_line_override_the_file(hub_factory: Any) -> None:
    hub = hub_factory()
    env_port = hub.port
    hub.port = free_port()  # the command line's --port must win over MAIM_HUB_PORT
    await hub.start(
        CONFIG, args=["--keys", "cli-key-1=cli-user"],
        env={"MAIM_HUB_PORT": str(env_port), "MAIM_HUB_KEYS": "env-key-1=env-user",
             "MAIM_HUB_PATH": "/hub", "MAIM_HUB_HTTP_DASHBOARD": "false"},
    )
    url = f"ws://127.0.0.1:{hub.port}/hub"
    async with websockets.connect(url, additional_headers={"x-apikey": "cli-key-1"}):
        assert (await hub.metrics())['maim_hub_connections{platform="unknown"}'] == 1
    assert await expect_refusal(url, {"x-apikey": "env-key-1"}) == 403
    assert await expect_refusal(url, {"x-apikey": CORE_KEY}) == 403
    assert (await hub.get("/api/stats"))[0] == 404  # dashboard off by env
    assert await hub.terminate() == 0


async def test_check_config_names_key_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[hub]\nport = 99999\n\n[[keys]]\nkey = "k"\nuser = ""\n'
                   '[outbox]\nbackend = "disk"\n', encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "maim_message", "serve", "--check-config", "--config", str(bad)],
        capture_output=True, text=True, timeout=60, cwd=str(ROOT),
        env={k: v for k, v in os.environ.items() if not k.startswith("MAIM_HUB_")},
    )
    assert out.returncode == 2
    assert f"{bad}:2: hub.port: must be between 0 and 65535 (got 99999)" in out.stderr
    assert f"{bad}:6: keys[0].user" in out.stderr
    assert f"{bad}:8: outbox.backend: must be one of memory, sqlite" in out.stderr
    good = tmp_path / "good.toml"
    good.write_text('[[keys]]\nkey = "secret-value-1"\nuser = "u"\nforward_to = "v"\n'
                    '[[keys]]\nkey = "secret-value-2"\nuser = "v"\n', encoding="utf-8")
    ok = subprocess.run(
        [sys.executable, "-m", "maim_message", "serve", "--check-config", "-c", str(good)],
        capture_output=True, text=True, timeout=60, cwd=str(ROOT),
    )
    assert ok.returncode == 0, ok.stderr
    assert "config OK" in ok.stdout and "secret-value-1" not in ok.stdout
    assert "-> user u (platforms: any, forward_to v;" in ok.stdout


async def test_port_in_use_fails_with_exit_1(hub_factory: Any) -> None:
    first = await hub_factory("a").start()
    proc = subprocess.run(
        [sys.executable, "-m", "maim_message", "serve", "--port", str(first.port)],
        capture_output=True, text=True, timeout=60, cwd=str(ROOT),
    )
    assert proc.returncode == 1
    assert "cannot start the hub" in proc.stderr and "cannot listen" in proc.stderr
    assert await first.terminate() == 0


UPSTREAM_CLIENT = r"""
import asyncio, json, os, sys, time
from maim_message.client import WebSocketClient, create_client_config
from maim_message.message import APIMessageBase, BaseMessageInfo, MessageDim, Seg

async def main(url, key):
    got = asyncio.Queue()
    async def on_message(message, metadata):
        await got.put(message.message_segment.data)
    client = WebSocketClient(create_client_config(url, key, platform="qq", on_message=on_message))
    await client.start()
    ok = await client.connect()
    msg = APIMessageBase(
        message_info=BaseMessageInfo(platform="qq", message_id="u1", time=time.time()),
        message_segment=Seg(type="text", data="from 0.6.8"),
        message_dim=MessageDim(api_key=key, platform="qq"))
    print(json.dumps({"connected": ok}), flush=True)
    sent = await client.send_message(msg)
    text = await asyncio.wait_for(got.get(), 15)
    print(json.dumps({"sent": sent, "received": text}), flush=True)
    await client.stop()
    os._exit(0)  # 0.6.8 can hang in asyncio.run's and the interpreter's shutdown

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_068_client_talks_through_the_hub(
    hub_factory: Any, upstream_python: str, tmp_path: Path
) -> None:
    hub = await hub_factory().start(CONFIG)
    script = tmp_path / "upstream_client.py"
    script.write_text(UPSTREAM_CLIENT, encoding="utf-8")
    # The receiver connects first: without an outbox, a message for nobody is dropped.
    core = await websockets.connect(
        hub.ws_url, additional_headers={"x-apikey": CORE_KEY, "x-platform": "qq"})
    proc = await asyncio.create_subprocess_exec(
        upstream_python, str(script), hub.ws_url, ADAPTER_KEY, cwd=str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    # Drain both pipes from the start: 0.6.8 logs a lot and would block on a full pipe.
    output = asyncio.ensure_future(proc.communicate())
    try:
        frame = await recv_until(core, "sys_std", timeout=30)
        assert frame["payload"]["message_segment"]["data"] == "from 0.6.8"
        reply = make_message("to 0.6.8", ADAPTER_KEY, "qq").to_dict()
        await core.send(dumps({"ver": 1, "msg_id": "r1", "type": "sys_std", "meta": {},
                                      "payload": reply}))
        stdout, stderr = await asyncio.wait_for(output, 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await core.close()
    lines = [orjson.loads(x) for x in stdout.decode().splitlines() if x.startswith("{")]
    assert {"connected": True} in lines, stderr.decode()[-2000:]
    assert {"sent": True, "received": "to 0.6.8"} in lines, stderr.decode()[-2000:]
    assert await hub.terminate() == 0


async def test_tls_hub_serves_wss_and_https(hub_factory: Any, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    crt, key = tmp_path / "hub.crt", tmp_path / "hub.key"
    cert.cert_chain_pems[0].write_to_path(str(crt))
    cert.private_key_pem.write_to_path(str(key))
    hub = hub_factory()
    hub.ssl = ssl.create_default_context()
    ca.configure_trust(hub.ssl)
    await hub.start(f"""
        [tls]
        certfile = "{crt}"
        keyfile = "{key}"

        [[keys]]
        key = "tls-key-0001"
        user = "u"
    """)
    assert hub.ws_url.startswith("wss://")
    async with websockets.connect(hub.ws_url, ssl=hub.ssl, additional_headers={
            "x-apikey": "tls-key-0001", "x-platform": "qq"}) as ws:
        await ws.send(std("t1", "over tls", "tls-key-0001", "qq"))
        assert (await recv_until(ws, "sys_ack"))["meta"]["acked_msg_id"] == "t1"
        assert (await hub.metrics())['maim_hub_connections{platform="qq"}'] == 1
    assert "wss://127.0.0.1" in hub.stdout()
    assert await hub.terminate() == 0
