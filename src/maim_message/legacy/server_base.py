"""What every legacy server transport shares: the peer table, token store, send and
broadcast (JSON encoded once per call, whatever the number of destinations)."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Generic, List, Optional, Set

from . import jsoncodec
from .logsupport import Log
from .registry import P, PlatformTable, TokenAuth

__all__ = ["CLOSE_REPLACED", "CLOSE_SHUTDOWN", "ServerTransport"]

#: close reasons of 0.6.8 (kept verbatim: peers may log or match them)
CLOSE_REPLACED = "新的连接已建立"
CLOSE_SHUTDOWN = "服务器关闭"

Deliver = Callable[[Any], None]


class ServerTransport(Generic[P]):
    """Base of the ws, ASGI and tcp server transports (``MessageServer.connection``)."""

    def __init__(self, deliver: Deliver, auth: TokenAuth, log: Log) -> None:
        self._deliver = deliver
        self.auth = auth
        self._log = log
        self.table: PlatformTable[P] = PlatformTable()
        self._running = False
        self._aux_tasks: Set[asyncio.Future[Any]] = set()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._aux_tasks.add(task)
        task.add_done_callback(self._aux_tasks.discard)

    # 0.6.8 names, kept for code that reached into ``server.connection``
    @property
    def enable_token(self) -> bool:
        return self.auth.enabled

    @property
    def valid_tokens(self) -> set[str]:
        return self.auth.valid_tokens

    async def verify_token(self, token: Optional[str]) -> bool:
        return self.auth.verify(token)

    def add_valid_token(self, token: str) -> None:
        self.auth.add(token)

    def remove_valid_token(self, token: str) -> None:
        self.auth.remove(token)

    def connected_platforms(self) -> List[str]:
        """Platforms that currently have a routable connection."""
        return self.table.platforms()

    # -- sending -----------------------------------------------------------------------
    async def send_message(self, target: str, message: Any) -> bool:
        peer = self.table.get(target)
        if peer is None:
            self._log.warning("no connection for platform %r", target)
            return False
        if not peer.is_open:
            self.table.remove(peer)
            self._log.warning("connection of platform %r is closed", target)
            return False
        data = jsoncodec.dumps_bytes(message)
        try:
            await peer.send_json(data)
            return True
        except Exception as exc:
            self._log.warning("sending to platform %r failed: %r", target, exc)
            self.table.remove(peer)
            return False

    async def broadcast_message(self, message: Any) -> None:
        peers = [p for p in self.table.peers() if p.is_open]
        if not peers:
            return
        data = jsoncodec.dumps_bytes(message)
        results = await asyncio.gather(*(p.send_json(data) for p in peers), return_exceptions=True)
        for peer, result in zip(peers, results):
            if isinstance(result, BaseException):
                self._log.warning("broadcast to platform %r failed: %r", peer.platform, result)
                self.table.remove(peer)

    # -- connection management -----------------------------------------------------------
    async def disconnect(self, platform: str, code: int = 1000, reason: str = "") -> bool:
        """Close the connection of ``platform`` (the client will reconnect)."""
        peer = self.table.get(platform)
        if peer is None:
            return False
        self.table.remove(peer)
        await peer.close(code, reason)
        return True

    async def _close_all(self, code: int, reason: str) -> None:
        peers = self.table.peers()
        self.table.clear()
        waits: List[Awaitable[Any]] = [p.close(code, reason) for p in peers]
        waits.extend(self._aux_tasks)
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)
