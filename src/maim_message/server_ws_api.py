"""0.6.8 module path ``maim_message.server_ws_api``: the API-Server hub."""

from __future__ import annotations

from .core.models.api import APIMessageBase, BaseMessageInfo, MessageDim, Seg
from .server.config import AuthResult, ServerConfig
from .server.websocket_server import WebSocketServer

__all__ = [
    "APIMessageBase",
    "AuthResult",
    "BaseMessageInfo",
    "MessageDim",
    "Seg",
    "ServerConfig",
    "WebSocketServer",
]
