"""Configuration of the multi-connection client: ``ConnectionEntry`` and ``MultiClientConfig``.

Same names, fields and defaults as 0.6.8's ``ws_config`` (api-surface §4.6), so code that
builds a ``MultiClientConfig`` for 0.6.8 keeps working.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Set

from ..core.envelope import normalize_custom_type

_logger = logging.getLogger(__name__)

Callback = Callable[..., Any]


class ConfigValidator(ABC):
    """Abstract base of the configuration classes: ``validate()`` and ``get_missing_fields()``."""

    @abstractmethod
    def validate(self) -> bool:
        """True when the configuration can be used."""

    @abstractmethod
    def get_missing_fields(self) -> Set[str]:
        """Names of required fields that are empty."""


@dataclass
class ConnectionEntry:
    """One named connection of a :class:`MultiClientConfig`."""

    name: str
    url: str
    api_key: str
    platform: str = "default"

    ssl_enabled: bool = False
    ssl_verify: bool = True
    ssl_ca_certs: Optional[str] = None
    ssl_certfile: Optional[str] = None
    ssl_keyfile: Optional[str] = None
    ssl_check_hostname: bool = True

    max_reconnect_attempts: int = 5
    reconnect_delay: float = 2.0

    headers: Dict[str, str] = field(default_factory=dict)

    def to_kwargs(self) -> Dict[str, Any]:
        """Every field except name/url/api_key/platform (what ``register_connection`` takes)."""
        return {
            "ssl_enabled": self.ssl_enabled,
            "ssl_verify": self.ssl_verify,
            "ssl_ca_certs": self.ssl_ca_certs,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_check_hostname": self.ssl_check_hostname,
            "max_reconnect_attempts": self.max_reconnect_attempts,
            "reconnect_delay": self.reconnect_delay,
            "headers": self.headers,
        }


def _is_default_handler(func: Optional[Callback]) -> bool:
    return bool(getattr(func, "_maim_default_handler", False))


@dataclass
class MultiClientConfig(ConfigValidator):
    """Connections, callbacks and options of a ``WebSocketMultiClient``."""

    connections: Dict[str, ConnectionEntry] = field(default_factory=dict)
    on_message: Optional[Callback] = None
    custom_handlers: Dict[str, Callback] = field(default_factory=dict)

    auto_connect_on_start: bool = False
    connect_timeout: float = 10.0

    enable_stats: bool = True
    stats_callback: Optional[Callback] = None
    log_level: str = "INFO"
    enable_connection_log: bool = True
    enable_message_log: bool = True
    custom_logger: Optional[Any] = None

    def get_logger(self) -> Any:
        return self.custom_logger if self.custom_logger is not None else _logger

    def validate(self) -> bool:
        for name, conn in self.connections.items():
            if not conn.url or not conn.api_key:
                _logger.error("connection %r needs url and api_key", name)
                return False
            if not (conn.url.startswith("ws://") or conn.url.startswith("wss://")):
                _logger.error("connection %r: url must start with ws:// or wss://", name)
                return False
        return True

    def get_missing_fields(self) -> Set[str]:
        return set()

    def register_connection(
        self, name: str, url: str, api_key: str, platform: str = "default", **kwargs: Any
    ) -> None:
        """Add (or replace) a named connection; unknown keyword -> TypeError."""
        self.connections[name] = ConnectionEntry(
            name=name, url=url, api_key=api_key, platform=platform, **kwargs
        )

    def add_connection(
        self, name: str, url: str, api_key: str, platform: str = "default", **kwargs: Any
    ) -> None:
        self.register_connection(name, url, api_key, platform, **kwargs)

    def register_ssl_connection(
        self, name: str, url: str, api_key: str, platform: str = "default",
        ssl_ca_certs: Optional[str] = None, **kwargs: Any,
    ) -> None:
        """A TLS connection; a ``ws://`` URL is rewritten to ``wss://``."""
        if url.startswith("ws://"):
            url = "wss://" + url[len("ws://"):]
        kwargs["ssl_enabled"] = True
        self.register_connection(name, url, api_key, platform, ssl_ca_certs=ssl_ca_certs,
                                 **kwargs)

    def add_ssl_connection(
        self, name: str, url: str, api_key: str, platform: str = "default",
        ssl_ca_certs: Optional[str] = None, **kwargs: Any,
    ) -> None:
        self.register_ssl_connection(name, url, api_key, platform, ssl_ca_certs, **kwargs)

    def remove_connection(self, name: str) -> bool:
        return self.connections.pop(name, None) is not None

    def get_connection(self, name: str) -> Optional[ConnectionEntry]:
        return self.connections.get(name)

    def list_connections(self) -> Dict[str, ConnectionEntry]:
        return dict(self.connections)

    def register_custom_handler(self, message_type: str, handler: Callback) -> None:
        self.custom_handlers[normalize_custom_type(message_type)] = handler

    def unregister_custom_handler(self, message_type: str) -> None:
        self.custom_handlers.pop(normalize_custom_type(message_type), None)

    def get_default_message_handler(self) -> Callback:
        config = self

        async def log_message(message: Any, metadata: Dict[str, Any]) -> None:
            if config.enable_message_log:
                _logger.info("message on %s: %s", metadata.get("connection_name", "?"),
                             message.message_segment.data)

        log_message._maim_default_handler = True  # type: ignore[attr-defined]
        return log_message

    def ensure_defaults(self) -> None:
        if self.on_message is None:
            self.on_message = self.get_default_message_handler()

    def has_user_message_handler(self) -> bool:
        """True when ``on_message`` was set by the user (not the logging default)."""
        return self.on_message is not None and not _is_default_handler(self.on_message)


def create_multi_client_config(**kwargs: Any) -> MultiClientConfig:
    """``MultiClientConfig(**kwargs)`` with defaults filled in."""
    config = MultiClientConfig(**kwargs)
    config.ensure_defaults()
    return config


def create_multi_client_config_with_connections(
    connections: Dict[str, Dict[str, Any]], **kwargs: Any
) -> MultiClientConfig:
    """A config with ``{name: {"url", "api_key", "platform"?, ...}}`` connections.

    As in 0.6.8, ``url``/``api_key``/``platform`` are popped from each inner dict.
    """
    config = MultiClientConfig(**kwargs)
    for name, spec in connections.items():
        url = spec.pop("url")
        api_key = spec.pop("api_key")
        platform = spec.pop("platform", "default")
        config.register_connection(name, url, api_key, platform, **spec)
    config.ensure_defaults()
    return config
