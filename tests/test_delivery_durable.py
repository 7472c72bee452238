"""Durable mode: a hub killed with SIGKILL mid-stream and restarted loses nothing accepted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

from maim_message.client import WebSocketClient, create_client_config

from .conftest import ROOT, free_port

SCRIPT = Path(__file__).parent / "scripts" / "durable_hub.py"


class HubProcess:
    def __init__(self, port: int, db: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(port), str(db)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=env)

    async def expect(self, line: str, timeout: float = 20) -> None:
        loop = asyncio.get_running_loop()
        assert self.proc.stdout is not None
        got = await asyncio.wait_for(loop.run_in_executor(None, self.proc.stdout.readline),
                                     timeout)
        assert got.strip() == line, got

    def command(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


async def test_sigkill_and_restart_lose_nothing(tmp_path: Path) -> None:
    port, db = free_port(), tmp_path / "outbox.sqlite"
    got: List[int] = []
    seen = asyncio.Event()
    total = 600

    def record(message: Any, meta: Dict[str, Any]) -> None:
        got.append(int(message.message_segment.data))
        if len(set(got)) >= total:
            seen.set()

    hub = HubProcess(port, db)
    client = None
    try:
        await hub.expect("READY")
        # 1) messages for a user who is offline, then the hub dies
        hub.command("send adapter 0 199")
        await hub.expect("SENT 199")
        hub.kill()
        hub = HubProcess(port, db)
        await hub.expect("READY")
        client = WebSocketClient(create_client_config(
            f"ws://127.0.0.1:{port}/ws", "adapter", platform="qq", on_message=record,
            reconnect_delay=0.05, max_reconnect_delay=0.2, max_reconnect_attempts=0))
        assert await client.connect()
        # 2) the hub dies again in the middle of a stream to a connected client
        hub.command("send adapter 200 399")
        await hub.expect("SENT 399")
        hub.kill()
        hub = HubProcess(port, db)
        await hub.expect("READY")
        hub.command("send adapter 400 599")
        await hub.expect("SENT 599")
        await asyncio.wait_for(seen.wait(), 30)
        assert sorted(set(got)) == list(range(total))
        assert len(got) == len(set(got)), "duplicates reached the handler"
        assert got == sorted(got), "order per pair was not kept"
    finally:
        if client is not None:
            await client.stop()
        hub.kill()
