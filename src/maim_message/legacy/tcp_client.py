"""Legacy TCP client transport (``tcp://`` / ``tcps://`` URLs) around
:class:`~.tcp_protocol.TcpClientProtocol`.

Each connection gets a fresh key pair and a sequence counter starting at 0 (0.6.8 kept one
of each for the client's lifetime; its servers do not care). A heartbeat frame goes out
every ``heartbeat_interval`` s. After a drop the loop reconnects and keeps reading (0.6.8
stopped reading after its single reconnect). ``tcps://`` is plain TCP plus the built-in
encryption, exactly as in 0.6.8.
"""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional
from urllib.parse import urlsplit

from .logsupport import Log, encoded_or_logged
from .reconnect import Deliver, ReconnectingTransport
from .tcp_protocol import (
    HEARTBEAT_FRAME,
    Dropped,
    Established,
    Event,
    Fatal,
    Outgoing,
    Received,
    TcpClientProtocol,
)

__all__ = ["DEFAULT_TCP_PORT", "TCPClientConnection", "TcpClientTransport", "parse_tcp_url"]

DEFAULT_TCP_PORT = 18000
_READ_CHUNK = 256 * 1024


def parse_tcp_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or DEFAULT_TCP_PORT


class _TcpSession:
    __slots__ = ("lock", "pending", "protocol", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 protocol: TcpClientProtocol) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = protocol
        self.lock = asyncio.Lock()
        self.pending: List[Event] = []


class TcpClientTransport(ReconnectingTransport[_TcpSession]):
    def __init__(self, deliver: Deliver, log: Log, *, url: str, platform: str,
                 token: Optional[str] = None) -> None:
        super().__init__(deliver, log)
        self.url = url
        self.host, self.port = parse_tcp_url(url)
        self.platform = platform
        self.token = token
        self.heartbeat_interval = 15.0
        self.connect_timeout = 10.0

    def set_target(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def _open(self) -> _TcpSession:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.connect_timeout
        )
        try:
            session = _TcpSession(reader, writer, TcpClientProtocol(self.platform, self.token))
            await asyncio.wait_for(self._handshake(session), self.connect_timeout)
        except BaseException:
            writer.close()
            raise
        self._log.info("connected to tcp://%s:%s as platform %r", self.host, self.port,
                       self.platform)
        return session

    async def _handshake(self, session: _TcpSession) -> None:
        writer = session.writer
        writer.write(session.protocol.start())
        await writer.drain()
        while True:
            data = await session.reader.read(_READ_CHUNK)
            if not data:
                raise ConnectionError("server closed the connection during the handshake")
            events = session.protocol.receive_data(data)
            for i, event in enumerate(events):
                if isinstance(event, Outgoing):
                    writer.write(event.data)
                elif isinstance(event, Fatal):
                    raise ConnectionError(f"handshake failed: {event.reason}")
                elif isinstance(event, Established):
                    session.pending = events[i + 1 :]
                    await writer.drain()
                    return

    def _session_open(self, session: _TcpSession) -> bool:
        return not session.writer.is_closing()

    async def _serve(self, session: _TcpSession) -> None:
        heartbeat = asyncio.ensure_future(self._heartbeat(session))
        try:
            if self._handle(session.pending):
                return
            session.pending = []
            reader = session.reader
            while True:
                data = await reader.read(_READ_CHUNK)
                if not data:
                    self._log.info("server closed the connection")
                    return
                if self._handle(session.protocol.receive_data(data)):
                    return
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)

    def _handle(self, events: List[Event]) -> bool:
        deliver = self._deliver
        for event in events:
            if isinstance(event, Received):
                deliver(event.value)
            elif isinstance(event, Dropped):
                self._log.warning("frame from server dropped (%s)", event.reason)
            elif isinstance(event, Fatal):
                self._log.warning("closing connection: %s", event.reason)
                return True
        return False

    async def _heartbeat(self, session: _TcpSession) -> None:
        try:
            while True:
                await asyncio.sleep(self.heartbeat_interval)
                async with session.lock:
                    session.writer.write(HEARTBEAT_FRAME)
                    await session.writer.drain()
        except (ConnectionError, OSError) as exc:
            self._log.info("heartbeat failed (%r); closing the connection", exc)
            session.writer.close()

    async def _close_session(self, session: _TcpSession) -> None:
        session.writer.close()
        try:
            await session.writer.wait_closed()
        except Exception:
            pass

    async def send(self, message: Any) -> bool:
        session = self._session
        if session is None or session.writer.is_closing():
            self._log.warning("not connected; message not sent")
            return False
        data = encoded_or_logged(message, self._log)
        if data is None:
            return False
        try:
            async with session.lock:
                session.writer.write(session.protocol.encrypt_bytes(data))
                await session.writer.drain()
            return True
        except (ConnectionError, OSError) as exc:
            self._log.warning("sending failed: %r", exc)
            return False


#: 0.6.8 module-level name (``maim_message.tcp_connection.TCPClientConnection``)
TCPClientConnection = TcpClientTransport
