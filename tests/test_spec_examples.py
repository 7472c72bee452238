"""Every complete program and self-contained snippet of the spec, run verbatim.

The guide is read from ``../shared/seed/api_server_usage_guide.md`` beside the repository
(the module skips with a clear reason when it is absent). Each ```python block is copied
unchanged next to a vendored copy of the package (``astrbot/core/maibot/maim_message``,
as AstrBot ships it) and run as a subprocess. Port 18040 is fixed by the examples, so the
tests of this module run one at a time, each waiting for the port with a bounded poll.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from maim_message.client import WebSocketClient, WebSocketMultiClient, create_client_config
from maim_message.message import APIMessageBase, BaseMessageInfo, MessageDim, Seg
from maim_message.server import WebSocketServer, create_server_config

from .conftest import ROOT, vendor_package
from .helpers_api import Inbox

GUIDE = ROOT.parent / "shared" / "seed" / "api_server_usage_guide.md"
if not GUIDE.exists():
    pytest.skip(
        f"the usage guide is not at {GUIDE} (../shared/seed/ beside the repository)",
        allow_module_level=True,
    )
PORT = 18040


def python_blocks() -> List[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)


def program(marker: str) -> str:
    """The complete program (it calls ``asyncio.run``) containing ``marker``."""
    found = [b for b in python_blocks() if "asyncio.run(" in b and marker in b]
    assert len(found) == 1, f"expected one program with {marker!r}, found {len(found)}"
    return found[0]


def compiles(src: str) -> bool:
    try:
        compile(src, "<snippet>", "exec")
    except SyntaxError:
        return False
    return True


def snippets() -> List[str]:
    """Self-contained blocks: they import from the package, compile as a module and are not
    one of the complete programs."""
    return [b for b in python_blocks()
            if "from astrbot" in b and "asyncio.run(" not in b and compiles(b)]


def fragments() -> List[str]:
    """Blocks that use ``await`` / ``server`` / ``client`` at top level (parts of a program)."""
    out = []
    for b in python_blocks():
        src = textwrap.dedent(b)
        if "asyncio.run(" in src or "from astrbot" in src:
            continue
        if not compiles(src) and compiles("async def _f():\n" + textwrap.indent(src, "    ")):
            out.append(src)
    return out


class Proc:
    """A subprocess whose stdout+stderr are collected while it runs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out = ""
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            chunk = await self.proc.stdout.read(65536)
            if not chunk:
                return
            self.out += chunk.decode("utf-8", "replace")

    async def expect(self, *texts: str, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not all(t in self.out for t in texts):
            missing = [t for t in texts if t not in self.out]
            assert loop.time() < deadline, f"missing {missing!r} in output:\n{self.out}"
            assert self.proc.returncode is None or not self._reader.done(), (
                f"process ended (rc={self.proc.returncode}) without {missing!r}:\n{self.out}")
            await asyncio.sleep(0.02)

    async def wait(self, timeout: float) -> int:
        rc = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(self._reader, 5)
        return rc

    async def terminate(self) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, 15)  # by PID, the one process we started
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                os.kill(self.proc.pid, 9)
                await self.proc.wait()
        await asyncio.gather(self._reader, return_exceptions=True)


async def run_python(directory: Path, name: str, source: str) -> Proc:
    script = directory / name
    script.write_text(source, encoding="utf-8")
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(directory),
               PYTHONIOENCODING="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), cwd=str(directory), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    return Proc(proc)


async def port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("localhost", port), 1)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


async def wait_port(port: int, is_open: bool, timeout: float = 15.0) -> None:
    """Bounded poll of connect attempts until the port is (or is no longer) listening."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await port_open(port) != is_open:
        assert loop.time() < deadline, f"port {port} still {'closed' if is_open else 'open'}"
        await asyncio.sleep(0.05)


def message(text: str, api_key: str, platform: str, info_platform: Optional[str] = None,
            message_id: str = "t") -> APIMessageBase:
    return APIMessageBase(
        message_info=BaseMessageInfo(platform=info_platform or platform,
                                     message_id=message_id, time=time.time()),
        message_segment=Seg(type="text", data=text),
        message_dim=MessageDim(api_key=api_key, platform=platform),
    )


async def wait_for(cond: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# -- the server program ----------------------------------------------------------------------


async def test_server_example_runs_verbatim(tmp_path: Path) -> None:
    await wait_port(PORT, False)
    vendor_package(tmp_path)
    server = await run_python(tmp_path, "server_example.py", program("auth_handler"))
    try:
        await wait_port(PORT, True)
        await server.expect("🚀 WebSocket服务器已启动在 ws://localhost:18040/ws")
        inbox = Inbox()
        client = WebSocketClient(create_client_config(
            f"ws://localhost:{PORT}/ws", "test_key_123", platform="qq", on_message=inbox))
        try:
            assert await client.connect()
            await server.expect("✅ 认证成功: test_key_123")
            # the handler logs the message, then calls functions the example never defines:
            # the NameError is logged by the handler-task isolation and serving goes on
            assert await client.send_message(message("hello there", "test_key_123", "qq"))
            await server.expect("📨 收到消息 [qq] user_key: hello there", "NameError")
            assert await client.send_message(message("second one", "test_key_123", "qq"))
            await server.expect("📨 收到消息 [qq] user_key: second one")
            assert await client.send_custom_message("client_heartbeat", {"status": "active"})
            assert client.is_connected()
        finally:
            await client.stop()
        refused = WebSocketClient(create_client_config(
            f"ws://localhost:{PORT}/ws", "bad_key", max_reconnect_attempts=1,
            reconnect_delay=0.01))
        try:
            assert await refused.connect() is False
            assert "HTTP 403" in (refused.get_last_error() or "")
        finally:
            await refused.stop()
        await server.expect("❌ 认证失败: 无效的API Key - bad_key")
        # the handler's NameError was logged by the handler-task isolation, twice
        assert server.out.count("handler message_handler raised") == 2
    finally:
        await server.terminate()
    await wait_port(PORT, False)


# -- the two client programs, together, against a hub that behaves like the spec's server ------


def spec_user(api_key: str) -> str:
    if api_key.startswith("test_"):
        return f"user_{api_key.split('_')[1]}"
    if api_key.startswith("demo_"):
        return f"demo_user_{api_key.split('_')[2]}"
    return f"prod_user_{api_key.split('_')[2]}"


async def test_client_examples_run_verbatim(tmp_path: Path) -> None:
    await wait_port(PORT, False)
    vendor_package(tmp_path)
    inbox = Inbox()
    customs: List[Dict[str, Any]] = []
    hub = WebSocketServer(create_server_config(
        host="localhost", port=PORT, path="/ws",
        on_auth=lambda meta: meta["api_key"] in ("test_key_123", "demo_key_456", "prod_key_789"),
        on_auth_extract_user=lambda meta: spec_user(meta["api_key"]),
        on_message=inbox,
    ))
    for name in ("client_heartbeat", "system_notification", "platform_broadcast"):
        hub.register_custom_handler(name, lambda env, meta: customs.append(env))
    async with hub:
        single = await run_python(tmp_path, "single_client.py", program("single_client_demo"))
        multi = await run_python(tmp_path, "multi_client.py", program("multi_client_demo"))
        try:
            await single.expect("✅ 连接到服务器成功", "消息发送成功", "自定义消息发送成功",
                                "⏳ 等待服务器消息...")
            await multi.expect(
                "连接结果: {'wechat': True, 'qq': True, 'telegram': True}",
                "活跃连接: ['wechat', 'qq', 'telegram']", "微信消息发送成功", "QQ消息发送成功",
                "Telegram自定义消息发送成功", "平台广播消息发送成功", "⏳ 等待各平台服务器消息...")
            texts = set()
            while len(texts) < 3:
                texts.add((await inbox.next())[0].message_segment.data)
            assert texts == {"Hello from single client!", "发送到微信连接的消息",
                             "发送到QQ连接的消息"}
            await wait_for(lambda: len(customs) == 3)
            assert {c["type"] for c in customs} == {
                "custom_client_heartbeat", "custom_system_notification",
                "custom_platform_broadcast"}

            # server -> single client: on_message and the custom handler registered on config
            await hub.send_message(message("ping from server", "test_key_123", "test_platform"))
            await single.expect("📤 客户端收到消息 [test_platform] server: ping from server",
                                "🏓 收到ping，准备回复pong")
            await hub.send_custom_message(
                "server_notification", {"type": "maintenance", "content": "tonight"},
                target_user="user_key", target_platform="test_platform")
            await single.expect("🔔 服务器通知 [maintenance]: tonight", "⚠️ 服务器维护通知")
            # the handler calls an undefined function: its own except logs it, it goes on
            await hub.send_message(message("broadcast news", "test_key_123", "test_platform"))
            await single.expect("📢 收到广播消息: broadcast news", "❌ 服务器消息处理失败")
            await hub.send_message(message("just chatting", "test_key_123", "test_platform"))
            await single.expect("💬 普通消息处理: just chatting")

            # server -> multi client. The example defines multi_client_message_handler but
            # never passes it to WebSocketMultiClient(), so the default handler logs the
            # messages (with the connection name); the custom handler it registers runs.
            await hub.send_message(message("一张图片", "demo_key_456", "wechat"))
            await hub.send_message(message("[语音]", "test_key_123", "qq"))
            await hub.send_message(message("/start", "prod_key_789", "telegram"))
            await multi.expect("message on wechat: 一张图片", "message on qq: [语音]",
                               "message on telegram: /start")
            await hub.send_custom_message(
                "platform_broadcast", {"message": "系统维护通知", "target_platforms": ["qq"]},
                target_platform="wechat")
            await multi.expect("📢 收到平台广播: 系统维护通知", "🎯 目标平台: ['qq']",
                               "⚠️  平台维护广播")

            # both programs finish on their own (no hang at loop shutdown)
            assert await single.wait(20) == 0, single.out
            assert await multi.wait(20) == 0, multi.out
            assert "微信连接已断开" in multi.out
            await wait_for(lambda: hub.get_connection_count() == 0)
            assert "Traceback" not in single.out + multi.out
        finally:
            await single.terminate()
            await multi.terminate()
    await wait_port(PORT, False)


# -- self-contained snippets (config, TLS config, message format, production config) -------

SNIPPET_RUNNER = r'''
import json, sys, traceback
blocks = json.loads(open(sys.argv[1], encoding="utf-8").read())
prelude = blocks["prelude"]
results = []
for src in blocks["snippets"]:
    ns = {"__name__": "snippet"}
    try:
        exec(compile(prelude, "<prelude>", "exec"), ns)
        exec(compile(src, "<snippet>", "exec"), ns)
        facts = {}
        for name in ("config", "default_config", "message"):
            value = ns.get(name)
            if value is not None:
                facts[name] = type(value).__name__
                for attr in ("url", "port", "ssl_enabled", "ssl_verify", "platform",
                             "enable_message_log", "ssl_check_hostname"):
                    if hasattr(value, attr):
                        facts[name + "." + attr] = getattr(value, attr)
                if hasattr(value, "to_dict") and name == "message":
                    facts["roundtrip"] = type(value).from_dict(value.to_dict()) == value
        results.append({"ok": True, "facts": facts})
    except BaseException:
        results.append({"ok": False, "error": traceback.format_exc()})
print("RESULTS" + json.dumps(results))
'''


async def test_self_contained_snippets_run_verbatim(tmp_path: Path) -> None:
    blocks = snippets()
    # the guide's own import section is the prelude (some TLS snippets use names it imports)
    prelude = "\n".join(b for b in blocks if b.lstrip().startswith("#") and "import" in b
                        and "config =" not in b)
    prelude = "import asyncio, logging, time\nfrom typing import Any, Dict\n" + prelude
    assert len(blocks) >= 8
    vendor_package(tmp_path)
    (tmp_path / "blocks.json").write_text(json.dumps({"prelude": prelude, "snippets": blocks}),
                                          encoding="utf-8")
    runner = await run_python(tmp_path, "runner.py",
                              SNIPPET_RUNNER.replace("sys.argv[1]", repr("blocks.json")))
    assert await runner.wait(60) == 0, runner.out
    results = json.loads(runner.out.split("RESULTS", 1)[1])
    failures = [(b[:80], r["error"]) for b, r in zip(blocks, results) if not r["ok"]]
    assert not failures, failures
    facts: Dict[str, Any] = {}
    for r in results:
        facts.update(r["facts"])
    by_block = {b.splitlines()[0]: r["facts"] for b, r in zip(blocks, results)}
    tls_server = next(f for first, f in by_block.items() if "create_ssl_server_config" in first)
    assert tls_server["config.ssl_enabled"] is True and tls_server["config.port"] == 18044
    tls_client = next(f for first, f in by_block.items() if "create_ssl_client_config" in first)
    assert tls_client["config.url"] == "wss://localhost:18044/ws"
    assert tls_client["config.ssl_enabled"] is True
    client_cfg = next(f for first, f in by_block.items() if "import ClientConfig" in first)
    assert client_cfg["default_config.url"] == "ws://localhost:18040/ws"
    assert client_cfg["config.platform"] == "your_platform"
    message_block = next(f for f in by_block.values() if "roundtrip" in f)
    assert message_block["roundtrip"] is True
    production = next(f for f in by_block.values()
                      if f.get("config.enable_message_log") is False)
    assert production["config.port"] == 18040


# -- fragments: the guide's top-level-await parts, run inside a coroutine ---------------------


async def test_fragments_run_against_a_live_hub() -> None:
    """``server.broadcast_message``, ``send_message(target_platform=)``,
    ``send_custom_message(target_user=, target_platform=)``, the multi-client connection
    management, user management and debugging snippets, each as written."""
    await wait_port(PORT, False)
    hub = WebSocketServer(create_server_config(
        host="localhost", port=PORT, on_auth=lambda meta: bool(meta["api_key"]),
        on_auth_extract_user=lambda meta: meta["api_key"]))
    frags = fragments()
    by_marker = {
        "broadcast": next(f for f in frags if "broadcast_message" in f),
        "send": next(f for f in frags if "target_platform=\"qq\"" in f),
        "custom": next(f for f in frags if "send_custom_message(\n" in f
                       and "target_user" in f),
        "multi_send": next(f for f in frags if "WebSocketMultiClient 消息发送" in f),
        "multi_manage": next(f for f in frags if "WebSocketMultiClient 连接管理" in f),
        "single_send": next(f for f in frags if "WebSocketClient 消息发送" in f),
    }
    plain = [b for b in python_blocks() if "get_user_count()" in b or "get_connections()" in b
             or "extract_user(api_key)" in b]
    async with hub:
        receivers = {}
        for key, platform in (("target_user_api_key", "wechat"), ("target_user_api_key", "qq"),
                              ("user_001", "wechat")):
            c = WebSocketClient(create_client_config(f"ws://localhost:{PORT}/ws", key,
                                                     platform=platform, on_message=Inbox()))
            assert await c.connect()
            receivers[(key, platform)] = c
        try:
            await wait_for(lambda: hub.get_connection_count() == 3)
            base = {"asyncio": asyncio, "time": time, "APIMessageBase": APIMessageBase,
                    "BaseMessageInfo": BaseMessageInfo, "Seg": Seg, "MessageDim": MessageDim,
                    "server": hub, "print": lambda *a, **k: None}
            for name in ("broadcast", "send", "custom"):
                ns = dict(base)
                await run_fragment(by_marker[name], ns)
                assert ns["results"], name
            ns = dict(base)
            await run_fragment(by_marker["send"], ns)
            assert len(ns["results"]) == 1  # target_platform="qq" reached the qq connection

            multi = WebSocketMultiClient()
            ns = dict(base, client=multi)
            await run_fragment(by_marker["multi_manage"], ns)
            assert ns["connect_results"] == {"wechat": True, "qq": True}
            assert ns["disconnect_results"] == {"wechat": True}
            assert list(ns["all_connections"]) == ["wechat", "qq"]
            assert ns["wechat_info"]["connected"] is True
            assert list(multi.list_connections()) == ["wechat"]  # "qq" was unregistered
            assert multi.get_active_connections() == {}
            assert await multi.connect() == {"wechat": True}
            msg = message("x", "target_user_api_key", "wechat")
            ns = dict(base, client=multi, message=msg)
            await run_fragment(by_marker["multi_send"], ns)
            assert ns["success"] is False  # the last send went to "qq", unregistered above
            assert multi.get_stats()["messages_sent"] == 1
            await multi.stop()

            single = receivers[("user_001", "wechat")]
            ns = dict(base, client=single, message=msg)
            await run_fragment(by_marker["single_send"], ns)
            assert ns["success"] is True

            for block in plain:
                ns = dict(base, api_key="user_001", message=msg)
                await run_fragment(textwrap.dedent(block), ns)
            assert hub.get_user_connections("user_001") == {
                "wechat": {receivers[("user_001", "wechat")].get_connection_uuid()}}
        finally:
            await asyncio.gather(*(c.stop() for c in receivers.values()))
    await wait_port(PORT, False)


async def run_fragment(src: str, ns: Dict[str, Any]) -> None:
    body = "async def __fragment__():\n" + textwrap.indent(src, "    ")
    names = sorted(set(re.findall(r"^(\w+)\s*=", src, re.M)))
    if names:
        body += "\n    __ns__.update({" + ", ".join(f"{n!r}: {n}" for n in names) + "})\n"
    ns["__ns__"] = ns
    exec(compile(body, "<fragment>", "exec"), ns)
    await asyncio.wait_for(ns["__fragment__"](), 15)


# -- our own docs: every complete program in docs/*.md runs and prints what it says ----------


def doc_programs() -> List[tuple]:
    out = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for block in re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
            if "asyncio.run(" in block:
                out.append((doc.name, block))
    return out


def expected_output(block: str) -> List[str]:
    """Comments after ``print(...)`` (inline, or comment lines right below it)."""
    expected: List[str] = []
    after_print = False
    for line in block.splitlines():
        stripped = line.strip()
        if "print(" in line and "#" in line.split("print(", 1)[1]:
            expected.append(line.rsplit("# ", 1)[1])
            after_print = True
        elif "print(" in line:
            after_print = True
        elif after_print and stripped.startswith("# "):
            expected.append(stripped[2:])
        else:
            after_print = False
    return [e.split("...")[0].strip().rstrip(",") for e in expected]


async def test_docs_programs_run(tmp_path: Path) -> None:
    programs = doc_programs()
    assert {name for name, _ in programs} >= {"clients.md", "routing.md", "tls.md", "asgi.md"}
    procs = [await run_python(tmp_path, f"doc_{i}.py", block)
             for i, (_, block) in enumerate(programs)]
    try:
        for (name, block), proc in zip(programs, procs):
            assert await proc.wait(30) == 0, f"{name}:\n{proc.out}"
            for text in expected_output(block):
                assert text in proc.out, f"{name}: {text!r} not in\n{proc.out}"
    finally:
        for proc in procs:
            await proc.terminate()
