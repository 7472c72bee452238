"""asyncio shell around :mod:`.wsproto`: a WebSocket server driven by ``asyncio.Protocol``.

Per connection there is no task and no queue: bytes arrive in ``data_received``, frames
go straight to the app, and everything the app writes while handling one read is sent in
one ``write`` call. Keepalive is one sweep for all connections, not one timer each.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import time
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Set, Tuple, cast

from ..core.defaults import DEFAULT_LIMITS
from ..core.limits import (
    BAD_HANDSHAKE,
    HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT,
    MESSAGE_SIZE,
    REQUEST_HEAD,
    WRITE_BUFFER,
    LimitCounters,
    reason_for_close_code,
)
from .base import Accept, HandshakeInfo, HttpReply, ServerApp
from .wsproto import (
    MAX_REQUEST_BODY,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    HandshakeError,
    HttpRequest,
    ProtocolViolation,
    encode_close,
    encode_frame,
    frame_header,
    http_response,
    parse_close,
    parse_http_request,
    switching_protocols,
)

_apply_mask: Optional[Callable[[bytes, bytes], bytes]]
try:  # the C helper of the websockets package, when installed
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover
    _apply_mask = None

logger = logging.getLogger(__name__)

_CONNECTING, _DECIDING, _OPEN, _CLOSING, _CLOSED = range(5)

# Frames handled per turn of the event loop. The handler tasks of one slice run before the
# next slice is handled, so per-message objects die young (cheap garbage collection) and
# one flooding connection cannot hold the loop for a whole 256 KiB read.
_SLICE = 16
_BACKLOG_PAUSE = 4096  # parsed frames waiting -> stop reading that socket until drained


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
    ) -> None:
        self.max_request_body = max_request_body
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


class WSConnection(asyncio.Protocol):
    """One TCP connection: HTTP request head, then WebSocket frames."""

    __slots__ = (
        "_backlog", "_batch", "_buf", "_close_timer", "_cork", "_cork_bytes", "_deciding",
        "_head_only", "_parser", "_reading_paused", "_request", "_server", "_state",
        "_transport", "client_ip", "close_code", "close_reason", "context", "last_data",
        "last_rx", "opened", "paused_since", "ping_sent_at",
    )

    def __init__(self, server: WebSocketServerTransport) -> None:
        self._server = server
        self._transport: Optional[asyncio.Transport] = None
        self._state = _CONNECTING
        self._buf: Optional[bytearray] = bytearray()
        self._parser: Optional[FrameParser] = None
        self._batch: Optional[List[bytes]] = None
        self._close_timer: Optional[asyncio.TimerHandle] = None
        self._deciding: Optional[asyncio.Task[Any]] = None
        self._request: Optional[Tuple[HttpRequest, int]] = None  # plain request, body pending
        self._head_only = False
        self.context: Any = None
        self.client_ip = "unknown"
        self.close_code = 1006
        self.close_reason = ""
        self.last_rx = 0.0
        self.ping_sent_at = 0.0
        self.opened = False
        self.paused_since = 0.0
        self._backlog: Deque[Tuple[int, bytes]] = deque()
        self._reading_paused = False
        self._cork: Optional[List[bytes]] = None  # frames written this turn, sent as one
        self._cork_bytes = 0
        self.last_data = 0.0  # last text/binary frame (idle timeout ignores pings)

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        high = self._server.options.send_buffer_high
        self._transport.set_write_buffer_limits(high=high, low=high // 4)
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = str(peer[0])
        self.last_rx = time.monotonic()
        self._server._opening(self)
        self._close_timer = asyncio.get_running_loop().call_later(
            self._server.options.handshake_timeout, self._handshake_timed_out
        )

    def data_received(self, data: bytes) -> None:
        if self._state == _OPEN or self._state == _CLOSING:
            self.last_rx = time.monotonic()
            self._frames_received(data)
        elif self._state == _CONNECTING:
            assert self._buf is not None
            self._buf += data
            self._try_handshake()
        elif self._state == _DECIDING:
            if self._buf is None:  # a plain request: nothing more is read from it
                return
            self._buf += data  # frames sent before our answer wait for the decision
            if len(self._buf) > self._server.options.max_message_size:
                self._server.options.limits.hit(MESSAGE_SIZE)
                self._abort()

    def eof_received(self) -> Optional[bool]:
        return None  # let the transport close

    def connection_lost(self, exc: Optional[Exception]) -> None:
        was_open = self.opened
        self._state = _CLOSED
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._deciding is not None and not self._deciding.done():
            self._deciding.cancel()
        self._server._closed(self)
        if was_open:
            try:
                self._server.app.connection_closed(self, self.close_code, self.close_reason)
            except Exception:
                logger.exception("connection_closed callback failed")

    def pause_writing(self) -> None:
        self.paused_since = time.monotonic()

    def resume_writing(self) -> None:
        self.paused_since = 0.0
        if self._state == _OPEN:
            try:
                self._server.app.connection_writable(self)
            except Exception:
                logger.exception("connection_writable callback failed")

    # -- handshake ------------------------------------------------------------------------

    def _try_handshake(self) -> None:
        assert self._buf is not None
        options = self._server.options
        try:
            if self._request is None:
                parsed = parse_http_request(self._buf, options.max_request_head)
                if parsed is None:
                    return
                request, used = parsed
                del self._buf[:used]
                body_length = 0
                if not request.is_websocket_upgrade:
                    body_length = request.body_length(options.max_request_body)
                self._request = (request, body_length)
            request, body_length = self._request
            if len(self._buf) < body_length:
                return  # the rest of the body is still on its way
            body = bytes(self._buf[:body_length])
            del self._buf[:body_length]
        except HandshakeError as exc:
            options.limits.hit(REQUEST_HEAD if exc.status in (413, 431) else BAD_HANDSHAKE)
            self._reply(HttpReply(exc.status, (exc.reason + "\n").encode()))
            return
        self._request = None
        from ..core.identity import split_path

        path, query = split_path(request.target)
        assert self._transport is not None
        info = HandshakeInfo(
            path=path, query=query, headers=request.lower, raw_headers=request.headers,
            client_ip=self.client_ip, is_upgrade=request.is_websocket_upgrade,
            peer_cert=self._transport.get_extra_info("peercert"),
            method=request.method, body=body,
        )
        accept_key: Optional[str] = None
        if info.is_upgrade:
            wanted = options.path
            if wanted is not None and path != wanted:
                self._reply(HttpReply(404, f"no WebSocket endpoint at {path}\n".encode()))
                return
            try:
                accept_key = request.websocket_accept_key()
            except HandshakeError as exc:
                options.limits.hit(BAD_HANDSHAKE)
                self._reply(HttpReply(exc.status, (exc.reason + "\n").encode()))
                return
        else:
            # The request is in: the handshake timeout covered receiving it, and the app
            # may take its time to answer (long polling). Nothing more is read.
            self._head_only = request.method == "HEAD"
            self._buf = None
            if self._close_timer is not None:
                self._close_timer.cancel()
                self._close_timer = None
        self._state = _DECIDING
        self._deciding = asyncio.ensure_future(self._decide(info, accept_key))

    async def _decide(self, info: HandshakeInfo, accept_key: Optional[str]) -> None:
        try:
            decision = await self._server.app.handshake(info)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("handshake callback failed")
            decision = HttpReply(500, b"internal error\n")
        finally:
            self._deciding = None
        if self._state != _DECIDING:
            return
        if isinstance(decision, HttpReply) or accept_key is None:
            if isinstance(decision, Accept):
                decision = HttpReply(426, b"this endpoint needs a WebSocket upgrade\n",
                                     headers=(("Upgrade", "websocket"),))
            self._reply(decision)
            return
        self.context = decision.context
        self._open(accept_key)

    def _reply(self, reply: HttpReply) -> None:
        assert self._transport is not None
        self._transport.write(http_response(
            reply.status, reply.body, reply.content_type, reply.headers,
            head_only=self._head_only,
        ))
        self._state = _CLOSING
        self._transport.close()

    def _open(self, accept_key: str) -> None:
        assert self._transport is not None and self._buf is not None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._transport.write(switching_protocols(accept_key))
        self._state = _OPEN
        self.opened = True
        self._parser = FrameParser(self._server.options.max_message_size, _apply_mask)
        leftover = bytes(self._buf)
        self._buf = None
        self.last_rx = self.last_data = time.monotonic()
        self._server._opened(self)
        try:
            self._server.app.connection_opened(self)
        except Exception:
            logger.exception("connection_opened callback failed")
            self.close(1011, "internal error")
            return
        if leftover:
            self._frames_received(leftover)

    def _handshake_timed_out(self) -> None:
        self._close_timer = None
        if self._state in (_CONNECTING, _DECIDING):
            logger.info("handshake timeout from %s", self.client_ip)
            self._server.options.limits.hit(HANDSHAKE_TIMEOUT)
            self._abort()

    # -- frames ---------------------------------------------------------------------------

    def _frames_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # after a protocol violation: ignore the rest until closed
            return
        try:
            events = parser.feed(data)
        except ProtocolViolation as exc:
            self._parser = None
            self._fail(exc.code, exc.reason)
            return
        if not events:
            return
        backlog = self._backlog
        if backlog:  # still working through an earlier read: keep the order
            backlog.extend(events)
            if len(backlog) > _BACKLOG_PAUSE and not self._reading_paused:
                self._reading_paused = True
                self._transport.pause_reading()  # type: ignore[union-attr]
            return
        if len(events) <= _SLICE:
            self._handle(events)
            return
        self._handle(events[:_SLICE])
        self._backlog = deque(events[_SLICE:])
        asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        """Handle the next slice of a big read after the previous slice's handlers ran."""
        backlog = self._backlog
        if self._state == _CLOSED or self._transport is None:
            backlog.clear()
            return
        take = min(_SLICE, len(backlog))
        self._handle([backlog.popleft() for _ in range(take)])
        if backlog:
            asyncio.get_running_loop().call_soon(self._drain)
        elif self._reading_paused:
            self._reading_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()

    def _handle(self, events: List[Tuple[int, bytes]]) -> None:
        app = self._server.app
        self._batch = batch = []
        try:
            for opcode, payload in events:
                if opcode == OP_TEXT:
                    if self._state == _OPEN:
                        self.last_data = self.last_rx
                        app.text_received(self, payload)
                elif opcode == OP_BINARY:
                    if self._state == _OPEN:
                        app.binary_received(self, payload)
                elif opcode == OP_PING:
                    batch.append(encode_frame(OP_PONG, payload))
                elif opcode == OP_PONG:
                    self.ping_sent_at = 0.0
                elif opcode == OP_CLOSE:
                    self._close_received(payload)
                    self._backlog.clear()
                    break
        finally:
            self._batch = None
            if batch and self._transport is not None and not self._transport.is_closing():
                if self._cork:
                    self._uncork()
                self._transport.write(b"".join(batch) if len(batch) > 1 else batch[0])
                self._check_buffer(self._transport)

    def _close_received(self, payload: bytes) -> None:
        try:
            code, reason = parse_close(payload)
        except ProtocolViolation as exc:
            self._fail(exc.code, exc.reason)
            return
        assert self._transport is not None
        if self._state == _OPEN:
            self.close_code, self.close_reason = code, reason
            echo = encode_close(code, reason) if code != 1005 else encode_frame(OP_CLOSE, b"")
            self._write_now(echo)
        self._state = _CLOSING
        self._transport.close()

    def _fail(self, code: int, reason: str) -> None:
        logger.info("closing connection from %s: %d %s", self.client_ip, code, reason)
        self._server.options.limits.hit(reason_for_close_code(code))
        self.close(code, reason)

    def _write_now(self, data: bytes) -> None:
        if self._cork:
            self._uncork()
        batch = self._batch
        if batch is not None:
            batch.append(data)
            self._transport.write(b"".join(batch))  # type: ignore[union-attr]
            batch.clear()
        else:
            self._transport.write(data)  # type: ignore[union-attr]

    def _abort(self) -> None:
        self._state = _CLOSING
        if self._transport is not None:
            self._transport.abort()

    # -- ServerConnection API -------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._state == _OPEN

    @property
    def is_writable(self) -> bool:
        """Open and below the send-buffer high-water mark (else: hold messages back)."""
        return self._state == _OPEN and not self.paused_since

    def send_text(self, payload: bytes) -> bool:
        if self._state != _OPEN:
            return False
        return self._send(frame_header(OP_TEXT, len(payload)) + payload)

    def send_raw(self, frame: bytes, body: bytes = b"") -> bool:
        """Queue a framed message; a big payload may come as header ``frame`` + ``body``
        so that it is never copied into one more buffer."""
        if self._state != _OPEN:
            return False
        return self._send(frame, body)

    def _send(self, frame: bytes, body: bytes = b"") -> bool:
        batch = self._batch
        if batch is not None:
            batch.append(frame)
            if body:
                batch.append(body)
            return True
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        if body:  # a big payload: no joining copy, write it as it is (after what is corked)
            if self._cork:
                self._uncork()
            transport.write(frame)
            # a memoryview: what the socket does not take at once is copied into the
            # transport's buffer once, instead of sliced (copy) and then appended (copy)
            transport.write(memoryview(body))
            self._check_buffer(transport)
            return True
        # Outside a read (handler tasks, broadcasts): the first frame of an event-loop turn
        # goes out at once (no added latency for a reply); later ones in the same turn are
        # corked and sent together when the turn ends (one system call per connection).
        cork = self._cork
        if cork is None:
            self._cork = []
            self._cork_bytes = 0
            asyncio.get_running_loop().call_soon(self._uncork)
            transport.write(frame)
            self._check_buffer(transport)
        else:
            cork.append(frame)
            self._cork_bytes += len(frame)
            if self._cork_bytes >= self._server.options.send_buffer_high:
                # write now, so that the transport's high-water mark (pause_writing, hence
                # is_writable) sees it and the outbox holds the rest back
                transport.write(b"".join(cork))
                cork.clear()
                self._cork_bytes = 0
                self._check_buffer(transport)
        return True

    def _uncork(self) -> None:
        cork, self._cork = self._cork, None
        transport = self._transport
        if not cork or transport is None or transport.is_closing():
            return
        transport.write(b"".join(cork) if len(cork) > 1 else cork[0])
        self._check_buffer(transport)

    def _check_buffer(self, transport: asyncio.Transport) -> None:
        if transport.get_write_buffer_size() > self._server.options.max_write_buffer:
            logger.warning("closing slow consumer %s: write buffer over limit", self.client_ip)
            self._server.options.limits.hit(WRITE_BUFFER)
            self.close(1008, "slow consumer: write buffer limit exceeded")

    def send_ping(self) -> None:
        if self._state == _OPEN:
            self.ping_sent_at = time.monotonic()
            self._send(encode_frame(OP_PING, b"ka"))

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self._state != _OPEN:
            if self._state in (_CONNECTING, _DECIDING):
                self._abort()
            return
        self.close_code, self.close_reason = code, reason
        self._write_now(encode_close(code, reason))
        self._state = _CLOSING
        self._close_timer = asyncio.get_running_loop().call_later(
            self._server.options.close_timeout, self._abort
        )

    def write_buffer_size(self) -> int:
        corked = self._cork_bytes if self._cork else 0
        return corked + (self._transport.get_write_buffer_size() if self._transport else 0)


class WebSocketServerTransport:
    """Listens on a socket and runs :class:`WSConnection` for every client."""

    def __init__(self, app: ServerApp, options: Optional[ServerOptions] = None) -> None:
        self.app = app
        self.options = options or ServerOptions()
        self._server: Optional[asyncio.AbstractServer] = None
        self._all: Set[WSConnection] = set()
        self._open: Set[WSConnection] = set()
        self._keepalive: Optional[asyncio.Task[None]] = None

    async def start(
        self, host: str, port: int, *, ssl: Optional[ssl_module.SSLContext] = None,
        reuse_port: bool = False, backlog: int = 2048,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: WSConnection(self), host=host, port=port, ssl=ssl,
            reuse_port=reuse_port or None, backlog=backlog,
        )
        if self.options.ping_interval or self.options.idle_timeout:
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
        period = min(interval, timeout, idle or interval) / 2
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            slow_limit = self.options.slow_consumer_timeout
            for conn in list(self._open):
                if not conn.is_open:
                    continue
                if conn.paused_since and now - conn.paused_since > slow_limit:
                    logger.warning("closing slow consumer %s: not reading for %.0f s",
                                   conn.client_ip, now - conn.paused_since)
                    self.options.limits.hit(WRITE_BUFFER)
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
