"""One TCP connection of the asyncio server: moves bytes between a socket and a
:class:`.protocol.ServerProtocol`, and runs its timers. No WebSocket rule lives here.

Per connection there is no task and no queue: bytes arrive in ``data_received``, events go
straight to the app in slices of ``_SLICE``, and everything the app writes while handling
a slice goes out in one ``write`` (for a read of one frame, its first frame -- the ack --
goes out at once and the rest at the end: the peer's side wakes while the handler works).
Outside a read, the first frame of an event-loop turn is written at once and later ones
are corked until the turn ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, List, Optional, cast

from ..core.identity import split_path
from ..core.limits import (
    BAD_HANDSHAKE,
    HANDSHAKE_TIMEOUT,
    MESSAGE_SIZE,
    RATE,
    REQUEST_HEAD,
    WRITE_BUFFER,
    reason_for_close_code,
)
from .base import Accept, HandshakeInfo, HttpReply, described
from .frames import OP_BINARY, OP_PING, OP_PONG, OP_TEXT, Chunk, PreparedFrame, ReadData
from .http11 import HandshakeError
from .protocol import CLOSED, CLOSING, CONNECTING, EV_FAILURE, OPEN, Event, ServerProtocol
from .write_batch import OPEN as BATCHES

if TYPE_CHECKING:
    from .ws_server import WebSocketServerTransport

logger = logging.getLogger(__name__)

# Frames handled per turn of the event loop. The handler tasks of one slice run before the
# next slice is handled, so per-message objects die young (cheap garbage collection) and
# one flooding connection cannot hold the loop for a whole 256 KiB read.
_SLICE = 64
_BACKLOG_PAUSE = 4096
# While handling a read (``_handling``): writes wait for the end of the slice (_CORK), or
# the first one goes out at once (_FIRST_NOW, a read of one frame). On a machine whose idle
# cores sleep deeply (VMs), a peer woken by the ack is awake when the reply follows; a
# single write after the handler lands on a core that has been idle longer (S2a, different
# cores: p50 0.09-0.10 vs 0.115-0.12 ms, same CPU per round trip; docs/speed.md).
_CORK = 1
_FIRST_NOW = 2  # parsed frames waiting -> stop reading that socket until drained


class WSConnection(asyncio.BufferedProtocol):
    """The :class:`~.base.ServerConnection` of the asyncio shell.

    Reads land in the server's one read buffer (``get_buffer``), not in a new 256 KiB
    bytes object per read: the frame reader copies what it keeps, so a read costs no
    allocation of its own (a fresh 256 KiB block per read is an mmap, a page fault and an
    munmap once the heap has no such hole, e.g. while the outbox holds messages).
    """

    __slots__ = (
        "_backlog", "_batched", "_close_timer", "_deciding", "_eof_sent", "_handling", "_loop",
        "_on_text", "_proto", "_reading_paused",
        "_server", "_transport", "_turn_pending", "client_ip", "context", "last_data",
        "last_rx", "opened", "paused_since", "ping_sent_at",
    )

    def __init__(self, server: WebSocketServerTransport) -> None:
        options = server.options
        self._server = server
        self._proto = ServerProtocol(
            max_message_size=options.max_message_size, max_fragments=options.max_fragments,
            max_request_head=options.max_request_head,
            max_request_body=options.max_request_body,
            ping_rate=options.ping_rate, ping_burst=options.ping_burst,
        )
        self._transport: Optional[asyncio.Transport] = None
        # kept once connected: asyncio.get_running_loop() is a getpid() system call per use
        # on 3.11 (unit tests drive a connection without a loop)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._close_timer: Optional[asyncio.TimerHandle] = None
        self._deciding: Optional[asyncio.Task[Any]] = None
        self._handling = 0  # inside a read's slice: _CORK or _FIRST_NOW (above)
        self._eof_sent = False
        self._turn_pending = False  # a write went out this loop turn: cork the next ones
        self._batched = False  # written to inside an open write batch: flushed when it closes
        # frames of a big read waiting for the next slice; created when needed (an empty
        # deque is ~600 bytes, for every idle connection)
        self._backlog: Optional[Deque[Event]] = None
        self._reading_paused = False
        self._on_text: Any = None  # what a text message goes to (set when opened)
        self.context: Any = None
        self.client_ip = "unknown"
        self.last_rx = 0.0
        self.last_data = 0.0  # last text/binary frame (idle timeout ignores pings)
        self.ping_sent_at = 0.0
        self.opened = False
        self.paused_since = 0.0

    @property
    def close_code(self) -> int:
        return self._proto.close_code

    @property
    def close_reason(self) -> str:
        return self._proto.close_reason

    @property
    def protocol(self) -> ServerProtocol:
        return self._proto

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = cast(asyncio.Transport, transport)
        high = self._server.options.send_buffer_high
        self._transport.set_write_buffer_limits(high=high, low=high // 4)
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = str(peer[0])
        self.last_rx = time.monotonic()
        self._server._opening(self)
        self._close_timer = self._event_loop().call_later(
            self._server.options.handshake_timeout, self._handshake_timed_out
        )

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop or asyncio.get_running_loop()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._server.read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._server.read_view[:nbytes])

    def data_received(self, data: ReadData) -> None:
        """Bytes from the socket; ``data`` may be a view of the shared read buffer, valid
        only during this call (the frame reader copies what it keeps)."""
        proto = self._proto
        state = proto.state
        if state is OPEN or state is CLOSING:
            self.last_rx = time.monotonic()
            events = proto.receive_data(data)
            if events:
                self._events(events)
        elif state is CONNECTING:
            self._request_data(bytes(data))

    def eof_received(self) -> Optional[bool]:
        return None  # let the transport close

    def connection_lost(self, exc: Optional[Exception]) -> None:
        proto = self._proto
        proto.connection_lost()
        self._backlog = None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._deciding is not None and not self._deciding.done():
            self._deciding.cancel()
        self._server._closed(self)
        if self.opened:
            try:
                self._server.app.connection_closed(self, proto.close_code, proto.close_reason)
            except Exception:
                logger.exception("connection_closed callback failed")

    def pause_writing(self) -> None:
        self.paused_since = time.monotonic()

    def resume_writing(self) -> None:
        self.paused_since = 0.0
        if self._proto.state is OPEN:
            try:
                self._server.app.connection_writable(self)
            except Exception:
                logger.exception("connection_writable callback failed")

    # -- the HTTP request -----------------------------------------------------------------

    def _request_data(self, data: bytes) -> None:
        proto = self._proto
        options = self._server.options
        deciding = proto.request is not None
        try:
            events = proto.receive_data(data)
        except HandshakeError as exc:
            options.limits.hit(REQUEST_HEAD if exc.status in (413, 431) else BAD_HANDSHAKE)
            self._reply(HttpReply(exc.status, (exc.reason + "\n").encode()))
            return
        except ValueError as exc:  # a parse the checks missed: a 400, not a loop error
            logger.warning("unparsable request from %s: %s", self.client_ip, exc)
            options.limits.hit(BAD_HANDSHAKE)
            self._reply(HttpReply(400, b"bad request\n"))
            return
        if deciding:
            if proto.buffered > options.max_message_size:  # frames sent before our answer
                options.limits.hit(MESSAGE_SIZE)
                self._abort()
        elif events:
            self._request_received(events[0][1])

    def _request_received(self, body: bytes) -> None:
        proto = self._proto
        request = proto.request
        assert request is not None and self._transport is not None
        path, query = split_path(request.target)
        info = HandshakeInfo(
            path=path, query=query, headers=request.lower, raw_headers=request.headers,
            client_ip=self.client_ip, is_upgrade=request.is_websocket_upgrade,
            peer_cert=self._transport.get_extra_info("peercert"),
            method=request.method, body=body,
        )
        accept_key: Optional[str] = None
        if info.is_upgrade:
            wanted = self._server.options.path
            if wanted is not None and path != wanted:
                self._reply(HttpReply(404, f"no WebSocket endpoint at {path}\n".encode()))
                return
            try:
                accept_key = request.websocket_accept_key()
            except HandshakeError as exc:
                self._server.options.limits.hit(BAD_HANDSHAKE)
                self._reply(HttpReply(exc.status, (exc.reason + "\n").encode()))
                return
        elif self._close_timer is not None:
            # The request is in: the handshake timeout covered receiving it, and the app
            # may take its time to answer (long polling).
            self._close_timer.cancel()
            self._close_timer = None
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
        if self._proto.state is not CONNECTING:
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
        self._proto.reject(reply.status, reply.body, reply.content_type, reply.headers)
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def _open(self, accept_key: str) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        early = self._proto.accept(accept_key)
        self._flush()  # the 101 goes out before anything the app writes
        self.opened = True
        self.last_rx = self.last_data = time.monotonic()
        self._server._opened(self)
        app = self._server.app
        # An app may name the callable for this connection's text (one call less a frame)
        receiver = getattr(app, "text_receiver", None)
        self._on_text = receiver(self) if receiver is not None else app.text_received
        try:
            self._server.app.connection_opened(self)
        except Exception:
            logger.exception("connection_opened callback failed")
            self.close(1011, "internal error")
            return
        if early:
            self._events(early)

    def _handshake_timed_out(self) -> None:
        self._close_timer = None
        if self._proto.state is CONNECTING:
            logger.info("handshake timeout from %s", self.client_ip)
            self._server.options.limits.hit(HANDSHAKE_TIMEOUT)
            self._abort()

    # -- frames ---------------------------------------------------------------------------

    def _events(self, events: List[Event]) -> None:
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
        if self._proto.state is OPEN or self._proto.state is CLOSING:
            self._backlog = deque(events[_SLICE:])
            self._event_loop().call_soon(self._drain)

    def _drain(self) -> None:
        """Handle the next slice of a big read after the previous slice's handlers ran."""
        backlog = self._backlog
        if backlog is None or self._proto.state is CLOSED or self._transport is None:
            self._backlog = None
            return
        take = min(_SLICE, len(backlog))
        self._handle([backlog.popleft() for _ in range(take)])
        if backlog:
            self._event_loop().call_soon(self._drain)
            return
        if self._backlog is backlog:
            self._backlog = None  # drained: an idle connection keeps no deque
        if self._reading_paused:
            self._reading_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()

    def _handle(self, events: List[Event]) -> None:
        app = self._server.app
        on_text = self._on_text
        proto = self._proto
        self._handling = _FIRST_NOW if len(events) == 1 else _CORK
        try:
            for kind, payload in events:
                if kind == OP_TEXT:
                    if proto.state is OPEN:
                        self.last_data = self.last_rx
                        on_text(self, payload)
                elif kind == OP_BINARY:
                    if proto.state is OPEN:
                        app.binary_received(self, payload)
                elif kind == OP_PING:
                    proto.apply(kind, payload)
                elif kind == OP_PONG:
                    self.ping_sent_at = 0.0
                else:  # the peer's close, or a violation: the last event of the stream
                    if kind == EV_FAILURE:
                        self._failure_seen(payload)
                    proto.apply(kind, payload)
                    if self._backlog is not None:
                        self._backlog.clear()  # (a _drain in progress sees it empty)
                    break
        finally:
            self._handling = 0
            self._flush()
            self._close_step()

    def _failure_seen(self, payload: bytes) -> None:
        code = int.from_bytes(payload[:2], "big")
        reason = payload[2:].decode("utf-8", "replace")
        counter = RATE if code == 1008 else reason_for_close_code(code)
        self._server.options.limits.hit(counter)
        self._server.log_once(counter, self.client_ip, "closing connection from %s: %d %s",
                              self.client_ip, code, reason, level=logging.WARNING)

    def _close_step(self) -> None:
        """TCP follows the closing handshake: closed once it is over, half-closed right
        after our close frame when we failed the connection (no wait, no reset)."""
        proto = self._proto
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if proto.state is CLOSED:
            transport.close()
        elif proto.failed and not self._eof_sent:
            self._eof_sent = True
            if transport.can_write_eof():
                transport.write_eof()  # the peer's close and FIN are read and dropped
            else:
                transport.close()
            if self._close_timer is None:
                self._close_timer = self._event_loop().call_later(
                    self._server.options.close_timeout, self._abort)

    def _abort(self) -> None:
        self._proto.connection_lost()
        if self._transport is not None:
            self._transport.abort()

    # -- writing --------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write what the protocol has for the network, as one write where possible."""
        proto = self._proto
        size = proto.bytes_to_send
        if not size:
            return
        views = proto.views_pending
        chunks = proto.data_to_send()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() + size > self._server.options.max_write_buffer:
            self._over_limit()
            return
        if len(chunks) == 1:
            transport.write(chunks[0])
        elif not views:
            transport.write(b"".join(chunks))
        else:
            _write_chunks(transport, chunks)

    def _over_limit(self) -> None:
        """The buffer would pass its cap: the connection is closed instead (the peer does
        not read, so a close frame would not reach it either)."""
        options = self._server.options
        options.limits.hit(WRITE_BUFFER)
        self._server.log_once(WRITE_BUFFER, self.client_ip,
                              "closing slow consumer %s: write buffer over limit",
                              described(self), level=logging.WARNING)
        proto = self._proto
        if proto.state is OPEN:
            proto.close_code = 1008
            proto.close_reason = "slow consumer: write buffer limit exceeded"
        self._abort()

    def _sent(self) -> None:
        """After a send outside a read: first write of the turn at once, then cork (or,
        inside a write batch, one write when the batch closes)."""
        if self._handling:
            return
        if BATCHES.depth:
            if not self._batched:
                self._batched = True
                BATCHES.flushes.append(self._batch_closed)
        elif not self._turn_pending:
            self._turn_pending = True
            self._event_loop().call_soon(self._end_of_turn)
            self._flush()
            return
        if (self._proto.views_pending
                or self._proto.bytes_to_send >= self._server.options.send_buffer_high):
            # a big payload, or the mark reached: write now, so that the transport's
            # high-water mark (pause_writing, hence is_writable) sees it and the outbox
            # holds the rest back
            self._flush()

    def _batch_closed(self) -> None:
        self._batched = False
        self._flush()

    def _first_now(self) -> None:
        """The first frame written while handling a read of one frame leaves at once."""
        self._handling = _CORK
        self._flush()

    def _end_of_turn(self) -> None:
        self._turn_pending = False
        self._flush()

    # -- ServerConnection API -------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._proto.state is OPEN

    @property
    def closed_by_peer(self) -> bool:
        """The client's close came first (its close code is the one reported)."""
        return self._proto.closed_by_peer

    @property
    def is_writable(self) -> bool:
        """Open and below the send-buffer high-water mark (else: hold messages back)."""
        return self._proto.state is OPEN and not self.paused_since

    def send_text(self, payload: bytes) -> bool:
        proto = self._proto
        if proto.state is not OPEN:
            return False
        proto.send_text(payload)
        handling = self._handling
        if not handling:
            self._sent()
        elif handling == _FIRST_NOW:
            self._first_now()
        return True

    def send_binary(self, payload: bytes) -> bool:
        proto = self._proto
        if proto.state is not OPEN:
            return False
        proto.send_binary(payload)
        self._sent()
        return True

    def send_prepared(self, frame: PreparedFrame) -> bool:
        """A frame built once (e.g. for a broadcast); big payloads are not copied again."""
        proto = self._proto
        if proto.state is not OPEN:
            return False
        proto.send_prepared(frame)
        handling = self._handling
        if not handling:
            self._sent()
        elif handling == _FIRST_NOW:
            self._first_now()
        return True

    def send_raw(self, frame: bytes, body: bytes = b"") -> bool:
        """Older form of :meth:`send_prepared` (a framed message, or header + body)."""
        return self.send_prepared(PreparedFrame.from_raw(frame, body))

    def send_ping(self) -> None:
        if self._proto.state is OPEN:
            self.ping_sent_at = time.monotonic()
            self._proto.send_ping(b"ka")
            self._sent()

    def close(self, code: int = 1000, reason: str = "") -> None:
        proto = self._proto
        if proto.state is not OPEN:
            if proto.state is CONNECTING:
                self._abort()
            return
        proto.send_close(code, reason)
        if not self._handling:
            self._flush()
        if self._close_timer is None:
            self._close_timer = self._event_loop().call_later(
                self._server.options.close_timeout, self._abort)

    def write_buffer_size(self) -> int:
        pending = self._proto.bytes_to_send
        return pending + (self._transport.get_write_buffer_size() if self._transport else 0)


def _write_chunks(transport: asyncio.Transport, chunks: List[Chunk]) -> None:
    """Small chunks joined into one write; a big payload (memoryview) written as it is:
    what the socket does not take at once is copied into the transport's buffer once."""
    run: List[Chunk] = []
    for chunk in chunks:
        if type(chunk) is memoryview:
            if run:
                transport.write(b"".join(run) if len(run) > 1 else run[0])
                run = []
            transport.write(chunk)
        else:
            run.append(chunk)
    if run:
        transport.write(b"".join(run) if len(run) > 1 else run[0])
