"""API-Server version, client side: ``WebSocketClient`` and its configuration."""

from ..core.models.api import APIMessageBase, BaseMessageInfo, MessageDim, Seg
from .config import ClientConfig, create_client_config, create_ssl_client_config
from .factories import create_client, create_multi_client
from .multi_client import WebSocketMultiClient
from .multi_config import ConnectionEntry, MultiClientConfig
from .websocket_client import WebSocketClient

__all__ = [
    "APIMessageBase",
    "BaseMessageInfo",
    "ClientConfig",
    "ConnectionEntry",
    "MessageDim",
    "MultiClientConfig",
    "Seg",
    "WebSocketClient",
    "WebSocketMultiClient",
    "create_client",
    "create_client_config",
    "create_multi_client",
    "create_ssl_client_config",
]
