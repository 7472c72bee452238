"""API-Server version, client side: ``WebSocketClient`` and its configuration."""

from ..core.models.api import APIMessageBase, BaseMessageInfo, MessageDim, Seg
from .config import ClientConfig, create_client_config, create_ssl_client_config
from .websocket_client import WebSocketClient

__all__ = [
    "APIMessageBase",
    "BaseMessageInfo",
    "ClientConfig",
    "MessageDim",
    "Seg",
    "WebSocketClient",
    "create_client_config",
    "create_ssl_client_config",
]
