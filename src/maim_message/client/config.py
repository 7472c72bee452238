"""Client configuration: every field of the spec with its default, and the factories."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Set

from ..core.defaults import MAX_MESSAGE_SIZE
from ..core.envelope import normalize_custom_type

_logger = logging.getLogger("maim_message.client")

Callback = Callable[..., Any]
PROTOCOLS = ("auto", "websocket", "socketio")  # ClientConfig.protocol: the wire generation


@dataclass
class ClientConfig:
    url: str
    api_key: str
    platform: str = "default"
    connection_uuid: Optional[str] = None

    ssl_enabled: bool = False
    ssl_verify: bool = True
    ssl_ca_certs: Optional[str] = None
    ssl_certfile: Optional[str] = None
    ssl_keyfile: Optional[str] = None
    ssl_check_hostname: bool = True

    auto_reconnect: bool = True
    max_reconnect_attempts: int = 5  # consecutive failures; 0 = retry forever
    reconnect_delay: float = 1.0
    max_reconnect_delay: float = 30.0
    connect_timeout: float = 10.0

    ping_interval: Optional[float] = 20
    ping_timeout: Optional[float] = 10
    close_timeout: float = 10
    max_size: int = MAX_MESSAGE_SIZE

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
    message_cache_max_size: int = 10_000  # unacked messages kept for resend
    message_cache_cleanup_interval: float = 60.0

    headers: Dict[str, str] = field(default_factory=dict)
    # Extra (not in 0.6.8): the wire generation. "auto" detects it per connection (0.6 raw
    # WebSocket first, 0.7 Socket.IO when the server answers 404/400); "websocket" or
    # "socketio" skip the detection.
    protocol: str = "auto"
    # Extra (not in 0.6.8): seconds after which a message the server has not acked is
    # written again on the same connection (the hub withholds the ack of a message it
    # could not store, e.g. while its Redis is away, so that the client re-sends it;
    # each round without an ack doubles the wait, up to 2 minutes); 0: only after a
    # reconnect, as 0.6.8 did.
    resend_interval: float = 10.0

    def validate(self) -> bool:
        missing = self.get_missing_fields()
        if missing:
            _logger.error("client config is missing %s", sorted(missing))
            return False
        if not (self.url.startswith("ws://") or self.url.startswith("wss://")):
            _logger.error("client url must start with ws:// or wss://")
            return False
        if (self.protocol or "auto").lower() not in PROTOCOLS:
            _logger.error("client protocol must be one of %s, not %r", PROTOCOLS, self.protocol)
            return False
        return True

    def get_missing_fields(self) -> Set[str]:
        return {name for name in ("url", "api_key") if not getattr(self, name)}

    def get_logger(self) -> Any:
        return self.custom_logger or _logger

    def get_default_message_handler(self) -> Callback:
        config = self

        async def log_message(message: Any, metadata: Dict[str, Any]) -> None:
            if config.enable_message_log:
                _logger.info("message received: %s", message.message_segment.data)

        return log_message

    def ensure_defaults(self) -> None:
        if self.on_message is None:
            self.on_message = self.get_default_message_handler()
        if self.url.startswith("wss://"):
            self.ssl_enabled = True

    def register_custom_handler(self, message_type: str, handler: Callback) -> None:
        self.custom_handlers[normalize_custom_type(message_type)] = handler

    def unregister_custom_handler(self, message_type: str) -> None:
        self.custom_handlers.pop(normalize_custom_type(message_type), None)


def create_client_config(
    url: Optional[str] = None, api_key: Optional[str] = None, **kwargs: Any
) -> ClientConfig:
    """``ClientConfig(url, api_key, **kwargs)``; a ``wss://`` URL turns TLS on."""
    if not url:
        raise ValueError("create_client_config needs url")
    if not api_key:
        raise ValueError("create_client_config needs api_key")
    if url.startswith("wss://"):
        kwargs.setdefault("ssl_enabled", True)
    return ClientConfig(url=url, api_key=api_key, **kwargs)


def create_ssl_client_config(
    url: Optional[str] = None, api_key: Optional[str] = None, *, host: str = "localhost",
    port: int = 18044, path: str = "/ws", ssl_ca_certs: Optional[str] = None, **kwargs: Any,
) -> ClientConfig:
    """A TLS client config from a ``wss://`` URL, or from host/port/path."""
    if not api_key:
        raise ValueError("create_ssl_client_config needs api_key")
    if not url:
        url = f"wss://{host}:{port}{path}"
    kwargs.pop("ssl_enabled", None)
    return ClientConfig(
        url=url, api_key=api_key, ssl_enabled=True, ssl_ca_certs=ssl_ca_certs, **kwargs
    )
