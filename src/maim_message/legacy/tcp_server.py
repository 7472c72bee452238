"""Legacy TCP server transport (``MessageServer(mode="tcp")``): asyncio streams around
:class:`~.tcp_protocol.TcpServerProtocol`.

Differences from 0.6.8 a peer can notice: replayed or reordered data frames are dropped
(sequence numbers must increase), oversized frames close the connection, a client that
does not finish handshake + registration within ``registration_timeout`` is closed.
"""

from __future__ import annotations

import asyncio
from typing import Optional

from .. import errors
from ..runtime.callbacks import HandlerTasks
from .logsupport import Log
from .platforms import Deliver, PlatformRouter, TokenAuth
from .tcp_protocol import Dropped, Fatal, Outgoing, Received, Registration, TcpServerProtocol

__all__ = ["TCPServerConnection", "TcpPeer", "TcpServerTransport"]

_READ_CHUNK = 256 * 1024


class TcpPeer:
    """A :class:`~.platforms.Peer` over an encrypted TCP stream."""

    __slots__ = ("_lock", "platform", "protocol", "writer")

    def __init__(self, writer: asyncio.StreamWriter, protocol: TcpServerProtocol,
                 platform: str) -> None:
        self.writer = writer
        self.protocol = protocol
        self.platform = platform
        self._lock = asyncio.Lock()

    @property
    def is_open(self) -> bool:
        return not self.writer.is_closing()

    def send_json(self, data: bytes) -> bool:
        # encryption assigns the sequence number: encrypt and write in one synchronous step
        if self.writer.is_closing():
            return False
        self.writer.write(self.protocol.encrypt_bytes(data))
        return True

    async def drained(self) -> None:
        try:
            async with self._lock:
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass  # the read loop sees the connection end

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.writer.close()


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except Exception:
        pass


class TcpServerTransport(PlatformRouter[TcpPeer]):
    """``MessageServer(mode="tcp")``: 0.6.8's encrypted TCP framing, platform routing
    shared with the WebSocket dialect."""

    def __init__(
        self,
        deliver: Deliver,
        auth: TokenAuth,
        log: Log,
        *,
        host: str,
        port: int,
        registration_timeout: float = 30.0,
    ) -> None:
        super().__init__(deliver, auth, log)
        self.host = host
        self.port = port
        self.registration_timeout = registration_timeout
        self._server: Optional[asyncio.Server] = None
        self._conn_tasks = HandlerTasks("legacy TCP server", log)  # one per connection

    async def start(self) -> None:
        if self._server is not None:
            return
        try:
            self._server = await asyncio.start_server(self._on_client, self.host, self.port)
        except OSError as exc:
            raise errors.ServerStartError(
                f"cannot listen on {self.host}:{self.port}: {exc}"
            ) from exc
        self._running = True
        self._log.info("legacy TCP server listening on %s:%s", self.host, self.bound_port)

    @property
    def bound_port(self) -> Optional[int]:
        if self._server is None:
            return None
        for sock in self._server.sockets:
            return int(sock.getsockname()[1])
        return None

    async def stop(self) -> None:
        self._running = False
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.close_all(1000, "")
        await self._conn_tasks.cancel_all(grace=0)
        if server is not None:
            await server.wait_closed()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.track(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass
        except Exception:
            self._log.exception("legacy TCP connection failed")
        finally:
            await _close_writer(writer)

    async def _register(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proto: TcpServerProtocol
    ) -> Optional[TcpPeer]:
        """Handshake and registration; ``None`` means close silently (as 0.6.8 does)."""
        while True:
            data = await reader.read(_READ_CHUNK)
            if not data:
                return None
            events = proto.receive_data(data)
            for i, event in enumerate(events):
                if isinstance(event, Outgoing):
                    writer.write(event.data)
                elif isinstance(event, Fatal):
                    self._log.warning("legacy TCP client rejected: %s", event.reason)
                    return None
                elif isinstance(event, Registration):
                    if not self.auth.verify(event.token):
                        self._log.warning("platform %r failed token verification", event.platform)
                        return None
                    peer = TcpPeer(writer, proto, event.platform)
                    self.attach(peer, close_displaced=False)  # as 0.6.8 does
                    # frames that arrived in the same read as the registration
                    if self._handle_events(events[i + 1 :], peer):
                        self.detach(peer)
                        return None
                    return peer
            await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proto = TcpServerProtocol()
        try:
            peer = await asyncio.wait_for(
                self._register(reader, writer, proto), self.registration_timeout
            )
        except asyncio.TimeoutError:
            self._log.warning("legacy TCP client did not register in time")
            return
        if peer is None:
            return
        self._log.info("legacy TCP client registered as platform %r", peer.platform)
        try:
            while True:
                data = await reader.read(_READ_CHUNK)
                if not data:
                    break
                if self._handle_events(proto.receive_data(data), peer):
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            self.detach(peer)
            self._log.info("legacy TCP connection of platform %r closed", peer.platform)

    def _handle_events(self, events: list, peer: TcpPeer) -> bool:
        """Act on protocol events; True when the connection must close."""
        deliver = self._deliver
        for event in events:
            if isinstance(event, Received):
                deliver(event.value)
            elif isinstance(event, Outgoing):
                peer.writer.write(event.data)
            elif isinstance(event, Dropped):
                self._log.warning("platform %r: frame dropped (%s)", peer.platform, event.reason)
            elif isinstance(event, Fatal):
                self._log.warning("platform %r: closing (%s)", peer.platform, event.reason)
                return True
        return False


#: 0.6.8 module-level name (``maim_message.tcp_connection.TCPServerConnection``)
TCPServerConnection = TcpServerTransport
