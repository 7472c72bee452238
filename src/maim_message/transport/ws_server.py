"""asyncio WebSocket server: listens, runs a :class:`.asyncio_connection.WSConnection`
per client, and one keepalive sweep for all of them (not one timer each).
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import time
from typing import Any, List, Optional, Set, cast

from ..core.defaults import DEFAULT_LIMITS
from ..core.limits import IDLE_TIMEOUT, WRITE_BUFFER, FirstSeen, LimitCounters
from .asyncio_connection import WSConnection
from .base import ServerApp, described
from .http11 import MAX_REQUEST_BODY
from .protocol import MAX_FRAGMENTS, PING_BURST, PING_RATE

__all__ = ["ServerOptions", "WSConnection", "WebSocketServerTransport"]

logger = logging.getLogger(__name__)

READ_BUFFER = 256 * 1024  # the most one read takes from a socket (asyncio's own default)


class ServerOptions:
    """Transport limits; the server config maps onto these."""

    def __init__(
        self, *, path: Optional[str] = None,
        max_message_size: int = DEFAULT_LIMITS.max_message_size,
        ping_interval: Optional[float] = DEFAULT_LIMITS.ping_interval,
        ping_timeout: Optional[float] = DEFAULT_LIMITS.ping_timeout,
        handshake_timeout: float = DEFAULT_LIMITS.handshake_timeout,
        close_timeout: float = DEFAULT_LIMITS.close_timeout,
        max_write_buffer: int = DEFAULT_LIMITS.max_write_buffer, max_request_head: int = 16384,
        send_buffer_high: int = DEFAULT_LIMITS.send_buffer_high,
        slow_consumer_timeout: float = DEFAULT_LIMITS.slow_consumer_timeout,
        idle_timeout: Optional[float] = DEFAULT_LIMITS.idle_timeout,
        limits: Optional[LimitCounters] = None, max_request_body: int = MAX_REQUEST_BODY,
        max_fragments: int = MAX_FRAGMENTS, ping_rate: float = PING_RATE,
        ping_burst: float = PING_BURST,
    ) -> None:
        self.max_request_body = max_request_body
        self.max_fragments = max_fragments
        self.ping_rate = ping_rate
        self.ping_burst = ping_burst
        self.idle_timeout = idle_timeout
        self.limits = limits if limits is not None else LimitCounters()
        self.send_buffer_high = send_buffer_high
        self.slow_consumer_timeout = slow_consumer_timeout
        self.path = path
        self.max_message_size = max_message_size
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        self.max_write_buffer = max_write_buffer
        self.max_request_head = max_request_head


class WebSocketServerTransport:
    """Listens on a socket and runs :class:`WSConnection` for every client."""

    def __init__(self, app: ServerApp, options: Optional[ServerOptions] = None) -> None:
        self.app = app
        self.options = options or ServerOptions()
        self._server: Optional[asyncio.AbstractServer] = None
        self._all: Set[WSConnection] = set()
        self._open: Set[WSConnection] = set()
        self._keepalive: Optional[asyncio.Task[None]] = None
        self._logged = FirstSeen()
        # Every connection reads into this (one read at a time per event loop; each
        # read is parsed before the next one starts): no buffer allocated per read.
        self.read_view = memoryview(bytearray(READ_BUFFER))

    def log_once(self, reason: str, who: str, fmt: str, *args: Any,
                 level: int = logging.INFO) -> None:
        """Log a transport limit at ``level`` the first time per reason and address, later
        at DEBUG: a peer that keeps hitting it cannot flood the log."""
        if self._logged.first((reason, who)):
            logger.log(level, fmt + " (repeats at DEBUG)", *args)
        else:
            logger.debug(fmt, *args)

    async def start(
        self, host: str, port: int, *, ssl: Optional[ssl_module.SSLContext] = None,
        reuse_port: bool = False, backlog: int = 2048,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: WSConnection(self), host=host, port=port, ssl=ssl,
            reuse_port=reuse_port or None, backlog=backlog,
        )
        # always: slow consumers are closed even when keepalive pings are off
        self._keepalive = asyncio.ensure_future(self._keepalive_loop())

    @property
    def sockets(self) -> List[Any]:
        server = cast(Any, self._server)
        return list(server.sockets) if server is not None else []

    @property
    def port(self) -> Optional[int]:
        socks = self.sockets
        return int(socks[0].getsockname()[1]) if socks else None

    @property
    def open_count(self) -> int:
        return len(self._open)

    def _opening(self, conn: WSConnection) -> None:
        self._all.add(conn)

    def _opened(self, conn: WSConnection) -> None:
        self._open.add(conn)

    def _closed(self, conn: WSConnection) -> None:
        self._all.discard(conn)
        self._open.discard(conn)

    async def _keepalive_loop(self) -> None:
        pinging = bool(self.options.ping_interval)
        interval = float(self.options.ping_interval or 20.0)
        timeout = float(self.options.ping_timeout or interval)
        idle = self.options.idle_timeout
        periods = [float(self.options.slow_consumer_timeout or interval)]
        if pinging:
            periods += [interval, timeout]
        if idle:
            periods.append(float(idle))
        period = max(0.01, min(periods) / 2)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            slow_limit = self.options.slow_consumer_timeout
            for conn in list(self._open):
                if not conn.is_open:
                    continue
                if conn.paused_since and slow_limit and now - conn.paused_since > slow_limit:
                    self.options.limits.hit(WRITE_BUFFER)
                    self.log_once(WRITE_BUFFER, conn.client_ip,
                                  "closing slow consumer %s: not reading for %.0f s",
                                  described(conn), now - conn.paused_since,
                                  level=logging.WARNING)
                    conn.close(1008, "slow consumer: not reading")
                elif idle and now - conn.last_data > idle:
                    logger.info("closing idle connection %s: no message for %.0f s",
                                conn.client_ip, now - conn.last_data)
                    self.options.limits.hit(IDLE_TIMEOUT)
                    conn.close(1001, f"idle timeout: no message for {idle:g} s")
                elif conn.ping_sent_at and now - conn.ping_sent_at > timeout:
                    conn.close(1011, "keepalive ping timeout")
                elif pinging and not conn.ping_sent_at and now - conn.last_rx > interval:
                    conn.send_ping()

    async def stop(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop accepting, close every connection with ``code``, wait for them to go."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            await asyncio.gather(self._keepalive, return_exceptions=True)
            self._keepalive = None
        if self._server is not None:
            self._server.close()
        for conn in list(self._all):
            conn.close(code, reason)
        deadline = time.monotonic() + self.options.close_timeout + 1.0
        while self._all and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self._all):
            conn._abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

