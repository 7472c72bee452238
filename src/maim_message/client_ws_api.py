"""0.6.8 module path ``maim_message.client_ws_api``: the single-connection client."""

from __future__ import annotations

from .client.config import ClientConfig
from .client.websocket_client import WebSocketClient
from .core.models.api import APIMessageBase

__all__ = ["APIMessageBase", "ClientConfig", "WebSocketClient"]
