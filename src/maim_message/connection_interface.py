"""0.6.8 module path ``maim_message.connection_interface``."""

from __future__ import annotations

from .legacy.interfaces import (
    BaseConnection,
    ClientConnectionInterface,
    ConnectionInterface,
    ServerConnectionInterface,
)

__all__ = [
    "BaseConnection",
    "ClientConnectionInterface",
    "ConnectionInterface",
    "ServerConnectionInterface",
]
