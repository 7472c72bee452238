"""0.6.8 module path ``maim_message.api``: the legacy server and client."""

from __future__ import annotations

from .legacy.dispatch import HandlerRegistry as BaseMessageHandler
from .legacy.server import MessageServer
from .legacy.ws_client import MessageClient

__all__ = ["BaseMessageHandler", "MessageClient", "MessageServer"]
