"""Server configuration: every field of the spec, with its default, plus the hub's limits.

Kept a plain mutable dataclass (0.6.8 users set callbacks after construction).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional, Set

from ..core.defaults import DEFAULT_LIMITS, DEFAULT_OUTBOX
from ..core.envelope import normalize_custom_type

_logger = logging.getLogger("maim_message.server")

Callback = Callable[..., Any]


@dataclass
class AuthResult:
    """Outcome of authenticating one connection (on_auth + on_auth_extract_user)."""

    success: bool
    user_id: Optional[str] = None
    error_message: Optional[str] = None


async def _allow_all(metadata: Dict[str, Any]) -> bool:
    return True


async def _default_user(metadata: Dict[str, Any]) -> str:
    return "sys_default"


@dataclass
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 18040
    path: str = "/ws"

    ssl_enabled: bool = False
    ssl_certfile: Optional[str] = None
    ssl_keyfile: Optional[str] = None
    ssl_ca_certs: Optional[str] = None
    ssl_verify: bool = False

    max_message_size: int = DEFAULT_LIMITS.max_message_size

    on_auth: Optional[Callback] = None
    on_auth_extract_user: Optional[Callback] = None
    on_message: Optional[Callback] = None
    on_connect: Optional[Callback] = None
    on_disconnect: Optional[Callback] = None
    custom_handlers: Dict[str, Callback] = field(default_factory=dict)

    enable_stats: bool = True
    stats_callback: Optional[Callback] = None
    log_level: str = "INFO"
    enable_connection_log: bool = True
    enable_message_log: bool = True
    custom_logger: Optional[Any] = None

    enable_message_cache: bool = True
    message_cache_ttl: int = 300
    message_cache_max_size: int = 1000
    message_cache_cleanup_interval: float = 60.0

    # Transport limits (not in 0.6.8; defaults keep 0.6.8 peers working).
    ping_interval: Optional[float] = DEFAULT_LIMITS.ping_interval
    ping_timeout: Optional[float] = DEFAULT_LIMITS.ping_timeout
    handshake_timeout: float = DEFAULT_LIMITS.handshake_timeout
    close_timeout: float = DEFAULT_LIMITS.close_timeout
    max_write_buffer: int = DEFAULT_LIMITS.max_write_buffer
    # When a received frame is acked (docs/delivery.md): "receipt" = once it is decoded
    # and valid, before the handler runs (0.6.8, the spec); "handled" = once its handler
    # returned and what it queued is committed (the hub; nothing acked is lost).
    ack: str = "receipt"
    # ids remembered per sender (user, platform); 4x that in all (core/dedupe.py)
    dedupe_window: int = 100_000
    dedupe_ttl: float = 3600.0
    reuse_port: bool = False
    # 0.7.x (Socket.IO) clients on the same host, port and path (Engine.IO at "<path>/");
    # False serves 0.6.x clients only (docs/migration.md "0.6 and 0.7 peers").
    enable_socketio: bool = True

    # Abuse limits (docs/security.md lists them; None = off). A hit closes the connection
    # (or refuses the handshake), is logged once and counted in get_stats()["limits"].
    idle_timeout: Optional[float] = DEFAULT_LIMITS.idle_timeout  # no data frame -> close 1001
    rate_limit_per_second: Optional[float] = 5000.0  # token bucket per connection -> 1008
    rate_limit_burst: int = 100_000  # messages a connection may send at once
    max_connections_per_key: Optional[int] = 1000  # more -> HTTP 429 at the handshake
    allowed_origins: Optional[List[str]] = None  # browser Origin allowlist -> HTTP 403

    # Delivery (at-least-once): the outbox keeps every message until the peer acks it.
    # ``enable_message_cache=False`` turns it off (fire-and-forget, like a raw socket).
    outbox_path: Optional[str] = None  # SQLite file for a durable outbox; None = memory
    outbox_max_per_pair: int = DEFAULT_OUTBOX.max_per_pair
    outbox_max_bytes: int = DEFAULT_OUTBOX.max_bytes
    # One receiving user's share of outbox_max_bytes (a flood to one user evicts only
    # that user's messages) and how many platforms may hold queued messages for one user
    # (beyond it, a message for a platform with no live connection is refused).
    outbox_max_bytes_per_user: int = DEFAULT_OUTBOX.max_bytes_per_user
    outbox_max_pairs_per_user: int = DEFAULT_OUTBOX.max_pairs_per_user
    outbox_ttl: float = DEFAULT_OUTBOX.ttl
    send_buffer_high: int = DEFAULT_LIMITS.send_buffer_high
    slow_consumer_timeout: float = DEFAULT_LIMITS.slow_consumer_timeout

    # Cluster (docs/cluster.md): "local" = one process; "redis" = many hub processes share
    # routing, presence and the outbox through Redis (needs ``maim_message[cluster]``).
    cluster_backend: Any = "local"  # "local" | "redis" | a ClusterBackend object
    cluster_redis_url: Optional[str] = None  # redis://[:password@]host:6379/0
    cluster_node_id: Optional[str] = None  # None: <hostname>-<pid>-<random>
    cluster_prefix: str = "maim_hub"  # Redis key and channel prefix (one hub per prefix)
    cluster_heartbeat_interval: float = 1.0  # s between presence heartbeats
    cluster_node_ttl: float = 5.0  # s without a heartbeat before a node counts as dead
    # s a handled frame stays recorded cluster-wide (a re-send to another node within it
    # is not handled again); several URLs in cluster_redis_url (commas) shard the pairs
    cluster_dedupe_ttl: float = 60.0
    # claim each frame cluster-wide before its handler runs: a client that re-sends a
    # frame to another node while a live node still handles it gets it handled once
    # (costs Redis a write per frame; docs/cluster.md "The delivery guarantee")
    cluster_frame_claims: bool = False
    # s Redis may stay unreachable before a send waiting for it raises ClusterError (the
    # commands stay queued); counted from the first failed batch, which a silent Redis
    # takes the URL's socket_timeout (5 s) to produce
    cluster_write_timeout: float = 10.0

    def validate(self) -> bool:
        return not self.get_missing_fields()

    def get_missing_fields(self) -> Set[str]:
        missing: Set[str] = set()
        if self.ack not in ("receipt", "handled"):
            missing.add("ack")
        if self.ssl_enabled:
            if not self.ssl_certfile:
                missing.add("ssl_certfile")
            if not self.ssl_keyfile:
                missing.add("ssl_keyfile")
        return missing

    def get_logger(self) -> Any:
        return self.custom_logger or _logger

    def get_default_auth_handler(self) -> Callback:
        return _allow_all

    def get_default_user_extractor(self) -> Callback:
        return _default_user

    def get_default_message_handler(self) -> Callback:
        config = self

        async def log_message(message: Any, metadata: Dict[str, Any]) -> None:
            if config.enable_message_log:
                _logger.info(
                    "message from %s: %s", metadata.get("platform", "unknown"),
                    message.message_segment.data,
                )

        return log_message

    def ensure_defaults(self) -> None:
        if self.on_auth is None:
            self.on_auth = self.get_default_auth_handler()
        if self.on_auth_extract_user is None:
            self.on_auth_extract_user = self.get_default_user_extractor()
        if self.on_message is None:
            self.on_message = self.get_default_message_handler()

    def register_custom_handler(self, message_type: str, handler: Callback) -> None:
        self.custom_handlers[normalize_custom_type(message_type)] = handler

    def unregister_custom_handler(self, message_type: str) -> None:
        self.custom_handlers.pop(normalize_custom_type(message_type), None)


def create_server_config(**kwargs: Any) -> ServerConfig:
    """``ServerConfig(**kwargs)``; an unknown key raises TypeError naming it."""
    return ServerConfig(**kwargs)


def create_ssl_server_config(
    host: str = "0.0.0.0", port: int = 18044, ssl_certfile: Optional[str] = None,
    ssl_keyfile: Optional[str] = None, **kwargs: Any,
) -> ServerConfig:
    kwargs.pop("ssl_enabled", None)
    return ServerConfig(
        host=host, port=port, ssl_enabled=True, ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile, **kwargs,
    )


def config_field_names(cls: type) -> Set[str]:
    return {f.name for f in fields(cls)}


class ConfigManager:
    """Holds one server and one client config; validates on set and update."""

    def __init__(self) -> None:
        self._server: Optional[ServerConfig] = None
        self._client: Optional[Any] = None

    def set_server_config(self, config: ServerConfig) -> None:
        if not config.validate():
            raise ValueError(
                f"invalid server config, missing: {sorted(config.get_missing_fields())}"
            )
        config.ensure_defaults()
        self._server = config

    def set_client_config(self, config: Any) -> None:
        if not config.validate():
            raise ValueError(
                f"invalid client config, missing: {sorted(config.get_missing_fields())}"
            )
        config.ensure_defaults()
        self._client = config

    def get_server_config(self) -> Optional[ServerConfig]:
        return self._server

    def get_client_config(self) -> Optional[Any]:
        return self._client

    def update_server_config(self, **kwargs: Any) -> None:
        if self._server is None:
            raise ValueError("no server config set")
        _update(self._server, kwargs)

    def update_client_config(self, **kwargs: Any) -> None:
        if self._client is None:
            raise ValueError("no client config set")
        _update(self._client, kwargs)

    def validate_all_configs(self) -> bool:
        return all(c.validate() for c in (self._server, self._client) if c is not None)


def _update(config: Any, changes: Dict[str, Any]) -> None:
    known = config_field_names(type(config))
    for key, value in changes.items():
        if key in known:
            setattr(config, key, value)
        else:
            _logger.warning("unknown config field ignored: %s", key)
    if not config.validate():
        raise ValueError(f"invalid config, missing: {sorted(config.get_missing_fields())}")
