"""WebSocketClient: the single-connection client of the API-Server version."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional

from ..core.envelope import normalize_custom_type
from ..core.identity import fingerprint
from ..core.models.api import APIMessageBase
from ..core.redact import Redactor
from ..runtime.callbacks import HandlerTasks
from ..runtime.unused_fields import CLIENT_UNUSED, warn_unused_fields
from .config import ClientConfig
from .connection import SupervisedConnection, new_single_uuid

logger = logging.getLogger(__name__)


class WebSocketClient:
    """One connection to a server, reconnecting with exponential back-off until stopped."""

    def __init__(self, config: ClientConfig) -> None:
        if not config.validate():
            raise ValueError("invalid ClientConfig: url (ws:// or wss://) and api_key are required")
        config.ensure_defaults()
        warn_unused_fields(config, CLIENT_UNUSED)
        self.config = config
        self.custom_handlers: Dict[str, Callable[..., Any]] = dict(config.custom_handlers)
        self.running = False
        self._handlers = HandlerTasks("WebSocketClient")
        self._uuid = config.connection_uuid or new_single_uuid()
        self._conn: Optional[SupervisedConnection] = None
        self._ever_connected = False
        self._take_message: Optional[Callable[[], bool]] = None  # (the CLI's tail --count)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Prepare the client (no connection yet)."""
        self.running = True

    async def connect(self) -> bool:
        """Connect; True once the server accepted the connection (auth is checked first)."""
        if not self.running:
            await self.start()
        if self._conn is None:
            self._conn = SupervisedConnection(
                self.config, self._handlers, self.custom_handlers, self._uuid
            )
            self._conn.take_message = self._take_message
        ok = await self._conn.connect()
        self._ever_connected = self._ever_connected or ok
        return ok

    async def disconnect(self) -> bool:
        """Close the connection (code 1000) and stop reconnecting."""
        if self._conn is None:
            return False
        return await self._conn.disconnect()

    async def stop(self) -> None:
        """Disconnect, finish handler tasks (3 s grace); nothing keeps the process alive after."""
        if self._conn is not None:
            await self._conn.stop()
        await self._handlers.cancel_all(3.0)
        self.running = False

    # -- sending --------------------------------------------------------------------------

    async def send_message(self, message: APIMessageBase) -> bool:
        """Send a standard message; True when written to the socket."""
        return self._conn is not None and await self._conn.send_message(message)

    async def send_custom_message(self, message_type: str, payload: Any) -> bool:
        """Send ``payload`` as custom type ``custom_<message_type>``."""
        return self._conn is not None and await self._conn.send_custom_message(
            message_type, payload
        )

    def register_custom_handler(self, message_type: str, handler: Callable[..., Any]) -> None:
        """``handler(payload)`` or ``handler(payload, metadata)``, sync or async."""
        self.custom_handlers[normalize_custom_type(message_type)] = handler

    def unregister_custom_handler(self, message_type: str) -> None:
        self.custom_handlers.pop(normalize_custom_type(message_type), None)

    def update_config(self, **kwargs: Any) -> None:
        for key, value in kwargs.items():
            if hasattr(self.config, key):
                setattr(self.config, key, value)
            else:
                logger.warning("unknown config field ignored: %s", key)
        self.config.ensure_defaults()

    # -- state ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.connected

    @property
    def last_error(self) -> Optional[str]:
        return self._conn.last_error if self._conn is not None else None

    def is_connected(self) -> bool:
        return self.connected

    def is_running(self) -> bool:
        return self.running

    def get_connection_uuid(self) -> Optional[str]:
        return self._uuid if self._conn is not None else None

    def get_last_error(self) -> Optional[str]:
        return self.last_error

    def get_cached_connection_info(self) -> Dict[str, Any]:
        return {
            "url": self.config.url,
            "api_key": self.config.api_key,
            "platform": self.config.platform,
            "connection_uuid": self._uuid if self._conn is not None else "",
        }

    def get_stats(self) -> Dict[str, Any]:
        s = dict(self._conn.stats) if self._conn is not None else {
            "connect_attempts": 0, "successful_connects": 0, "failed_connects": 0,
            "messages_received": 0, "messages_sent": 0, "custom_messages_processed": 0,
            "reconnect_attempts": 0, "bytes_received": 0, "bytes_sent": 0,
        }
        cached = self.get_cached_connection_info() if self._conn is not None else {}
        if cached:
            cached["api_key"] = fingerprint(self.config.api_key)
            cached["url"] = Redactor([self.config.api_key])(cached["url"])  # ?api_key=...
        return {
            "connect_attempts": s["connect_attempts"],
            "successful_connects": s["successful_connects"],
            "failed_connects": s["failed_connects"],
            "messages_received": s["messages_received"],
            "messages_sent": s["messages_sent"],
            "custom_messages_processed": s["custom_messages_processed"],
            "reconnect_attempts": s["reconnect_attempts"],
            "active_handler_tasks": self._handlers.active,
            "connection_uuid": self.get_connection_uuid(),
            "cached_connection": cached,
            "network": {
                "total_connections": s["successful_connects"],
                "current_connections": int(self.connected),
                "messages_received": s["messages_received"],
                "messages_sent": s["messages_sent"],
                "bytes_received": s["bytes_received"],
                "bytes_sent": s["bytes_sent"],
                "reconnect_attempts": s["reconnect_attempts"],
            },
            "connected": self.connected,
            "pending_messages": self._conn.pending_count if self._conn is not None else 0,
            "messages_refused": s.get("refused", 0),  # answered with sys_error, not re-sent
            "messages_resent": s.get("resent", 0),  # written again: after a reconnect, or unacked
            # unacked messages given up (over message_cache_ttl or the queue's bounds)
            "messages_dropped": self._conn.dropped if self._conn is not None else 0,
            "last_error": self.last_error,
            "connected_count": int(self.connected),
        }

    def get_coroutine_status(self) -> Dict[str, Any]:
        return {
            "client_running": self.running,
            "dispatcher_task": None,
            "network_driver_running": self.connected,
            "event_queue_size": 0,
        }
