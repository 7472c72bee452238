"""``create_client`` / ``create_multi_client``: one-call client construction (spec changelog)."""

from __future__ import annotations

from typing import Any, Dict, Optional

from .config import ClientConfig, create_client_config
from .multi_client import WebSocketMultiClient
from .multi_config import MultiClientConfig
from .websocket_client import WebSocketClient


def create_client(url: str, api_key: str, **kwargs: Any) -> WebSocketClient:
    """``WebSocketClient(create_client_config(url, api_key, **kwargs))``."""
    return WebSocketClient(create_client_config(url, api_key, **kwargs))


def create_multi_client(
    connections: Optional[Dict[str, Dict[str, Any]]] = None, *,
    default_config: Optional[ClientConfig] = None, **kwargs: Any,
) -> WebSocketMultiClient:
    """A multi-client with ``{name: {"url", "api_key", "platform"?, **options}}`` registered.

    Remaining keywords are :class:`MultiClientConfig` fields (``on_message``,
    ``auto_connect_on_start``, ...).
    """
    client = WebSocketMultiClient(MultiClientConfig(**kwargs), default_config=default_config)
    for name, spec in (connections or {}).items():
        options = dict(spec)
        url = options.pop("url")
        api_key = options.pop("api_key")
        platform = options.pop("platform", "default")
        client.register_connection(name, url, api_key, platform, **options)
    return client
