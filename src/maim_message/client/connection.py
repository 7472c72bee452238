"""One supervised WebSocket connection: connect, read, reconnect with back-off.

Shared by WebSocketClient and the multi-connection client. It speaks the envelope
protocol (acks, dedupe of redelivered ids, custom type normalisation) and hands decoded
messages to callbacks; it never blocks the event loop and starts no threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuid_module
from typing import Any, Callable, Dict, List, Optional, Union

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..core.codec import SYS_ACK, SYS_STD, dumps, loads
from ..core.dedupe import DedupeWindow
from ..core.envelope import (
    MessageIdFactory,
    custom_envelope,
    custom_handler_keys,
    encode_ack,
    normalize_custom_type,
    std_envelope,
)
from ..core.identity import fingerprint
from ..core.limits import size_limit_of
from ..core.models.api import APIMessageBase
from ..core.outbox import Outbox
from ..core.redact import Redactor, log_safe, redacting_logger
from ..errors import AuthRejectedError, EnvelopeError
from ..runtime.callbacks import HandlerTasks, positional_arity
from ..runtime.reconnect import ReconnectPolicy, keep_connected, refusal_for_status
from ..sio.client import SocketIOClientSocket, SocketIORefused, socketio_url
from .config import ClientConfig
from .resend_clock import ResendClock
from .tls import client_ssl_context

logger = logging.getLogger(__name__)

_OUTBOX_PAIR = ("server", "")  # the client's outbox has one queue: to the server

MessageCallback = Callable[[APIMessageBase, Dict[str, Any]], Any]

# close reason of a 0.6.8 server that refused the key after the upgrade
_AUTH_FAILED_REASON = "Authentication failed"

# Wire generations a connection can speak (ClientConfig.protocol): 0.6 raw WebSocket and
# 0.7 Socket.IO. "auto" tries the remembered one first, the other on HTTP 404/400.
WEBSOCKET, SOCKETIO = "websocket", "socketio"
_SWITCH_ON = (400, 404)  # what a server of the other generation answers (wire-0.7.md §6)
Socket = Union[ClientConnection, SocketIOClientSocket]


class SupervisedConnection:
    """A client connection that keeps itself up until ``stop()``."""

    def __init__(
        self, config: ClientConfig, handlers: HandlerTasks,
        custom_handlers: Dict[str, Callable[..., Any]], connection_uuid: str,
        extra_meta: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.config = config
        self.uuid = connection_uuid
        self.custom_handlers = custom_handlers
        self.extra_meta = extra_meta or {}
        self._handlers = handlers
        self._ids = MessageIdFactory()
        self._dedupe = DedupeWindow(10_000, 3600.0)
        self._ws: Optional[Socket] = None
        wanted = (config.protocol or "auto").lower()
        # the generation that worked last (per connection); None: not known yet
        self.generation: Optional[str] = wanted if wanted in (WEBSOCKET, SOCKETIO) else None
        self._fixed = self.generation is not None
        self._task: Optional[asyncio.Task[None]] = None
        self._first_attempt: Optional[asyncio.Future[bool]] = None
        self._wanted = False
        self.connected = False
        # Frames not yet acked by the server, resent in order after a reconnect: the
        # server's outbox with one pair (bounds: message_cache_max_size, twice max_size in
        # bytes, message_cache_ttl seconds).
        self._outbox = Outbox(max_per_pair=max(1, int(config.message_cache_max_size)),
                              max_bytes=config.max_size * 2,
                              ttl=float(config.message_cache_ttl))
        # False: leave this standard or custom message unread and unacked (the server
        # keeps it for the next connection): how `maim-message tail --count N` stops at N
        self.take_message: Optional[Callable[[], bool]] = None
        self._cursor = 0  # last seq written on the current connection
        # unacked frames written again on the live connection (the hub withholds an ack
        # when it could not store the frame)
        self._resend_clock = ResendClock(max(0.0, float(config.resend_interval or 0)))
        # set by each ack while senders wait for room (made then: an Event made outside
        # the loop is bound to another one on 3.9)
        self._acked_event: Optional[asyncio.Event] = None
        self._full_logged = 0
        self._flushing = False
        self._next_cleanup = 0.0
        self._dropped_logged = 0
        self.last_error: Optional[str] = None
        self.stats: Dict[str, int] = {
            "connect_attempts": 0, "successful_connects": 0, "failed_connects": 0,
            "messages_received": 0, "messages_sent": 0, "custom_messages_processed": 0,
            "reconnect_attempts": 0, "bytes_received": 0, "bytes_sent": 0,
            "resent": 0, "refused": 0,
        }

    def _refused(self, env: Dict[str, Any]) -> None:
        """A ``sys_error`` is the server's final answer to the frame it names: re-sending
        that frame on every reconnect would only be refused again, so it leaves the queue."""
        meta = env.get("meta")
        ref = meta.get("ref_msg_id") if type(meta) is dict else None
        payload = env.get("payload")
        reason = payload.get("reason") if type(payload) is dict else payload
        if type(ref) is str and self._outbox.ack(_OUTBOX_PAIR, ref):
            self.stats["refused"] += 1
            logger.warning("connection %s: server refused message %s: %s", self.uuid,
                           log_safe(ref), log_safe(reason))
        else:
            logger.warning("connection %s: server error: %s", self.uuid, log_safe(reason))

    # -- lifecycle --------------------------------------------------------------------------

    async def connect(self) -> bool:
        """Start (or keep) the connection; True once the server accepted it."""
        if self.connected:
            return True
        loop = asyncio.get_running_loop()
        self._first_attempt = loop.create_future()
        self._wanted = True
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        try:
            return await asyncio.wait_for(
                asyncio.shield(self._first_attempt), self.config.connect_timeout + 1.0
            )
        except asyncio.TimeoutError:
            return False

    async def disconnect(self) -> bool:
        """Close (code 1000) and stop reconnecting; False if it was not connected."""
        was = self.connected
        self._wanted = False
        ws = self._ws
        if ws is not None:
            await ws.close(1000, "client disconnect")
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.connected = False
        return was

    def _resolve_first(self, ok: bool) -> None:
        fut = self._first_attempt
        if fut is not None and not fut.done():
            fut.set_result(ok)

    def _policy(self) -> ReconnectPolicy:
        cfg = self.config
        return ReconnectPolicy(
            cfg.reconnect_delay, cfg.max_reconnect_delay,
            max_attempts=cfg.max_reconnect_attempts or 0, give_up_on_refusal=True,
            retry=cfg.auto_reconnect,
        )

    async def _run(self) -> None:
        policy = self._policy()

        def report(error: Optional[BaseException], was_connected: bool,
                   delay: Optional[float]) -> None:
            self._report(policy, error, was_connected, delay)

        await keep_connected(policy, self._attempt, self._serve_guarded, self._pause,
                             lambda: self._wanted, report)
        self._wanted = False
        self._resolve_first(False)

    async def _attempt(self) -> Socket:
        self.stats["connect_attempts"] += 1
        try:
            return await self._open()
        except InvalidStatus as exc:
            refusal = refusal_for_status(exc.response.status_code)
            if refusal is not None:
                raise refusal from None
            raise

    async def _serve_guarded(self, ws: Socket) -> Optional[AuthRejectedError]:
        try:
            return await self._serve(ws)
        except Exception:
            logger.exception("connection %s: unexpected error", self.uuid)
            return None

    async def _pause(self, delay: float) -> None:
        self.stats["reconnect_attempts"] += 1
        await asyncio.sleep(delay)

    def _report(self, policy: ReconnectPolicy, error: Optional[BaseException],
                was_connected: bool, delay: Optional[float]) -> None:
        if was_connected:
            if error is not None:  # refused after the upgrade: on_disconnect already ran
                logger.warning("connection %s: %s; not retrying", self.uuid, error)
                return
        elif isinstance(error, AuthRejectedError):  # HTTP 401/403, or a Socket.IO 44
            self._failed(str(error))
            logger.warning("connection %s: %s; not retrying", self.uuid, error)
            self._spawn_disconnect(self.last_error)
            return
        elif isinstance(error, InvalidStatus):
            self._failed(f"server rejected WebSocket connection: HTTP "
                         f"{error.response.status_code}")
        elif isinstance(error, (OSError, asyncio.TimeoutError, websockets.InvalidHandshake,
                                websockets.InvalidURI, EnvelopeError, ValueError)):
            self._failed(f"{type(error).__name__}: {error}")
        elif error is not None:  # anything else: count it and retry, never die silently
            logger.error("connection %s: unexpected error while connecting", self.uuid,
                         exc_info=(type(error), error, error.__traceback__))
            self._failed(f"{type(error).__name__}: {error}")
        if delay is None and policy.gave_up():
            logger.warning("connection %s: giving up after %d failed attempts",
                           self.uuid, policy.failures - 1)
            self._spawn_disconnect(self.last_error)

    def _failed(self, reason: str) -> None:
        reason = Redactor([self.config.api_key])(reason)  # an error may quote the URL
        self.stats["failed_connects"] += 1
        self.last_error = reason
        logger.info("connection %s failed: %s", self.uuid, reason)
        self._resolve_first(False)

    async def _open(self) -> Socket:
        """Connect in the generation known to work, else detect it (plain upgrade first)."""
        order: List[str] = [self.generation or WEBSOCKET]
        if not self._fixed:
            order.append(SOCKETIO if order[0] == WEBSOCKET else WEBSOCKET)
        for i, generation in enumerate(order):
            try:
                if generation == SOCKETIO:
                    ws = await self._connect(socketio_url(self.config.url))
                    sock: Socket = await SocketIOClientSocket.open(
                        ws, self.config.connect_timeout)
                else:
                    sock = await self._connect(self.config.url)
            except InvalidStatus as exc:
                if i + 1 < len(order) and exc.response.status_code in _SWITCH_ON:
                    logger.debug("connection %s: HTTP %d for %s, trying %s", self.uuid,
                                 exc.response.status_code, generation, order[i + 1])
                    continue
                raise
            if generation != self.generation:
                logger.info("connection %s: server speaks %s", self.uuid, generation)
            self.generation = generation
            return sock
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connect(self, url: str) -> ClientConnection:
        cfg = self.config
        headers = dict(cfg.headers)
        headers.update({"x-apikey": cfg.api_key, "x-platform": cfg.platform, "x-uuid": self.uuid})
        ssl_ctx = client_ssl_context(cfg) if cfg.url.startswith("wss://") else None
        return await ws_connect(
            url, additional_headers=headers, ssl=ssl_ctx, compression=None,
            open_timeout=cfg.connect_timeout, ping_interval=cfg.ping_interval,
            ping_timeout=cfg.ping_timeout, close_timeout=cfg.close_timeout,
            max_size=cfg.max_size,
            logger=redacting_logger("websockets.client", [cfg.api_key]),  # DEBUG logs headers
        )

    async def _serve(self, ws: Socket) -> Optional[AuthRejectedError]:
        """Read until the connection ends; returns the refusal when the server refused the
        key after the upgrade (0.6.8 does: close 1000 with reason "Authentication failed")."""
        self._ws = ws
        self.connected = True
        self.last_error = None
        self.stats["successful_connects"] += 1
        logger.info("connection %s open to %s (key %s)", self.uuid, _safe_url(self.config.url),
                    fingerprint(self.config.api_key))
        self._resolve_first(True)
        if self.config.on_connect is not None:
            self._handlers.spawn(self.config.on_connect, self.uuid, self.config)
        error: Optional[str] = None
        refused: Optional[AuthRejectedError] = None
        self._cursor = 0
        # Re-send unacked frames while already reading: a big backlog must not stop us from
        # reading the server's acks and pings (both sides would wait on each other).
        resend = asyncio.ensure_future(self._resend(ws))
        retransmit = (asyncio.ensure_future(self._retransmit(ws))
                      if self._resend_clock.enabled and self.config.enable_message_cache
                      else None)
        try:
            async for raw in ws:
                try:
                    await self._frame(ws, raw)
                except ConnectionClosed:
                    raise
                except Exception:  # one bad frame must not end the connection's supervisor
                    logger.exception("connection %s: failed to handle a frame", self.uuid)
        except ConnectionClosed:
            pass
        except SocketIORefused as exc:  # 0.7.5 API servers refuse a key with 41 after CONNECT
            refused = exc
        finally:
            resend.cancel()  # not awaited: nothing here may be interrupted by a cancel
            if retransmit is not None:
                retransmit.cancel()
            self.connected = False
            self._ws = None
            code = ws.close_code
            if refused is not None:
                error = str(refused)
                self.last_error = error
            elif (ws.close_reason or "").startswith(_AUTH_FAILED_REASON):
                refused = AuthRejectedError(None, ws.close_reason or "", close_code=code)
                error = str(refused)
                self.last_error = error
            elif code not in (1000, 1001, None):
                error = f"connection closed: {code} {ws.close_reason or ''}".strip()
                self.last_error = error
            logger.info("connection %s closed (code %s)", self.uuid, code)
            limit = _server_size_limit(ws)
            if limit is not None:
                self._drop_oversized(limit)
            self._spawn_disconnect(error)  # in finally: also when the task is cancelled
        return refused

    def _drop_oversized(self, limit: int) -> None:
        """The server closed us (1009) over a message above its size limit: that message
        would be sent again first on every reconnect, closing each connection, so it is
        refused here, like a ``sys_error`` (the messages behind it go on)."""
        for entry in self._outbox.drop_larger_than(_OUTBOX_PAIR, limit):
            self.stats["refused"] += 1
            logger.warning("connection %s: message %s of %d bytes is over the server's limit "
                           "of %d bytes: dropped, not sent again", self.uuid,
                           log_safe(entry.msg_id), len(entry.payload), limit)
        self._dropped_logged = self.dropped  # said here, not as "outbox full or expired"

    async def _resend(self, ws: Socket) -> None:
        self._cleanup(now=True)  # what outlived message_cache_ttl is not sent again
        resent = await self._flush(ws)
        if resent:
            self.stats["resent"] += resent
            logger.info("connection %s: resent %d unacked message(s)", self.uuid, resent)

    async def _retransmit(self, ws: Socket) -> None:
        """Write unacked frames again once they waited ``resend_interval`` (doubling per
        frame and round) for an ack."""
        clock = self._resend_clock
        while True:
            await asyncio.sleep(clock.tick)
            self._cleanup()  # what outlived message_cache_ttl is not sent again
            again = clock.due(self._outbox.pending_after(_OUTBOX_PAIR, 0), self._cursor)
            for entry in again:
                if not await self._write(ws, entry.payload):
                    return
            if again:
                self.stats["resent"] += len(again)
                logger.info("connection %s: %d message(s) not acked in time, sent again",
                            self.uuid, len(again))

    def _spawn_disconnect(self, error: Optional[str]) -> None:
        if self.config.on_disconnect is not None:
            self._handlers.spawn(self.config.on_disconnect, self.uuid, error)

    async def stop(self) -> None:
        await self.disconnect()

    # -- receiving --------------------------------------------------------------------------

    async def _frame(self, ws: Socket, raw: Any) -> None:
        self.stats["messages_received"] += 1
        self.stats["bytes_received"] += len(raw)
        try:
            env = loads(raw)
        except EnvelopeError:
            logger.warning("connection %s: ignoring a frame that is not JSON", self.uuid)
            return
        if type(env) is not dict:
            return
        kind = env.get("type")
        if kind == SYS_ACK:
            meta = env.get("meta")
            acked = meta.get("acked_msg_id") if type(meta) is dict else None
            if type(acked) is str and self._outbox.ack(_OUTBOX_PAIR, acked):
                if self._acked_event is not None:
                    self._acked_event.set()  # a sender waiting for room goes on
            return
        if kind == "sys_error":
            self._refused(env)
            return
        msg_id = env.get("msg_id")
        if msg_id is not None and type(msg_id) is not str:
            msg_id = str(msg_id) if type(msg_id) is int else None  # not a usable id
        if msg_id:
            take = self.take_message
            if take is not None and (kind == SYS_STD or (
                    isinstance(kind, str) and not kind.startswith("sys_"))) and not take():
                return
            ack = encode_ack(self._ids.new("ack_"), self.uuid, msg_id, from_server=False)
            await ws.send(ack, text=True)
            if self._dedupe.seen(msg_id):
                return
        meta = env.get("meta")
        meta = dict(meta) if type(meta) is dict else {}
        meta.update(self.extra_meta)
        if kind == SYS_STD:
            payload = env.get("payload")
            if not payload or type(payload) is not dict:
                return
            try:
                message = APIMessageBase.from_dict(payload)
            except (ValueError, TypeError, AttributeError, RecursionError) as exc:  # deep seglist
                logger.warning("connection %s: bad message dropped: %s", self.uuid, exc)
                return
            on_message = self.config.on_message
            if on_message is not None:
                self._handlers.spawn(on_message, message, meta)
        elif isinstance(kind, str) and not kind.startswith("sys_"):
            self._custom(kind, env.get("payload"), meta)

    def _custom(self, kind: str, payload: Any, meta: Dict[str, Any]) -> None:
        for key in custom_handler_keys(kind):
            handler = self.custom_handlers.get(key)
            if handler is not None:
                self.stats["custom_messages_processed"] += 1
                if positional_arity(handler) == 1:
                    self._handlers.spawn(handler, payload)
                else:
                    self._handlers.spawn(handler, payload, meta)
                return
        logger.debug("connection %s: no handler for custom type %r", self.uuid, kind)

    # -- sending ----------------------------------------------------------------------------

    def _meta(self) -> Dict[str, Any]:
        return {"sender_user": fingerprint(self.config.api_key),
                "platform": self.config.platform, "timestamp": time.time()}

    async def send_message(self, message: APIMessageBase) -> bool:
        msg_id = self._ids.new()
        env = std_envelope(msg_id, message.to_dict(), self._meta())
        return await self._send(dumps(env), msg_id)

    async def send_custom_message(self, message_type: str, payload: Any) -> bool:
        msg_id = self._ids.new("custom_")
        env = custom_envelope(msg_id, normalize_custom_type(message_type), payload, self._meta())
        return await self._send(dumps(env), msg_id)

    async def _send(self, data: bytes, msg_id: str) -> bool:
        """Write, or keep for the next connection; False only when it cannot be delivered."""
        if not self.config.enable_message_cache:
            return await self._write_now(data)
        if not self._wanted:
            return False  # not connecting: nobody will ever deliver it
        if not self._outbox.has_room(_OUTBOX_PAIR, msg_id, data) and not await self._room(
                msg_id, data):
            return False
        entry = self._outbox.append(_OUTBOX_PAIR, msg_id, data)
        self._cleanup()
        ws = self._ws
        if ws is None or not self.connected or self._flushing:
            return True
        if self._cursor >= entry.prev_seq:
            self._cursor = entry.seq
            self._resend_clock.written(entry)
            await self._write(ws, data)
            return True
        await self._flush(ws)
        return True

    async def _room(self, msg_id: str, data: bytes) -> bool:
        """The unacked queue is full (``message_cache_max_size`` messages or twice
        ``max_size`` bytes): evicting its oldest frame would lose it if the server never
        got it, so the sender waits for acks to make room while connected (a burst slows
        to the server's pace); not connected, or no ack within ``connect_timeout``, the
        message is refused (False, WARNING) and the queued ones are kept."""
        outbox = self._outbox
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(1.0, float(self.config.connect_timeout))
        if self._acked_event is None:
            self._acked_event = asyncio.Event()
        acked = self._acked_event
        while self.connected and self._wanted and loop.time() < deadline:
            acked.clear()
            try:
                await asyncio.wait_for(acked.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
            self._cleanup()
            if outbox.has_room(_OUTBOX_PAIR, msg_id, data):
                return True
        self._cleanup(now=True)  # what expired makes room too
        if outbox.has_room(_OUTBOX_PAIR, msg_id, data):
            return True
        self.stats["refused"] += 1
        if self._full_logged == 0 or self.stats["refused"] // 1000 > self._full_logged // 1000:
            logger.warning("connection %s: %d unacked messages queued (message_cache_max_size"
                           "): message %s not queued, send_message returns False",
                           self.uuid, outbox.depth(), log_safe(msg_id))
        self._full_logged = self.stats["refused"]
        return False

    def _cleanup(self, now: bool = False) -> None:
        """Expire old entries (every message_cache_cleanup_interval s); log what was lost."""
        clock = time.monotonic()
        if now or clock >= self._next_cleanup:
            self._next_cleanup = clock + max(0.0, float(self.config.message_cache_cleanup_interval))
            self._outbox.expire()
        dropped = self.dropped
        if dropped != self._dropped_logged and (
                self._dropped_logged == 0 or dropped // 1000 > self._dropped_logged // 1000):
            logger.warning("connection %s: outbox full or expired, dropped %d oldest "
                           "message(s)", self.uuid, dropped)
        self._dropped_logged = dropped

    @property
    def dropped(self) -> int:
        """Unacked messages given up: over the bounds or older than message_cache_ttl."""
        return self._outbox.evicted + self._outbox.expired

    async def _flush(self, ws: Socket) -> int:
        """Write pending frames after the cursor, in order (also those added meanwhile)."""
        if self._flushing:
            return 0
        self._flushing = True
        written = 0
        try:
            while True:
                batch = list(self._outbox.pending_after(_OUTBOX_PAIR, self._cursor))
                if not batch:
                    return written
                for entry in batch:
                    if not await self._write(ws, entry.payload):
                        return written
                    self._cursor = entry.seq
                    self._resend_clock.written(entry)
                    written += 1
        finally:
            self._flushing = False

    async def _write(self, ws: Socket, data: bytes) -> bool:
        try:
            await ws.send(data, text=True)
        except ConnectionClosed:
            return False
        self.stats["messages_sent"] += 1
        self.stats["bytes_sent"] += len(data)
        return True

    async def _write_now(self, data: bytes) -> bool:
        ws = self._ws
        if ws is None or not self.connected:
            return False
        return await self._write(ws, data)

    @property
    def pending_count(self) -> int:
        return self._outbox.depth()


def new_single_uuid() -> str:
    return "single_" + uuid_module.uuid4().hex


def _safe_url(url: str) -> str:
    """The URL without its query string (which may carry an api_key)."""
    return url.split("?", 1)[0]


def _server_size_limit(ws: Any) -> Optional[int]:
    """The size limit the *server* closed us over (1009 naming it), not one of ours (our
    own 1009 over a message it sent names our max_size: nothing of ours is dropped then)."""
    protocol = getattr(ws, "protocol", None)  # websockets' sans-I/O side (not Socket.IO)
    received = getattr(protocol, "close_rcvd", None)
    if received is None or getattr(protocol, "close_rcvd_then_sent", None) is False:
        return None
    return size_limit_of(received.code, received.reason or "")
