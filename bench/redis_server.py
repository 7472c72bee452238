"""A throwaway redis-server for the micro benchmarks: started on a free 127.0.0.1 port,
waited for, killed by PID on the way out."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from contextlib import asynccontextmanager
from typing import AsyncIterator

from redis.asyncio import Redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def redis_server(*extra: str) -> AsyncIterator[Redis]:
    """A client (RESP2) of a fresh redis-server started with ``extra`` arguments."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", *extra], stdout=subprocess.DEVNULL)
    redis = Redis.from_url(f"redis://127.0.0.1:{port}/0", protocol=2)
    try:
        for _ in range(100):
            try:
                await redis.ping()
                break
            except Exception:  # still starting
                await asyncio.sleep(0.05)
        yield redis
    finally:
        await redis.aclose()
        proc.kill()
        proc.wait(10)
