"""The hub: a :class:`WebSocketServer` configured from a key table, plus routing of
received messages, metrics, health endpoints, the live page and graceful shutdown.

Routing of a standard message a client sends (``message_dim`` names a platform):

1. the sender's key has ``forward_to = "<user>"``: to that user on ``message_dim.platform``
   (an adapter's messages reach the bot core, whatever key the adapter puts in its dim);
2. else to the (user, platform) ``message_dim`` names, the user found through the key
   table (``message_dim.api_key``), exactly as ``WebSocketServer.send_message`` does
   (a bot core's reply naming the adapter's key reaches the adapter);
3. a message whose dim names the sender's own (user, platform) goes to the *other* live
   connections of that pair (e.g. two clients sharing the generated key).

All cases go through the server's outbox (at-least-once: kept until the receiver acks,
delivered when it connects, held back while a receiver does not read); case 3 queues one
entry per other connection. The hub acks a frame only once its forward is committed
(``ack="handled"``); a frame it cannot route is answered with ``sys_error``, not acked.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any, Callable, Dict, List, Optional, Set

from ..core.codec import dumps
from ..core.defaults import limit_values
from ..core.envelope import MessageIdFactory, std_envelope
from ..core.identity import fingerprint
from ..core.models.api import APIMessageBase
from ..core.redact import log_safe
from ..errors import DeliveryRefused
from ..server.config import ServerConfig
from ..server.websocket_server import WebSocketServer
from .admin import KEY_REVOKED, AdminPlane
from .admin_auth import TokenCheck, admin_check, generate_token, metrics_check
from .auth import GENERATED_USER, HubAuth, KeyTable, generate_key
from .config import HubConfig, HubConfigError, KeyEntry
from .gc_tuning import tune_for_serving
from .http import make_routes
from .metrics import HubMetrics
from .reload import apply_reloadable, compare
from .revocations import RevokedFile
from .snapshot import RateWindow, hub_snapshot

logger = logging.getLogger("maim_message.hub")

Loader = Callable[[], HubConfig]


class Hub:
    """One hub instance. ``await hub.start()``, then ``await hub.shutdown()``.

    ``loader`` re-reads the configuration for :meth:`reload` (the CLI passes one that
    reads the same file, environment and options as at start-up).
    """

    def __init__(self, config: HubConfig, loader: Optional[Loader] = None) -> None:
        self.config = config
        self.loader = loader
        self.generated_key: Optional[str] = None
        self.generated_admin_token: Optional[str] = None
        self.revoked_file = RevokedFile(config.admin.revoked_file)
        # digests of revoked keys (the file's, then the cluster's kept ones at start)
        self.revoked: Set[bytes] = self.revoked_file.load()
        self.keys = KeyTable(self._entries(config), self.revoked)
        if not config.admin.configured:
            self.generated_admin_token = generate_token()
        self.admin_check: TokenCheck = admin_check(config.admin, self.generated_admin_token)
        self.metrics_check: Optional[TokenCheck] = self._metrics_check(config)
        self.admin = AdminPlane(self)
        self.on_reload: Optional[Callable[[Hub, Dict[str, Any]], None]] = None
        self.state = "starting"
        self.started_at = time.time()
        self.messages_in = 0
        self._queued = 0  # accepted for a receiver with no live connection (in the outbox)
        self.unroutable = 0
        self.metrics = HubMetrics(self)
        self.auth = HubAuth(self.keys, on_reject=self.metrics.rejected)
        self.server = WebSocketServer(self._server_config())
        self.server.http_routes.update(make_routes(self))
        self.server.admin_handler = self.admin.apply  # actions of other cluster nodes
        self._ids = MessageIdFactory()
        self._rates = RateWindow()
        self._tasks: List[asyncio.Task[None]] = []

    def _entries(self, config: HubConfig) -> List[KeyEntry]:
        """The configured keys, or one generated key (kept across reloads without keys)."""
        if config.keys:
            return list(config.keys)
        if self.generated_key is None:
            self.generated_key = generate_key()
        return [KeyEntry(self.generated_key, GENERATED_USER, (), "generated")]

    def _metrics_check(self, config: HubConfig) -> Optional[TokenCheck]:
        if not config.admin.metrics_protected:
            return None
        return metrics_check(config.admin, self.generated_admin_token)

    def _server_config(self) -> ServerConfig:
        cfg, limits, tls, outbox = (
            self.config, self.config.limits, self.config.tls, self.config.outbox)
        return ServerConfig(
            host=cfg.host, port=cfg.port, path=cfg.path,
            ssl_enabled=tls.enabled, ssl_certfile=tls.certfile, ssl_keyfile=tls.keyfile,
            ssl_ca_certs=tls.ca_certs, ssl_verify=tls.verify_client,
            # the hub writes 0 for "off" where ServerConfig takes None
            **{**limit_values(limits), "ping_interval": limits.ping_interval or None,
               "ping_timeout": limits.ping_timeout or None,
               "idle_timeout": limits.idle_timeout or None},
            rate_limit_per_second=limits.rate_limit_per_second or None,
            rate_limit_burst=limits.rate_limit_burst,
            max_connections_per_key=limits.max_connections_per_key or None,
            allowed_origins=list(limits.allowed_origins) or None,
            enable_message_cache=outbox.backend != "none",
            outbox_path=outbox.path if outbox.backend == "sqlite" else None,
            outbox_max_per_pair=outbox.max_per_pair, outbox_max_bytes=outbox.max_bytes,
            outbox_ttl=outbox.ttl,
            on_auth=self.auth.on_auth, on_auth_extract_user=self.auth.on_auth_extract_user,
            on_message=self._on_message, enable_message_log=False,
            ack="handled",  # ack once the forward is committed: nothing acked is lost
            cluster_backend=cfg.cluster.backend, cluster_redis_url=cfg.cluster.redis_url,
            cluster_prefix=cfg.cluster.channel_prefix,
            cluster_frame_claims=cfg.cluster.frame_claims,
            reuse_port=cfg.cluster.backend != "local",
        )

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def port(self) -> Optional[int]:
        return self.server.port

    async def start(self) -> None:
        """Bind and start serving; raises ServerStartError when the port is unavailable."""
        self.started_at = time.time()
        await self.server.start()
        self.state = "ready"
        self._tasks.append(asyncio.ensure_future(self._sample_loop()))
        if self.config.status_interval > 0:
            self._tasks.append(asyncio.ensure_future(self._status_loop()))

    async def shutdown(self) -> None:
        """Stop accepting, let in-flight messages finish, flush the outbox, close clients."""
        if self.state in ("draining", "stopped"):
            return
        self.state = "draining"
        self.auth.accepting = False
        self.server.invalidate_auth()  # Socket.IO sessions not CONNECTed yet are refused
        logger.info("shutting down: refusing new connections, draining")
        deadline = time.monotonic() + self.config.limits.shutdown_grace
        while self.server.active_handler_tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self.server.stop()  # closes clients (1001) and the outbox (sqlite: committed)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.state = "stopped"
        logger.info("hub stopped (%d messages in, %d out)", self.messages_in, self.messages_out)

    async def _sample_loop(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(1.0)

    @property
    def messages_out(self) -> int:
        """Messages written to clients (the server counts them per connection)."""
        return self.server.messages_written()

    def _sample(self) -> None:
        net = self.server.stats
        self._rates.add(time.monotonic(), (
            self.messages_in, self.messages_out, net["messages_received"], net["messages_sent"],
        ))

    async def _status_loop(self) -> None:
        while self.config.status_interval > 0:
            await asyncio.sleep(self.config.status_interval)
            snap = self.snapshot()
            logger.info("status: %d connections, %d users, in %.1f/s, out %.1f/s, "
                        "unroutable %d", snap["connections"], snap["users"], snap["rate_in"],
                        snap["rate_out"], snap["unroutable"])

    # -- reload ------------------------------------------------------------------------------

    def reload(self) -> Dict[str, Any]:
        """Re-read the configuration and apply what can change while running.

        A configuration with problems is refused as a whole (each problem logged with its
        file and line) and the hub keeps running on the previous one. Connections whose
        key was removed, or no longer allows their platform or user, are closed (4003).
        """
        if self.loader is None:
            return {"ok": False, "errors": ["this hub has no configuration source to re-read"],
                    "applied": [], "restart_needed": []}
        try:
            new = self.loader()
        except HubConfigError as exc:
            for line in exc.problems:
                logger.error("reload refused: %s", line)
            logger.error("reload refused (%d problem(s)): still running on the previous "
                         "configuration", len(exc.problems))
            return {"ok": False, "errors": exc.problems, "applied": [], "restart_needed": []}
        applied, restart = compare(self.config, new)
        had_status_loop = self.config.status_interval > 0
        apply_reloadable(self.config, new)
        self.revoked_file = RevokedFile(self.config.admin.revoked_file)
        self.revoked.update(self.revoked_file.load())
        self.keys = KeyTable(self._entries(self.config), self.revoked)
        self.auth.table = self.keys
        self.server.invalidate_auth()
        if self.config.admin.configured:  # the printed start-up token stops working
            self.generated_admin_token = None
        self.admin_check = admin_check(self.config.admin, self.generated_admin_token)
        self.metrics_check = self._metrics_check(self.config)
        self.server.update_config(rate_limit_per_second=self.config.limits.rate_limit_per_second
                                  or None, rate_limit_burst=self.config.limits.rate_limit_burst)
        if not had_status_loop and self.config.status_interval > 0 and self.state == "ready":
            self._tasks.append(asyncio.ensure_future(self._status_loop()))
        closed = self._close_invalidated()
        for name in restart:
            logger.warning("reload: %s needs a restart; still using the running value", name)
        logger.info("configuration reloaded: %s; %d connection(s) closed",
                    ", ".join(applied) or "nothing changed", len(closed))
        result = {"ok": True, "errors": [], "applied": applied, "restart_needed": restart,
                  "closed": closed}
        if self.on_reload is not None:
            self.on_reload(self, result)
        return result

    def reload_from_signal(self) -> None:
        logger.info("received SIGHUP: reloading the configuration")
        self.reload()

    def _close_invalidated(self) -> List[str]:
        closed = []
        for uuid, peer in list(self.server.peers.items()):
            entry = self.keys.lookup(peer.api_key)
            if entry is None or not entry.allows(peer.platform) or entry.user != peer.user_id:
                closed.append(uuid)
                self.server.close_connection(uuid, KEY_REVOKED,
                                             "API key removed or changed by a reload")
        return closed

    # -- routing ---------------------------------------------------------------------------

    async def _on_message(self, message: APIMessageBase, metadata: Dict[str, Any]) -> None:
        started = time.perf_counter()
        self.messages_in += 1
        try:
            await self._route(message, metadata)
        finally:
            self.metrics.latency.observe(time.perf_counter() - started)

    async def _route(self, message: APIMessageBase, metadata: Dict[str, Any]) -> None:
        dim = message.message_dim
        platform = dim.platform
        sender = self.keys.lookup(metadata.get("api_key"))
        if sender is not None and sender.forward_to:
            await self._deliver(message, sender.forward_to)
            return
        target = self.keys.lookup(dim.api_key)
        if target is None:
            self.unroutable += 1
            logger.debug("unroutable: message_dim names an unknown key (%s) from %s",
                         fingerprint(dim.api_key), log_safe(metadata.get("uuid")))
            raise DeliveryRefused("message_dim.api_key names no known key",
                                  field="message_dim.api_key")
        if (target.user, platform) != (metadata.get("user_id"), metadata.get("platform")):
            await self._deliver(message, target.user)
            return
        self._to_pair_peers(message, target.user, platform, metadata.get("uuid"))

    async def _deliver(self, message: APIMessageBase, user: str) -> None:
        """Through the server's outbox: written now, or kept until ``user`` connects."""
        platform = message.message_dim.platform
        if not self.keys.may_connect(user, platform):  # it would wait for nobody, for ttl
            self.unroutable += 1
            raise DeliveryRefused(f"no key of the receiving user may connect on platform "
                                  f"{log_safe(platform, 40)!r}: it could never be delivered",
                                  field="message_dim.platform")
        try:
            results = await self.server.send_message(message, target_user=user)
        except DeliveryRefused:
            self.unroutable += 1
            raise
        if not any(results.values()):
            if not self.server.delivery.enabled:
                self.unroutable += 1
            elif self.config.cluster.backend != "redis":
                self._queued += 1
            # (cluster: the result is the receiver's connections as of its previous
            # write; the store's answer tells: ``queued``)

    @property
    def queued(self) -> int:
        """Messages kept for a receiver connected nowhere (in cluster mode: on no node,
        as the store saw it when it wrote them)."""
        if self.config.cluster.backend == "redis":  # (kept: after stop() it reads no more)
            stats = getattr(self.server.cluster, "stats", None)
            if stats is not None:
                self._queued = int(stats().get("sends_to_offline", self._queued))
        return self._queued

    def _to_pair_peers(
        self, message: APIMessageBase, user: str, platform: str, origin: Optional[str]
    ) -> None:
        """To the other connections of the sender's own pair: one outbox entry each (so
        a connection that does not read holds them back, like any other delivery)."""
        server = self.server
        targets = [u for u in server.routes.lookup(user, platform) if u != origin]
        if not targets:
            self.unroutable += 1
            logger.debug("unroutable: nobody else on user=%s platform=%s", log_safe(user),
                         log_safe(platform))
            return
        body = message.to_dict()
        meta = {"sender_user": "server", "target_user": user, "platform": platform,
                "timestamp": time.time()}
        for uuid in targets:
            msg_id = self._ids.new()
            data = dumps(std_envelope(msg_id, body, meta))
            server.delivery.to_connections([uuid], msg_id, data, only=True)

    # -- state for the page and /metrics ------------------------------------------------------

    def snapshot(self) -> Dict[str, Any]:
        """Everything the live page and the metrics show; no secrets (user ids only)."""
        return hub_snapshot(self)


async def serve(
    config: HubConfig, *, announce: Optional[Any] = None, loader: Optional[Loader] = None,
    on_reload: Optional[Callable[[Hub, Dict[str, Any]], None]] = None,
) -> int:
    """Run a hub until SIGTERM/SIGINT, then shut down gracefully; returns the exit code.

    ``announce(hub)`` is called once the port is bound (the CLI prints its summary there).
    SIGHUP reloads the configuration through ``loader`` (then ``on_reload(hub, result)``).
    A second SIGTERM/SIGINT during shutdown exits at once.
    """
    hub = Hub(config, loader)
    if on_reload is not None:
        hub.on_reload = on_reload
    # The hub owns this process: its collector is spaced out. Before the listener starts,
    # so no connection's objects are frozen (a frozen cycle is never collected).
    tune_for_serving()
    await hub.start()
    if announce is not None:
        announce(hub)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = [signal.SIGINT, signal.SIGTERM]
    installed: List[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            logger.warning("second %s: exiting without draining", sig.name)
            raise SystemExit(1)
        logger.info("received %s", sig.name)
        stop.set()

    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None:
        try:
            loop.add_signal_handler(hangup, hub.reload_from_signal)
            installed.append(hangup)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass
    for sig in signals:
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            signal.signal(sig, lambda s, f: loop.call_soon_threadsafe(
                on_signal, signal.Signals(s)))
    try:
        await stop.wait()
    finally:
        await hub.shutdown()
        for sig in installed:
            loop.remove_signal_handler(sig)
    return 0
