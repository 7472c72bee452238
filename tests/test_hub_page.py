"""The hub's live page in a real headless Chromium, while clients send.

Chromium is driven with ``--dump-dom`` after a virtual-time budget (the page polls
``/api/stats`` once a second and writes raw numbers into ``data-value`` attributes).
``scripts/test`` installs Debian's ``chromium``; without it these tests skip, except in CI.
Set ``MAIM_HUB_SCREENSHOT=docs/hub.png`` to refresh the screenshot in the docs.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import orjson
import pytest
import websockets

from .conftest import ROOT
from .helpers_api import make_message
from .test_hub_process import ADMIN_TOKEN, HubProcess, dumps, hub_factory, until  # noqa: F401

CHROME_TIMEOUT = 90.0


def chromium_path() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium is not installed (scripts/test installs it)",
)


def chromium(args: List[str]) -> str:
    """Run headless Chromium once with its own profile; returns stdout."""
    assert CHROMIUM is not None, "chromium is required in CI (apt-get install -y chromium)"
    with tempfile.TemporaryDirectory(prefix="hub-chromium-") as profile:
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=CHROME_TIMEOUT,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def shown(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*data-value="([^"]*)"', dom)
    assert match, f"#{element_id} not found in the page:\n{dom[:3000]}"
    return match.group(1)


RATE = 20.0  # messages per second the sender keeps up

CONFIG = """
    [hub]
    status_interval = 0

    [[keys]]
    key = "adapter-key-for-page-test"
    user = "napcat"
    forward_to = "maibot"

    [[keys]]
    key = "core-key-for-page-test"
    user = "maibot"

    [[keys]]
    key = "tg-key-for-page-test"
    user = "astrbot"
"""


async def sender(url: str, key: str, stop: asyncio.Event) -> None:
    """Sends RATE messages/s on a fixed schedule (no drift) until ``stop``."""
    async with websockets.connect(url, additional_headers={"x-apikey": key,
                                                           "x-platform": "qq"}) as ws:
        reader = asyncio.ensure_future(_drain(ws))
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        try:
            while not stop.is_set():
                n += 1
                message = make_message(f"m{n}", key, "qq", message_id=str(n)).to_dict()
                await ws.send(dumps({"ver": 1, "msg_id": f"page-{n}", "type": "sys_std",
                                     "meta": {}, "payload": message}))
                await asyncio.sleep(max(0.0, start + n / RATE - loop.time()))
        finally:
            reader.cancel()


async def _drain(ws: Any) -> None:
    """Read everything, acking standard messages as a well-behaved client does."""
    async for raw in ws:
        frame = orjson.loads(raw)
        if frame.get("type") == "sys_std":
            await ws.send(dumps({"ver": 1, "msg_id": "a" + frame["msg_id"], "type": "sys_ack",
                                 "meta": {"acked_msg_id": frame["msg_id"]}, "payload": {}}))


async def test_live_page_shows_the_hubs_connections_and_rate(
    hub_factory: Any, tmp_path: Path,  # noqa: F811
) -> None:
    hub: HubProcess = await hub_factory().start(CONFIG)
    base = f"http://127.0.0.1:{hub.port}"
    stop = asyncio.Event()
    receivers = [
        await websockets.connect(hub.ws_url, additional_headers={
            "x-apikey": "core-key-for-page-test", "x-platform": "qq"}),
        await websockets.connect(hub.ws_url, additional_headers={
            "x-apikey": "tg-key-for-page-test", "x-platform": "telegram"}),
    ]
    drains = [asyncio.ensure_future(_drain(ws)) for ws in receivers]
    task = asyncio.ensure_future(sender(hub.ws_url, "adapter-key-for-page-test", stop))
    try:
        async def steady() -> bool:
            stats = await hub.stats()
            return bool(stats["connections"] == 3 and abs(stats["rate_in"] - RATE) < RATE * 0.2)

        await until(steady, timeout=20, what=f"hub rate_in near {RATE}/s")

        page = f"{base}/#token={ADMIN_TOKEN}"  # the link the start-up summary prints
        dom = await asyncio.to_thread(
            chromium, ["--virtual-time-budget=3000", "--dump-dom", page])
        stats: Dict[str, Any] = await hub.stats()
        assert 'data-state="ready"' in dom, dom[:2000]
        assert int(shown(dom, "connections")) == stats["connections"] == 3
        assert int(shown(dom, "users")) == stats["users"]
        rate_in, rate_out = float(shown(dom, "rate-in")), float(shown(dom, "rate-out"))
        # The page's numbers come from an /api/stats poll a moment before ours.
        assert abs(rate_in - stats["rate_in"]) <= max(2.0, 0.15 * RATE)
        assert abs(rate_in - RATE) <= 0.25 * RATE
        assert abs(rate_out - RATE) <= 0.25 * RATE  # each message reaches the one core
        # receivers ack as they read: only messages in flight are unacked
        assert int(shown(dom, "outbox-depth")) <= 5 and stats["outbox"]["depth"] <= 5
        assert "maibot" in dom and "napcat" in dom and "astrbot" in dom and "telegram" in dom
        assert int(shown(dom, "users")) == 3
        assert dom.count('class="danger disconnect"') == 3  # one row per connection
        assert re.search(r'<form id="login"[^>]*hidden', dom)  # the token worked
        # without the token the page asks for it and shows no user
        locked = await asyncio.to_thread(
            chromium, ["--virtual-time-budget=2000", "--dump-dom", base + "/"])
        assert 'data-state="login"' in locked and "maibot" not in locked

        png = tmp_path / "hub.png"
        await asyncio.to_thread(chromium, [
            "--window-size=1280,900", "--virtual-time-budget=6000",
            f"--screenshot={png}", page])
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
        target = os.environ.get("MAIM_HUB_SCREENSHOT")
        if target:
            shutil.copyfile(png, ROOT / target)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
        for drain in drains:
            drain.cancel()
        for ws in receivers:
            await ws.close()
    assert await hub.terminate() == 0



class DevTools:
    """A headless Chromium driven over the DevTools protocol (its WebSocket), so the test
    can click; the browser is a process we start and stop by its PID."""

    def __init__(self, proc: subprocess.Popen[bytes], ws: Any) -> None:
        self.proc = proc
        self.ws = ws
        self._next = 0

    @classmethod
    async def launch(cls, profile: str) -> DevTools:
        import urllib.request

        from .conftest import free_port

        assert CHROMIUM is not None, "chromium is required in CI (apt-get install -y chromium)"
        port = free_port()
        proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--remote-debugging-port={port}",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def targets() -> List[Dict[str, Any]]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                result: List[Dict[str, Any]] = orjson.loads(r.read())
                return result

        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                pages = [t for t in await asyncio.to_thread(targets) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if asyncio.get_running_loop().time() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError("chromium's DevTools endpoint did not come up")
            await asyncio.sleep(0.1)
        ws = await websockets.connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
        return cls(proc, ws)

    async def call(self, method: str, **params: Any) -> Dict[str, Any]:
        self._next += 1
        ident = self._next
        await self.ws.send(dumps({"id": ident, "method": method, "params": params}))
        while True:
            reply = orjson.loads(await asyncio.wait_for(self.ws.recv(), 20))
            if reply.get("id") == ident:
                assert "error" not in reply, reply
                result: Dict[str, Any] = reply["result"]
                return result

    async def js(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_js(self, expression: str, what: str, timeout: float = 20.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.js(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the page never showed {what}")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        await self.ws.close()
        self.proc.terminate()  # the PID we started
        try:
            await asyncio.to_thread(self.proc.wait, 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)


ROWS = "[...document.querySelectorAll('#connection-rows tr[data-uuid]')]"


async def test_disconnect_button_closes_the_connection_and_its_row_goes(
    hub_factory: Any, tmp_path: Path,  # noqa: F811
) -> None:
    from .test_hub_process import close_code

    hub: HubProcess = await hub_factory().start(CONFIG)
    core = await websockets.connect(hub.ws_url, additional_headers={
        "x-apikey": "core-key-for-page-test", "x-platform": "qq"})
    tg = await websockets.connect(hub.ws_url, additional_headers={
        "x-apikey": "tg-key-for-page-test", "x-platform": "telegram"})
    browser = await DevTools.launch(str(tmp_path / "profile"))
    try:
        await browser.call("Page.navigate", url=f"http://127.0.0.1:{hub.port}/#token={ADMIN_TOKEN}")
        await browser.wait_js(f"{ROWS}.length === 2", "two connection rows")
        assert await browser.js("location.hash") == ""  # the token left the address bar
        rows = await browser.js(f"{ROWS}.map(r => [r.dataset.uuid, r.children[0].textContent,"
                                " r.children[1].textContent])")
        uuid = next(u for u, user, platform in rows if user == "astrbot")
        assert {(user, platform) for _, user, platform in rows} == {
            ("maibot", "qq"), ("astrbot", "telegram")}
        await browser.js(f"document.querySelector('tr[data-uuid=\"{uuid}\"] "
                         "button.disconnect').click()")
        assert await close_code(tg) == 4001
        await browser.wait_js(f"{ROWS}.length === 1 && !{ROWS}.some(r => r.dataset.uuid === "
                              f"'{uuid}')", "the row gone")
        remaining = await hub.admin("/api/admin/connections")
        assert [r["user"] for r in remaining] == ["maibot"]
    finally:
        await browser.close()
        await core.close()
        await tg.close()
    assert await hub.terminate() == 0
