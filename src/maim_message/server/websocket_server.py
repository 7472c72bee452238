"""WebSocketServer: the API-Server version's hub object (spec section "快速开始").

It owns callbacks, routing and statistics; the transport below it owns sockets. Auth is
answered during the HTTP handshake (401/403 before any upgrade), every accepted frame is
acked as 0.6.8 does, and each handler call runs in its own task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ..backends.cluster_base import ClusterBackend, LocalCluster, Selector, create_cluster
from ..core.codec import (
    CUSTOM_PREFIX,
    SYS_ACK,
    SYS_STD,
    decode_envelope,
    dumps,
)
from ..core.dedupe import DedupeWindow
from ..core.defaults import limit_values
from ..core.envelope import (
    AckEncoder,
    MessageIdFactory,
    custom_envelope,
    custom_handler_keys,
    encode_error,
    normalize_custom_type,
    std_envelope,
)
from ..core.identity import connection_metadata, fingerprint, identify
from ..core.limits import (
    BINARY_FRAME,
    CONNECTIONS_PER_KEY,
    INVALID_UTF8,
    ORIGIN,
    RATE,
    FirstSeen,
    KeyConnectionCounter,
    LimitCounters,
    OriginPolicy,
    TokenBucket,
)
from ..core.models.api import APIMessageBase
from ..core.models.api_fast import message_from_payload
from ..core.redact import log_safe
from ..core.routing import RoutingTable
from ..core.size_refusals import STRIKES
from ..errors import ConfigError, DeliveryRefused, EnvelopeError, ServerStartError
from ..runtime.callbacks import HandlerTasks, call_maybe_async
from ..runtime.unused_fields import SERVER_UNUSED, warn_unused_fields
from ..sio.mux import GenerationMux
from ..sio.server import SocketIOEndpoint
from ..transport.base import Accept, Decision, HandshakeInfo, HttpReply, ServerConnection
from ..transport.ws_server import ServerOptions, WebSocketServerTransport
from .acks import (
    ACK_POLICIES,
    HANDLED,
    AckAfterHandling,
    FrameKey,
    delivery_failed,
    start_acked,
)
from .config import ServerConfig, config_field_names
from .delivery import Delivery
from .inbound import RefusedFrames, standard_message
from .peer import Peer
from .tls import describe_peer_cert, server_ssl_context

logger = logging.getLogger(__name__)

HttpRoute = Callable[[HandshakeInfo], Any]
_MAX_KNOWN_KEYS = 100_000  # api_key -> user id learnt at auth (outgoing routing fallback)


class WebSocketServer:
    """Accepts clients, routes messages by ``message_dim``, calls the configured callbacks."""

    def __init__(self, config: Optional[ServerConfig] = None) -> None:
        self.config = config if config is not None else ServerConfig()
        self.config.ensure_defaults()
        warn_unused_fields(self.config, SERVER_UNUSED)
        self.logger = logger
        self.running = False
        self.routes = RoutingTable()
        self.peers: Dict[str, Peer] = {}
        self._written_to_closed = 0  # messages written to connections closed since
        self.stats: Dict[str, Any] = {
            "total_auth_requests": 0, "successful_auths": 0, "failed_auths": 0,
            "messages_processed": 0, "custom_messages_processed": 0,
            "duplicate_messages_ignored": 0, "invalid_frames": 0,
            "total_connections": 0, "messages_received": 0, "messages_sent": 0,
            "bytes_received": 0, "bytes_sent": 0,
        }
        self.http_routes: Dict[str, HttpRoute] = {}
        # admin actions from other cluster nodes (and kept ones, at start): the hub's
        self.admin_handler: Optional[Callable[[str, Dict[str, str]], None]] = None
        self.auth_epoch = 0  # bumped by invalidate_auth()
        self._ids = MessageIdFactory()
        self._acks = AckEncoder()
        self._dedupe = DedupeWindow(self.config.dedupe_window, self.config.dedupe_ttl)
        self._handlers = HandlerTasks("WebSocketServer")
        self._transport: Optional[WebSocketServerTransport] = None
        self._sio: Optional[SocketIOEndpoint] = None  # 0.7.x (Socket.IO) clients, same port
        self._users_by_key: Dict[str, str] = {}
        self.limits = LimitCounters()  # get_stats()["limits"]; the transport adds to it
        self._key_conns = KeyConnectionCounter(self.config.max_connections_per_key)
        self._origins = OriginPolicy(self.config.allowed_origins)
        self._limit_logged = FirstSeen()
        self._refused = RefusedFrames()  # malformed frames by key: re-sends not re-parsed
        # ack="handled": frames being handled, acked once done and committed
        self._after_handling = AckAfterHandling(
            self._dedupe, self._handlers, lambda: self.delivery, self._send_ack, self._refuse_frame,
            self._unhandled_frame)
        self._ack_handled = self._ack_policy() == HANDLED
        self.delivery = Delivery(self.config, self.peers, self.stats)
        self._delivery_closed = False
        self._preload_dedupe()
        self._expiry: Optional[asyncio.Task[None]] = None
        # Every send, presence change and hub-wide query goes through this backend
        # (docs/cluster.md); the local one is the single-node fast path. Replaced by the
        # configured one while running.
        self.cluster: ClusterBackend = self._local_cluster()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening; returns once the port is bound, raises ServerStartError if not."""
        if self.running:
            logger.warning("WebSocketServer.start() called while running; ignored")
            return
        cfg = self.config
        self._ack_handled = self._ack_policy() == HANDLED
        if self._delivery_closed:  # restarted after stop(): reopen the outbox (and its store)
            self.delivery = Delivery(cfg, self.peers, self.stats)
            self._delivery_closed = False
            self._preload_dedupe()
        ssl_ctx = None
        if cfg.ssl_enabled:
            ssl_ctx = server_ssl_context(
                cfg.ssl_certfile, cfg.ssl_keyfile, cfg.ssl_ca_certs, cfg.ssl_verify
            )
        # the path is checked per generation (GenerationMux), not by the transport
        options = ServerOptions(path=None, limits=self.limits, **limit_values(cfg))
        if cfg.enable_socketio:  # a polling POST carries messages as big as a frame
            options.max_request_body = max(options.max_request_body, cfg.max_message_size)
        self._key_conns.limit = cfg.max_connections_per_key
        self._origins = OriginPolicy(cfg.allowed_origins)
        self._sio = self.socketio_endpoint()
        transport = WebSocketServerTransport(GenerationMux(self, self._sio, cfg.path), options)
        cluster = create_cluster(cfg)
        await cluster.start(self)  # before listening: the first client may need Redis
        self.cluster = cluster
        try:
            await transport.start(cfg.host, cfg.port, ssl=ssl_ctx, reuse_port=cfg.reuse_port)
        except OSError as exc:
            await cluster.stop()
            self.cluster = self._local_cluster()
            raise ServerStartError(f"cannot listen on {cfg.host}:{cfg.port}: {exc}") from exc
        self._transport = transport
        self.running = True
        if self.delivery.enabled:
            self._expiry = asyncio.ensure_future(self._expire_loop())
        logger.info(
            "WebSocketServer listening on %s://%s:%s%s",
            "wss" if ssl_ctx else "ws", cfg.host, transport.port, cfg.path,
        )

    async def stop(self) -> None:
        """Close every connection (1001), let handlers finish (3 s grace), stop listening."""
        if not self.running:
            return
        self.running = False
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.stop(1001, "server shutting down")
        if self._sio is not None:
            self._sio.stop()  # polling-only sessions (WebSocket ones closed just above)
            self._sio = None
        await self._handlers.cancel_all(3.0)
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)
            self._expiry = None
        await self.cluster.stop()  # after the closes: presence is removed, queue flushed
        self.cluster = self._local_cluster()
        self.delivery.close()
        self._delivery_closed = True
        self.peers.clear()
        self.routes = RoutingTable()
        logger.info("WebSocketServer stopped")

    def _local_cluster(self) -> LocalCluster:
        """The single-node backend, usable before start() and after stop()."""
        local = LocalCluster(self.config.cluster_node_id)
        local.attach(self)
        return local

    def _ack_policy(self) -> str:
        policy = self.config.ack
        if policy not in ACK_POLICIES:
            raise ConfigError(f"ServerConfig.ack must be one of {ACK_POLICIES}, got {policy!r}")
        return policy

    def _preload_dedupe(self) -> None:
        """Durable outbox: frames a previous process handled are duplicates here too."""
        for key in self.delivery.handled_frames(self.config.dedupe_ttl):
            self._dedupe.seen(key)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, max(1.0, self.config.outbox_ttl / 10)))
            dropped = self.delivery.expire()
            if dropped:
                logger.warning("outbox: %d message(s) expired undelivered", dropped)

    async def __aenter__(self) -> WebSocketServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    def is_running(self) -> bool:
        return self.running

    @property
    def port(self) -> Optional[int]:
        """The bound port (useful with ``port=0``)."""
        return self._transport.port if self._transport else None

    def socketio_endpoint(self) -> Optional[SocketIOEndpoint]:
        """0.7.x clients: Engine.IO at ``<path>/`` with this server's auth and limits (one
        per server, shared by its own listener and an ASGI mount); None when turned off."""
        cfg = self.config
        if not cfg.enable_socketio:
            return None
        if self._sio is None:
            self._sio = self._new_socketio_endpoint()
        return self._sio

    def _new_socketio_endpoint(self) -> SocketIOEndpoint:
        cfg = self.config
        return SocketIOEndpoint(
            self, cfg.path, ping_interval=cfg.ping_interval or 25.0,
            ping_timeout=cfg.ping_timeout or 20.0, max_payload=cfg.max_message_size,
            poll_buffer_high=cfg.send_buffer_high, connect_timeout=cfg.handshake_timeout,
            max_queue=cfg.max_write_buffer,
        )

    # -- handshake (transport callback) ----------------------------------------------------

    async def handshake(self, info: HandshakeInfo) -> Decision:
        """A 0.6 upgrade or a plain HTTP route (0.7 requests went to ``_sio`` before)."""
        if not info.is_upgrade:
            route = self.http_routes.get(info.path)
            if route is None and info.path == self.config.path:  # a browser, curl
                return HttpReply(426, b"this endpoint needs a WebSocket upgrade\n",
                                 headers=(("Upgrade", "websocket"),))
            if route is None:
                return HttpReply(404, b"not found\n")
            return await call_maybe_async(route, info)
        return await self.authorize(info)

    async def authorize(self, info: HandshakeInfo, recheck: bool = False) -> Decision:
        """Auth and limits for a new client of either generation: ``Accept(Peer)`` or the
        refusal (a 0.7 client gets it as its CONNECT_ERROR message).

        ``recheck``: the same client again (a Socket.IO CONNECT after its accepted handshake:
        a key revoked or a hub draining meanwhile refuses it); counted as one request."""
        if not self._origins.allows(info.headers.get("origin")):
            return self._limit_refusal(ORIGIN, 403, "origin not allowed", info.client_ip)
        ident = identify(info.query, info.headers)
        metadata = connection_metadata(ident, info.headers, info.client_ip, time.time())
        metadata["client_cert"] = describe_peer_cert(info.peer_cert)
        label = fingerprint(ident.api_key)
        if recheck:  # its earlier success is replaced by this outcome
            self.stats["successful_auths"] -= 1
        else:
            self.stats["total_auth_requests"] += 1
        cfg = self.config
        try:
            allowed = await call_maybe_async(cfg.on_auth, metadata)  # type: ignore[arg-type]
            user_id = (
                await call_maybe_async(cfg.on_auth_extract_user, metadata)  # type: ignore[arg-type]
                if allowed else None
            )
        except Exception as exc:
            logger.warning("auth callback raised for %s (%s): %s", label, info.client_ip,
                           type(exc).__name__)
            return self._refuse(403, "authentication error")
        if not allowed:
            if not ident.api_key:
                return self._refuse(401, "missing API key (api_key query or x-apikey header)")
            logger.info("auth refused for %s from %s", label, info.client_ip)
            return self._refuse(403, "authentication failed")
        if not user_id:
            logger.info("no user id for %s from %s", label, info.client_ip)
            return self._refuse(403, "cannot extract user id")
        if not self._key_conns.can_open(ident.api_key) and not self._replaces(ident.uuid,
                                                                            ident.api_key):
            return self._limit_refusal(CONNECTIONS_PER_KEY, 429,
                                       "too many connections for this API key", label)
        user_id = str(user_id)
        taken = self.peers.get(ident.uuid)
        if taken is not None and taken.user_id != user_id:
            # x-uuid is a resume token of one user: another user may not take it over
            return self._refuse(409, "connection uuid in use by another user")
        metadata["user_id"] = user_id
        self.stats["successful_auths"] += 1
        peer = Peer(ident.uuid, ident.api_key, ident.platform, user_id, metadata, label,
                    metadata["connected_at"])
        peer.resumable = ident.uuid_given
        return Accept(peer)

    def _refuse(self, status: int, reason: str) -> HttpReply:
        self.stats["failed_auths"] += 1
        return HttpReply(status, f"Authentication failed: {reason}\n".encode())

    # -- connection events (transport callbacks) -------------------------------------------

    def connection_opened(self, conn: ServerConnection) -> None:
        peer: Peer = conn.context
        old = self.peers.get(peer.uuid)
        if old is not None and old.user_id != peer.user_id:  # raced past the handshake check
            conn.close(1008, "connection uuid in use by another user")
            return
        if not self._admit(conn, peer):
            return
        peer.conn = conn
        if old is not None and old.conn is not None:
            # Same x-uuid reconnecting before we noticed the old socket died: the newer
            # connection wins, and the old one's cleanup must not touch it.
            old.conn.close(4000, "replaced by a newer connection with the same uuid")
            self._written_to_closed += old.messages_out  # (it leaves self.peers now)
            old.messages_out = 0
        self.peers[peer.uuid] = peer
        self.routes.add(peer.uuid, peer.user_id, peer.platform)
        known = self._users_by_key
        known.pop(peer.api_key, None)  # re-insert: the map is ordered oldest first
        known[peer.api_key] = peer.user_id
        if len(known) > _MAX_KNOWN_KEYS:  # bounded even when every client uses a new key
            del known[next(iter(known))]
        self.stats["total_connections"] += 1
        # presence, and the backlog (which may first have to be read from the cluster store)
        self.cluster.connection_opened(peer)
        if self.config.enable_connection_log:
            logger.info("connected %s user=%s platform=%s key=%s ip=%s", peer.uuid_label,
                        peer.user_label, peer.platform_label, peer.key_label, conn.client_ip,
                        extra=peer.log_fields())
        if self.config.on_connect is not None:
            self._handlers.spawn(self.config.on_connect, peer.uuid, dict(peer.metadata))

    def connection_closed(self, conn: ServerConnection, code: int, reason: str) -> None:
        peer: Peer = conn.context
        try:
            self._forget_peer(conn, peer, code, reason)
        finally:
            # Break the peer <-> connection cycle: the connection (and a half-received
            # message in its parser) is freed by reference counting, not by a full GC.
            peer.conn = None

    def _forget_peer(self, conn: ServerConnection, peer: Peer, code: int,
                     reason: str = "") -> None:
        if peer.counted:
            peer.counted = False
            self._key_conns.release(peer.api_key)
        if peer.conn is None:
            return  # refused when opening (a limit): never registered
        self._written_to_closed += peer.messages_out
        if self.peers.get(peer.uuid) is not peer:
            return  # replaced by a newer connection with the same uuid: that one lives on
        del self.peers[peer.uuid]
        self.routes.remove(peer.uuid)
        if code == 1009 and getattr(conn, "closed_by_peer", False):  # the peer's limit
            self._receiver_size_close(peer, reason)
        self.cluster.connection_closed(peer)
        if self.config.enable_connection_log:
            logger.info("disconnected %s user=%s code=%s", peer.uuid_label, peer.user_label,
                        code, extra={**peer.log_fields(), "close_code": code})
        if self.config.on_disconnect is not None and self.running:
            self._handlers.spawn(self.config.on_disconnect, peer.uuid, dict(peer.metadata))

    def _receiver_size_close(self, peer: Peer, reason: str) -> None:
        """The receiver closed over its own size limit: the largest message written to it
        and not acked is sent again on its next connection, and given up after a few
        such closes in a row (Delivery.refused_as_too_big), so its pair is not stuck."""
        who = f"{peer.key_label} on {peer.platform_label}"
        found = self.delivery.refused_as_too_big(peer)
        if found is not None and found[2]:
            entry, closes, _ = found
            logger.warning("dropped message %s (%d bytes) queued for %s: its receiver closed "
                           "the connection over its size limit (1009) the last %d times it "
                           "was sent; give receivers a max_size of at least the server's "
                           "max_message_size", log_safe(entry.msg_id, 80), len(entry.payload),
                           who, closes)
            return
        log = logger.warning if self._limit_logged.first(("peer_size", who)) else logger.debug
        log("connection of %s closed over its size limit (1009 %s)%s; give receivers a "
            "max_size of at least the server's max_message_size", who, log_safe(reason, 120),
            f": the largest message written to it and not acked ({len(found[0].payload)} "
            f"bytes) is sent again on its next connection, and dropped after "
            f"{STRIKES} such closes in a row" if found is not None else "")

    def connection_writable(self, conn: ServerConnection) -> None:
        self.delivery.flush(conn.context)

    def binary_received(self, conn: ServerConnection, payload: bytes) -> None:
        self.stats["invalid_frames"] += 1
        self._limit_close(conn, conn.context, BINARY_FRAME, 1003,
                          "binary frames are not supported; send JSON text frames")

    def text_received(self, conn: ServerConnection, payload: bytes) -> None:
        stats = self.stats
        stats["messages_received"] += 1
        stats["bytes_received"] += len(payload)
        peer: Peer = conn.context
        bucket = peer.bucket
        if bucket is not None and not bucket.allow():
            self._limit_close(conn, peer, RATE, 1008, "rate limit exceeded: over "
                              f"{bucket.rate:g} messages/s (burst {bucket.burst:g})")
            return
        try:
            env = decode_envelope(payload)
        except EnvelopeError as exc:
            self._bad_frame(conn, peer, exc, payload)
            return
        kind = env["type"]
        stats["messages_processed"] += 1
        if kind == SYS_ACK:
            meta = env.get("meta")
            acked = meta.get("acked_msg_id") if type(meta) is dict else None
            if type(acked) is str and self.delivery.acked(peer, acked) and bucket is not None:
                bucket.give_back()  # acking what it was sent is not sending
            return
        peer.messages_in += 1
        msg_id = env.get("msg_id")
        key = (peer.user_id, peer.platform, msg_id) if msg_id else None
        # A re-send of a frame already taken is acked (at once, or once its first copy is
        # handled) without being parsed again; this also records the key of a new frame.
        if key is not None and (
                self._ack_handled or self._refused.get(key) is not None
                or self._dedupe.seen_from(peer.pair, msg_id)) and self._duplicate(conn, key):
            return
        # Parsed and checked before the ack: what is dropped is never acked.
        handler: Optional[Callable[..., Any]] = None
        args: Tuple[Any, ...] = ()
        if kind == SYS_STD:
            body = env.get("payload")  # the common shape in one pass, else the long way
            message = message_from_payload(body) if type(body) is dict else None
            try:
                if message is None:
                    message = standard_message(env, peer.platform, peer.api_key)
            except EnvelopeError as exc:
                frame = self._bad_frame(conn, peer, exc, None, ref=msg_id)
                if key is not None:  # not taken; a re-send of it is refused unparsed
                    self._dedupe.forget(key)
                    if frame is not None:
                        self._refused.add(key, frame)
                return
            handler, args = self.config.on_message, (message, dict(peer.metadata))
        elif kind.startswith(CUSTOM_PREFIX):
            handler = self._custom_handler(peer, kind)
            args = (env, dict(peer.metadata))
            if handler is not None:
                stats["custom_messages_processed"] += 1
        elif not kind.startswith("sys_"):
            self._warn_once(peer, "unknown_type", "unknown message type %r from %s",
                            kind[:80], peer.uuid_label)
        if key is None:  # nothing to ack, nothing to dedupe
            if handler is not None:
                self._handlers.start(handler, *args)
            return
        # Cluster mode: the handler starts once the frame was checked cluster-wide.
        gate = self.cluster.admit if self.cluster.distributed else None  # type: ignore[attr-defined]
        if handler is None:
            self._send_ack(conn, key[2])
        elif self._ack_handled:
            self._after_handling.receive(conn, key, handler, args, gate)
        else:
            self._send_ack(conn, key[2])
            if gate is None:
                self._handlers.start(handler, *args)
            else:
                start_acked(self._handlers, gate, key, handler, args)

    def _duplicate(self, conn: ServerConnection, key: FrameKey) -> bool:
        """True (and acked, to be acked, or refused again) when ``key`` was seen before.

        ``text_received`` calls it only when the answer may be True: ack="handled", a
        refused frame again, or ``key`` already in the dedupe window (then recorded).
        """
        refused = self._refused.get(key)
        if refused is not None:  # the same malformed frame again (a client's re-send)
            self.stats["invalid_frames"] += 1
            conn.send_text(refused)
            return True
        if self._ack_handled:
            return self._after_handling.duplicate(conn, key)
        self._send_ack(conn, key[2])  # in the dedupe window: a re-send, acked again
        self.stats["duplicate_messages_ignored"] += 1
        return True

    def _send_ack(self, conn: ServerConnection, msg_id: str) -> None:
        peer: Peer = conn.context
        template = peer.ack_template
        if template is None:
            template = peer.ack_template = self._acks.template(peer.uuid)
        ack = self._acks.encode(template, msg_id)
        if conn.send_text(ack):
            self.stats["messages_sent"] += 1
            self.stats["bytes_sent"] += len(ack)

    def _refuse_frame(
        self, conns: List[ServerConnection], exc: DeliveryRefused, msg_id: str
    ) -> None:
        """A handler refused its frame (ack="handled"): sys_error instead of an ack."""
        frame = encode_error(str(exc), field=exc.field, ref_msg_id=msg_id)
        for conn in conns:
            peer = conn.context
            if peer is not None:
                self._warn_once(peer, "refused", "message from %s refused: %s",
                                peer.uuid_label, log_safe(exc))
            conn.send_text(frame)

    def _unhandled_frame(
        self, conns: List[ServerConnection], exc: BaseException, msg_id: str, retry: bool
    ) -> None:
        """ack="handled", the frame was not handled: not acked. ``retry`` (its forward
        could not be stored or handed on): no answer, the client re-sends it later. Else
        (its handler raised): ``sys_error``, so the client drops it instead of re-sending
        what would fail the same way. Logged once per connection and reason."""
        frame = None if retry else encode_error(
            "the server failed to handle this message", ref_msg_id=msg_id)
        reason = f"{'not_stored' if retry else 'handler_failed'}:{type(exc).__name__}"
        what = ("not acked: the store failed to check it or to take its forward (the "
                "client re-sends it)"
                if retry else "failed in its handler (answered with sys_error)")
        for conn in conns:
            peer = conn.context
            if peer is not None:
                self._warn_once(peer, reason, "message %s from %s %s: %s: %s",
                                log_safe(msg_id), peer.uuid_label, what, type(exc).__name__,
                                log_safe(exc), exc_info=None if retry else exc)
            if frame is not None and conn.is_open:
                conn.send_text(frame)

    def _custom_handler(self, peer: Peer, kind: str) -> Optional[Callable[..., Any]]:
        handlers = self.config.custom_handlers
        for key in custom_handler_keys(kind):
            handler = handlers.get(key)
            if handler is not None:
                return handler
        self._warn_once(peer, "no_handler", "no handler for custom type %r (from %s)",
                        kind[:80], peer.uuid_label)
        return None

    def _bad_frame(
        self, conn: ServerConnection, peer: Peer, exc: EnvelopeError, payload: Optional[bytes],
        ref: Optional[str] = None,
    ) -> Optional[bytes]:
        """Answer a refused frame with sys_error (returned), or close on invalid UTF-8."""
        self.stats["invalid_frames"] += 1
        if payload is not None and exc.field is None:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                self._limit_close(conn, peer, INVALID_UTF8, 1007, "text frame is not valid UTF-8")
                return None
        self._warn_once(peer, f"bad_frame:{exc.field}", "bad frame from %s: %s",
                        peer.uuid_label, log_safe(exc))
        frame = encode_error(str(exc), field=exc.field, ref_msg_id=ref)
        conn.send_text(frame)
        return frame

    # -- limits -----------------------------------------------------------------------------

    def _replaces(self, uuid: str, api_key: str) -> bool:
        """A reconnect with the uuid of a live connection of the same key takes its slot."""
        old = self.peers.get(uuid)
        return old is not None and old.counted and old.api_key == api_key

    def _admit(self, conn: ServerConnection, peer: Peer) -> bool:
        """Per-key connection count and rate bucket; False: refused and being closed."""
        if self._replaces(peer.uuid, peer.api_key):
            self.peers[peer.uuid].counted = False  # the old connection hands over its slot
        elif not self._key_conns.acquire(peer.api_key):
            self._limit_close(conn, peer, CONNECTIONS_PER_KEY, 1008,
                              "too many connections for this API key")
            return False
        peer.counted = True
        rate = self.config.rate_limit_per_second
        if rate:
            peer.bucket = TokenBucket(rate, max(1.0, float(self.config.rate_limit_burst)))
        return True

    def _limit_hit(self, reason: str, who: str, detail: str) -> None:
        """Count a hit; log it at WARNING the first time for this peer, later at DEBUG."""
        self.limits.hit(reason)
        if self._limit_logged.first((reason, who)):
            logger.warning("limit %s hit by %s: %s (repeats from this peer at DEBUG)",
                           reason, who, detail)
        else:
            logger.debug("limit %s hit by %s: %s", reason, who, detail)

    def _limit_close(
        self, conn: ServerConnection, peer: Peer, reason: str, code: int, detail: str
    ) -> None:
        self._limit_hit(reason, f"{peer.key_label} ({conn.client_ip})", detail)
        conn.close(code, detail)

    def _limit_refusal(self, reason: str, status: int, detail: str, who: str) -> HttpReply:
        self._limit_hit(reason, who, detail)
        return HttpReply(status, f"{detail}\n".encode())

    def _warn_once(self, peer: Peer, reason: str, fmt: str, *args: Any,
                   exc_info: Optional[BaseException] = None) -> None:
        """WARNING the first time a connection hits ``reason`` (with ``exc_info``'s
        traceback), DEBUG after that."""
        if reason in peer.warned:
            logger.debug(fmt, *args)
        elif len(peer.warned) < 32:
            peer.warned.add(reason)
            logger.warning(fmt + " (further ones from this connection at DEBUG)", *args,
                           exc_info=exc_info)
        else:
            logger.debug(fmt, *args)

    # -- sending --------------------------------------------------------------------------

    async def _target_user(self, api_key: str, platform: str) -> Optional[str]:
        """The user a message_dim names, via on_auth_extract_user as 0.6.8 does."""
        request = {"api_key": api_key, "platform": platform, "message_type": "outgoing",
                   "timestamp": time.time()}
        try:
            user = await call_maybe_async(self.config.on_auth_extract_user, request)  # type: ignore[arg-type]
        except Exception as exc:
            logger.debug("user extractor raised for outgoing message: %s", type(exc).__name__)
            user = None
        if not user:
            user = self._users_by_key.get(api_key)
        return str(user) if user else None

    def _fits(self, data: bytes) -> None:
        """A message the server sends must fit ``max_message_size`` too: a client with the
        same limit (both default to 100 MiB) would close on it (1009) at every delivery.
        A forward is a few hundred bytes larger than the message that arrived."""
        if len(data) > self.config.max_message_size:
            raise DeliveryRefused(
                f"the message is {len(data)} bytes as sent to its receiver, over "
                f"max_message_size ({self.config.max_message_size})", field="message_segment")

    async def send_message(
        self, message: APIMessageBase, target_platform: Optional[str] = None, *,
        ack_timeout: Optional[float] = None, target_user: Optional[str] = None,
    ) -> Dict[str, bool]:
        """Send to every connection of the user and platform named by ``message_dim``.

        Returns ``{connection_uuid: written}`` for the live connections (``{}`` when there
        is none: the message then waits in the outbox until that user connects on that
        platform). With ``ack_timeout``, waits for the peer's ack and reports
        ``{uuid: True}`` for the connection that acked (``{}`` on timeout).
        """
        dim = message.message_dim
        platform = target_platform or dim.platform
        # target_user: deliver to that user instead of the one message_dim names (the hub's
        # forward_to), leaving the payload's message_dim as it is.
        user = target_user or await self._target_user(dim.api_key, platform)
        if user is None:
            return {}
        meta = {"sender_user": "server", "target_user": user, "platform": platform,
                "timestamp": time.time()}
        msg_id = self._ids.new()
        data = dumps(std_envelope(msg_id, message.to_dict(), meta))
        self._fits(data)
        try:
            return await self.cluster.send_to_pair((user, platform), msg_id, data, ack_timeout)
        except DeliveryRefused:
            raise
        except Exception as exc:  # the backend failed: the frame that sent it is not acked
            delivery_failed(exc)
            raise

    async def broadcast_message(
        self, message: APIMessageBase, platform: Optional[str] = None
    ) -> Dict[str, bool]:
        """Send one message to every connection (or every one on ``platform``)."""
        meta = {"sender_user": "server", "target_user": None, "platform": platform,
                "timestamp": time.time()}
        msg_id = self._ids.new()
        data = dumps(std_envelope(msg_id, message.to_dict(), meta))
        self._fits(data)
        selector = Selector("platform", platform) if platform else Selector("all")
        try:
            return await self.cluster.fanout(selector, msg_id, data)
        except DeliveryRefused:
            raise
        except Exception as exc:  # the backend failed: the frame that sent it is not acked
            delivery_failed(exc)
            raise

    async def send_custom_message(
        self, message_type: str, payload: Any, target_user: Optional[str] = None,
        target_platform: Optional[str] = None, connection_uuid: Optional[str] = None,
    ) -> Dict[str, bool]:
        """A custom message (wire type ``custom_<name>``) to a connection, user or platform.

        ``target_user`` alone reaches all that user's connections; with ``target_platform``
        only those on that platform (queued if none is live); ``target_platform`` alone
        reaches the whole platform.
        """
        meta = {"sender_user": "server", "target_user": target_user,
                "platform": target_platform, "timestamp": time.time()}
        msg_id = self._ids.new("custom_")
        data = dumps(custom_envelope(msg_id, normalize_custom_type(message_type), payload, meta))
        self._fits(data)
        try:
            if (connection_uuid is None and target_user is not None
                    and target_platform is not None):
                return await self.cluster.send_to_pair(
                    (target_user, target_platform), msg_id, data)
            selector = (Selector("conn", connection_uuid) if connection_uuid is not None
                        else Selector.for_target(target_user, target_platform, None))
            return await self.cluster.fanout(selector, msg_id, data) if selector else {}
        except DeliveryRefused:
            raise
        except Exception as exc:  # the backend failed: the frame that sent it is not acked
            delivery_failed(exc)
            raise

    # -- handlers and config -----------------------------------------------------------------

    def register_custom_handler(self, message_type: str, handler: Callable[..., Any]) -> None:
        self.config.register_custom_handler(message_type, handler)

    def unregister_custom_handler(self, message_type: str) -> None:
        self.config.unregister_custom_handler(message_type)

    def update_config(self, **kwargs: Any) -> None:
        known = config_field_names(ServerConfig)
        for key, value in kwargs.items():
            if key in known:
                setattr(self.config, key, value)
            else:
                logger.warning("unknown config field ignored: %s", key)
        self.config.ensure_defaults()

    # -- queries --------------------------------------------------------------------------

    def get_user_count(self) -> int:
        """Distinct users connected (cluster: on every node, as of the last presence read)."""
        return self.cluster.user_count()

    def get_connection_count(self) -> int:
        return self.routes.connection_count

    def messages_written(self) -> int:
        """Messages written to this server's connections so far, backlogs on reconnect
        included (a message re-sent after a reconnect counts again; acks do not count).
        Summed over the connections when asked: nothing per message."""
        return self._written_to_closed + sum(p.messages_out for p in self.peers.values())

    def get_user_connections(self, user_id: str) -> Dict[str, Set[str]]:
        """``{platform: {connection uuid}}`` of one user (a copy; empty when unknown)."""
        return self.routes.user_platforms(user_id)

    def get_platform_connections(self, user_id: str, platform: str) -> Set[str]:
        return self.routes.lookup(user_id, platform)

    def get_connection_info(self, connection_uuid: str) -> Optional[Dict[str, Any]]:
        peer = self.peers.get(connection_uuid)
        return {"user_id": peer.user_id, "platform": peer.platform} if peer else None

    def get_connections(self) -> Dict[str, Dict[str, Any]]:
        """Every authenticated connection, keyed by uuid (keys shown as fingerprints).

        Cluster: every node's connections (with ``node``), as of the last presence read."""
        return self.cluster.connections()

    def invalidate_auth(self) -> None:
        """Auth decisions taken for clients not connected yet (a Socket.IO session between
        its handshake and its CONNECT) are taken again: call it after keys were revoked or
        changed, or when the server stops accepting. Otherwise ``on_auth`` runs once per
        connection."""
        self.auth_epoch += 1

    def apply_admin(self, action: str, args: Dict[str, str]) -> None:
        """An admin action from another cluster node, or kept by the cluster and applied
        at start (``ClusterBackend.admin``): handed to ``admin_handler``."""
        handler = self.admin_handler
        if handler is None:
            return
        try:
            handler(action, args)
        except Exception:
            logger.exception("admin action %s from the cluster failed", log_safe(action))

    def close_connection(self, connection_uuid: str, code: int = 1000, reason: str = "") -> bool:
        """Close one live connection of this node with ``code`` (admin disconnect, revoked
        key); False when there is no such connection."""
        peer = self.peers.get(connection_uuid)
        if peer is None or peer.conn is None:
            return False
        peer.conn.close(code, reason)
        return True

    def extract_user(self, api_key: str, platform: str = "") -> Optional[str]:
        """The user id an api_key maps to (known connections first, then a sync extractor)."""
        known = self._users_by_key.get(api_key)
        if known is not None:
            return known
        extractor = self.config.on_auth_extract_user
        result = extractor({"api_key": api_key, "platform": platform}) if extractor else None
        if asyncio.iscoroutine(result):
            result.close()
            raise RuntimeError("on_auth_extract_user is async: use "
                               "'await server.extract_user_async(api_key)'")
        return str(result) if result else None

    async def extract_user_async(self, api_key: str, platform: str = "") -> Optional[str]:
        return await self._target_user(api_key, platform)

    @property
    def user_connections(self) -> Dict[str, Dict[str, Set[str]]]:
        return self.routes.users()

    @property
    def connection_users(self) -> Dict[str, str]:
        return {uuid: peer.user_id for uuid, peer in self.peers.items()}

    @property
    def connection_metadata(self) -> Dict[str, Dict[str, Any]]:
        return {uuid: peer.metadata for uuid, peer in self.peers.items()}

    @property
    def active_handler_tasks(self) -> int:
        return self._handlers.active

    def get_stats(self) -> Dict[str, Any]:
        s = self.stats
        transport = self._transport
        return {
            "total_auth_requests": s["total_auth_requests"],
            "successful_auths": s["successful_auths"],
            "failed_auths": s["failed_auths"],
            "messages_processed": s["messages_processed"],
            "custom_messages_processed": s["custom_messages_processed"],
            "current_users": self.routes.user_count,
            "current_connections": self.routes.connection_count,
            "active_handler_tasks": self._handlers.active,
            "duplicate_messages_ignored": (s["duplicate_messages_ignored"]
                                           + self._after_handling.duplicates),
            "invalid_frames": s["invalid_frames"],
            "handler_errors": self._handlers.failed,
            "limits": self.limits.snapshot(),
            "delivery": self.delivery.stats(),
            "network": {
                "total_connections": s["total_connections"],
                "current_connections": transport.open_count if transport else 0,
                "messages_received": s["messages_received"],
                "messages_sent": s["messages_sent"],
                "bytes_received": s["bytes_received"],
                "bytes_sent": s["bytes_sent"],
            },
        }

    def get_coroutine_status(self) -> Dict[str, Any]:
        return {
            "server_running": self.running,
            "dispatcher_task": None,
            "network_driver_running": self._transport is not None,
            "event_queue_size": 0,
            "active_connections": self.routes.connection_count,
            "registered_users": self.routes.user_count,
            "custom_handlers": len(self.config.custom_handlers),
            "active_handler_tasks": self._handlers.active,
        }

    def connection_uuids(self) -> List[str]:
        return list(self.peers)
