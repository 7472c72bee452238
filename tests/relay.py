"""A TCP relay for fault injection: forwards bytes both ways and cuts connections at random."""

from __future__ import annotations

import asyncio
import random
from typing import Optional, Set


class CuttingRelay:
    """Listens on 127.0.0.1 and forwards to ``upstream_port``.

    While ``cutting`` is True, every relayed connection is aborted (both sides) after a
    random lifetime between ``min_life`` and ``max_life`` seconds.
    """

    def __init__(self, upstream_port: int, *, seed: int = 1, min_life: float = 0.05,
                 max_life: float = 0.4) -> None:
        self.upstream_port = upstream_port
        self.cutting = True
        self.cuts = 0
        self._rng = random.Random(seed)
        self._min, self._max = min_life, max_life
        self._server: Optional[asyncio.AbstractServer] = None
        self._tasks: Set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            self._tasks.discard(task)
            return
        life = self._rng.uniform(self._min, self._max)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        pumps = [asyncio.ensure_future(pump(reader, up_writer)),
                 asyncio.ensure_future(pump(up_reader, writer))]
        try:
            done, _ = await asyncio.wait(pumps, timeout=life if self.cutting else None)
            if not done and self.cutting:
                self.cuts += 1
            writer.transport.abort()
            up_writer.transport.abort()
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._tasks.discard(task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
