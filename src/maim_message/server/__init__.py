"""API-Server version, server side: ``WebSocketServer`` and its configuration."""

from ..core.models.api import (
    APIMessageBase,
    BaseMessageInfo,
    FormatInfo,
    GroupInfo,
    InfoBase,
    MessageDim,
    ReceiverInfo,
    Seg,
    SenderInfo,
    TemplateInfo,
    UserInfo,
)
from .asgi import WebSocketASGI, mount_websocket_server
from .config import (
    AuthResult,
    ConfigManager,
    ServerConfig,
    create_server_config,
    create_ssl_server_config,
)
from .websocket_server import WebSocketServer

__all__ = [
    "APIMessageBase",
    "AuthResult",
    "BaseMessageInfo",
    "ConfigManager",
    "FormatInfo",
    "GroupInfo",
    "InfoBase",
    "MessageDim",
    "ReceiverInfo",
    "Seg",
    "SenderInfo",
    "ServerConfig",
    "TemplateInfo",
    "UserInfo",
    "WebSocketASGI",
    "WebSocketServer",
    "create_server_config",
    "create_ssl_server_config",
    "mount_websocket_server",
]
