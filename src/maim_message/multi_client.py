"""0.6.8 module path ``maim_message.multi_client``: the multi-connection client."""

from __future__ import annotations

from .client.multi_client import WebSocketMultiClient, match_connection
from .client.multi_config import ConnectionEntry, MultiClientConfig
from .core.models.api import APIMessageBase

__all__ = [
    "APIMessageBase",
    "ConnectionEntry",
    "MultiClientConfig",
    "WebSocketMultiClient",
    "match_connection",
]
