"""0.6.8 module path ``maim_message.tcp_connection``.

The names resolve to this package's legacy TCP transports; their constructors differ from
0.6.8's (they are driven by ``MessageServer`` / ``MessageClient``).
"""

from __future__ import annotations

from .legacy.tcp_client import TCPClientConnection
from .legacy.tcp_server import TCPServerConnection

__all__ = ["TCPClientConnection", "TCPServerConnection"]
