"""0.6.8 module path ``maim_message.ws_connection`` (legacy WebSocket transports).

The names resolve to this package's legacy transports; their constructors differ from
0.6.8's (they are driven by ``MessageServer`` / ``MessageClient``). These are *not* the
API-Server ``WebSocketServer``/``WebSocketClient`` of ``maim_message.server``/``.client``.
"""

from __future__ import annotations

from .legacy.ws_server import LegacyWebSocketServer as WebSocketServer
from .legacy.ws_transport import WebSocketClientTransport as WebSocketClient

__all__ = ["WebSocketClient", "WebSocketServer"]
