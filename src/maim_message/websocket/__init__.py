"""0.6.8 module path ``maim_message.websocket``: server, client, data classes and configs.

``ServerNetworkDriver`` and ``ClientNetworkDriver`` name the I/O layers under the API
objects (here: the asyncio WebSocket server transport and the supervised client
connection); 0.6.8 exports them but user code only needs the names to exist.
"""

from __future__ import annotations

from ..client.config import ClientConfig, create_client_config
from ..client.connection import SupervisedConnection as ClientNetworkDriver
from ..client.websocket_client import WebSocketClient
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
from ..server.config import AuthResult, ConfigManager, ServerConfig, create_server_config
from ..server.websocket_server import WebSocketServer
from ..transport.ws_server import WebSocketServerTransport as ServerNetworkDriver

__all__ = [
    "APIMessageBase",
    "AuthResult",
    "BaseMessageInfo",
    "ClientConfig",
    "ClientNetworkDriver",
    "ConfigManager",
    "FormatInfo",
    "GroupInfo",
    "InfoBase",
    "MessageDim",
    "ReceiverInfo",
    "Seg",
    "SenderInfo",
    "ServerConfig",
    "ServerNetworkDriver",
    "TemplateInfo",
    "UserInfo",
    "WebSocketClient",
    "WebSocketServer",
    "create_client_config",
    "create_server_config",
]
