"""WebSocketMultiClient: several named connections, each a :class:`SupervisedConnection`.

Every registered name owns one supervised connection (its own reconnect loop, acks and
dedupe); all of them share one handler-task pool and one custom-handler table. Incoming
standard messages reach ``on_message(message, metadata)`` with ``metadata["connection_name"]``
naming the connection they arrived on (0.6.8 never called it).

Outgoing messages go to the named connection, or, when no name is given, to the connection
chosen by the spec's "smart routing" of ``message_dim``: exact api_key + platform, then
api_key only, then platform only (:func:`match_connection`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import fields
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple, Union

from ..core.envelope import normalize_custom_type
from ..core.identity import fingerprint
from ..core.models.api import APIMessageBase
from ..runtime.callbacks import HandlerTasks
from ..runtime.unused_fields import MULTI_CLIENT_UNUSED, warn_unused_fields
from .config import ClientConfig
from .connection import SupervisedConnection
from .multi_config import ConnectionEntry, MultiClientConfig

logger = logging.getLogger(__name__)

# ClientConfig fields a registered connection may override (everything but identity/callbacks
# that the multi-client owns).
_RESERVED = {"url", "api_key", "platform", "on_message", "custom_handlers", "connection_uuid"}
_OVERRIDABLE = {f.name for f in fields(ClientConfig)} - _RESERVED
_ENTRY_FIELDS = {f.name for f in fields(ConnectionEntry)} - {"name", "url", "api_key", "platform"}
_STAT_KEYS = (
    "connect_attempts", "successful_connects", "failed_connects", "messages_received",
    "messages_sent", "custom_messages_processed", "reconnect_attempts", "bytes_received",
    "bytes_sent", "refused", "resent",
)


def match_connection(
    candidates: Iterable[Tuple[str, str, str]], api_key: Optional[str], platform: Optional[str]
) -> Optional[str]:
    """The spec's client-side smart routing over ``(name, api_key, platform)`` candidates.

    Priority: exact api_key and platform, then api_key only, then platform only; the first
    registered candidate wins within a level. None when nothing matches.
    """
    by_key: Optional[str] = None
    by_platform: Optional[str] = None
    for name, key, plat in candidates:
        key_ok = bool(api_key) and key == api_key
        plat_ok = bool(platform) and plat == platform
        if key_ok and plat_ok:
            return name
        if key_ok and by_key is None:
            by_key = name
        elif plat_ok and by_platform is None:
            by_platform = name
    return by_key if by_key is not None else by_platform


class _Named:
    """A registered connection and its (current) supervised connection."""

    __slots__ = ("api_key", "conn", "kwargs", "name", "platform", "stale", "url")

    def __init__(self, name: str, url: str, api_key: str, platform: str,
                 kwargs: Dict[str, Any]) -> None:
        self.name = name
        self.url = url
        self.api_key = api_key
        self.platform = platform
        self.kwargs = kwargs
        self.conn: Optional[SupervisedConnection] = None
        self.stale = False  # settings changed since ``conn`` was built

    @property
    def connected(self) -> bool:
        return self.conn is not None and self.conn.connected

    @property
    def connection_uuid(self) -> Optional[str]:
        return self.conn.uuid if self.conn is not None else None

    @property
    def last_error(self) -> Optional[str]:
        return self.conn.last_error if self.conn is not None else None

    def info(self) -> Dict[str, Any]:
        return {
            "name": self.name, "url": self.url, "api_key": self.api_key,
            "platform": self.platform, "connected": self.connected,
            "connection_uuid": self.connection_uuid, "last_error": self.last_error,
            "kwargs": dict(self.kwargs),
        }


class WebSocketMultiClient:
    """Named connections to one or more servers; ``send_message(name, message)``.

    ``config`` is a :class:`MultiClientConfig` (0.6.8); ``default_config`` is a
    :class:`ClientConfig` (spec) whose ``on_message``, ``on_connect``, ``on_disconnect``,
    ``custom_handlers`` and reconnect / keepalive / TLS / header settings become the
    defaults of every registered connection.
    """

    def __init__(
        self, config: Optional[Union[MultiClientConfig, ClientConfig]] = None, *,
        default_config: Optional[ClientConfig] = None,
    ) -> None:
        if isinstance(config, ClientConfig):  # WebSocketMultiClient(client_config)
            default_config, config = config, None
        self.multi_config = config if config is not None else MultiClientConfig()
        self.default_config = default_config
        if default_config is not None:
            if not self.multi_config.has_user_message_handler() and default_config.on_message:
                self.multi_config.on_message = default_config.on_message
        self.multi_config.ensure_defaults()
        warn_unused_fields(self.multi_config, MULTI_CLIENT_UNUSED)
        self.config = self.multi_config
        self.logger = self.multi_config.get_logger()
        self.custom_handlers: Dict[str, Callable[..., Any]] = {}
        if default_config is not None:
            self.custom_handlers.update(default_config.custom_handlers)
        self.custom_handlers.update(self.multi_config.custom_handlers)
        self.running = False
        self._named: Dict[str, _Named] = {}
        self._handlers = HandlerTasks("WebSocketMultiClient")
        self._background: Set[asyncio.Task[Any]] = set()
        self._retired: Dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)

    async def __aenter__(self) -> WebSocketMultiClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- registration -----------------------------------------------------------------------

    def register_connection(
        self, name: str, url: str, api_key: str, platform: str = "default", **kwargs: Any
    ) -> bool:
        """Define (or redefine) connection ``name``; extra keywords are ClientConfig fields.

        An unknown keyword raises TypeError. Redefining a live connection closes it; the
        next ``connect(name)`` uses the new settings.
        """
        unknown = set(kwargs) - _OVERRIDABLE
        if unknown:
            raise TypeError(f"register_connection() got unknown connection option(s): "
                            f"{', '.join(sorted(unknown))}")
        if not (url.startswith("ws://") or url.startswith("wss://")):
            raise ValueError(f"connection {name!r}: url must start with ws:// or wss://")
        old = self._named.get(name)
        if old is not None:
            logger.warning("connection %r redefined", name)
            self._retire(old)
        self._named[name] = _Named(name, url, api_key, platform, dict(kwargs))
        entry_kwargs = {k: v for k, v in kwargs.items() if k in _ENTRY_FIELDS}
        self.multi_config.connections[name] = ConnectionEntry(
            name=name, url=url, api_key=api_key, platform=platform, **entry_kwargs
        )
        logger.info("registered connection %r -> %s (key %s, platform %s)", name,
                    url.split("?", 1)[0], fingerprint(api_key), platform)
        return True

    def update_connection(self, name: str, **kwargs: Any) -> bool:
        """Change settings of a registered connection (used by its next ``connect``)."""
        named = self._named.get(name)
        if named is None:
            logger.warning("update_connection: no connection named %r", name)
            return False
        for key, value in kwargs.items():
            if key in ("url", "api_key", "platform"):
                setattr(named, key, value)
            elif key in _OVERRIDABLE:
                named.kwargs[key] = value
            else:
                logger.warning("update_connection: unknown option %r ignored", key)
                continue
            entry = self.multi_config.connections.get(name)
            if entry is not None and hasattr(entry, key) and key != "name":
                setattr(entry, key, value)
        named.stale = True
        return True

    def unregister_connection(self, name: str) -> bool:
        """Forget connection ``name`` (closing it if open); False if unknown."""
        named = self._named.pop(name, None)
        if named is None:
            return False
        self.multi_config.connections.pop(name, None)
        self._retire(named)
        return True

    def _retire(self, named: _Named) -> None:
        conn, named.conn = named.conn, None
        if conn is None:
            return
        for key in _STAT_KEYS:
            self._retired[key] += conn.stats.get(key, 0)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(conn.disconnect())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load connections defined in the MultiClientConfig; auto-connect if configured."""
        if self.running:
            return
        self.running = True
        for name, entry in self.multi_config.connections.items():
            if name not in self._named:
                self._named[name] = _Named(name, entry.url, entry.api_key, entry.platform,
                                           entry.to_kwargs())
        if self.multi_config.auto_connect_on_start and self._named:
            await self.connect()

    async def connect(self, name: Optional[str] = None) -> Dict[str, bool]:
        """Connect ``name`` (or every registered connection) concurrently.

        Returns ``{name: accepted}``: True once the server accepted the connection, False
        if it refused, timed out, or the name is unknown.
        """
        if not self.running:
            await self.start()
        names: List[str] = [name] if name is not None else list(self._named)
        known = [n for n in names if n in self._named]
        outcomes = await asyncio.gather(*(self._connect_one(self._named[n]) for n in known))
        results = dict.fromkeys(names, False)
        results.update(zip(known, outcomes))
        return results

    async def _connect_one(self, named: _Named) -> bool:
        conn = named.conn
        if conn is not None and conn.connected and not named.stale:
            return True
        if conn is not None:
            self._retire(named)
        named.stale = False
        named.conn = conn = SupervisedConnection(
            self._client_config(named), self._handlers, self.custom_handlers,
            f"multi_{named.name}_{int(time.time() * 1000)}",
            extra_meta={"connection_name": named.name},
        )
        return await conn.connect()

    def _client_config(self, named: _Named) -> ClientConfig:
        base = self.default_config
        values: Dict[str, Any] = (
            {f.name: getattr(base, f.name) for f in fields(ClientConfig)} if base else {}
        )
        values.setdefault("connect_timeout", self.multi_config.connect_timeout)
        values.update(named.kwargs)
        values.update(url=named.url, api_key=named.api_key, platform=named.platform,
                      connection_uuid=None, custom_handlers={},
                      on_message=self._message_callback(named.name))
        values["headers"] = dict(values.get("headers") or {})
        config = ClientConfig(**values)
        if config.url.startswith("wss://"):
            config.ssl_enabled = True
        return config

    def _message_callback(self, name: str) -> Callable[[APIMessageBase, Dict[str, Any]], Any]:
        def deliver(message: APIMessageBase, metadata: Dict[str, Any]) -> Any:
            handler = self.multi_config.on_message
            if handler is None:
                return None
            metadata["connection_name"] = name
            metadata.setdefault("sender_user", "unknown")
            dim = message.message_dim
            metadata["routed_connection"] = self.route(dim.api_key, dim.platform)
            return handler(message, metadata)

        return deliver

    async def disconnect(self, name: Optional[str] = None) -> Dict[str, bool]:
        """Close ``name`` (or all); ``{name: was_connected}``."""
        names: List[str] = [name] if name is not None else list(self._named)
        known = [n for n in names if n in self._named and self._named[n].conn is not None]
        outcomes = await asyncio.gather(
            *(self._named[n].conn.disconnect() for n in known)  # type: ignore[union-attr]
        )
        results = dict.fromkeys(names, False)
        results.update(zip(known, outcomes))
        return results

    async def stop(self) -> None:
        """Close every connection, let handlers finish (3 s grace), stop."""
        if not self.running and not self._background:
            return
        await self.disconnect()
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await self._handlers.cancel_all(3.0)
        self.running = False

    # -- sending ----------------------------------------------------------------------------

    def route(self, api_key: Optional[str], platform: Optional[str]) -> Optional[str]:
        """Smart routing among *connected* connections (see :func:`match_connection`)."""
        return match_connection(
            ((n.name, n.api_key, n.platform) for n in self._named.values() if n.connected),
            api_key, platform,
        )

    def _resolve(
        self, connection_name: Union[str, APIMessageBase, None],
        message: Optional[APIMessageBase],
    ) -> Tuple[Optional[str], Optional[APIMessageBase]]:
        if isinstance(connection_name, APIMessageBase):
            connection_name, message = None, connection_name
        if connection_name is None and message is not None:
            dim = message.message_dim
            connection_name = self.route(dim.api_key, dim.platform)
        return connection_name, message

    async def send_message(
        self, connection_name: Union[str, APIMessageBase, None],
        message: Optional[APIMessageBase] = None,
    ) -> bool:
        """Send on connection ``connection_name``; ``send_message(message)`` routes by
        ``message_dim``. False when the name is unknown or not connected."""
        name, message = self._resolve(connection_name, message)
        if message is None:
            raise TypeError("send_message() needs a message")
        named = self._named.get(name) if name is not None else None
        if named is None or named.conn is None:
            logger.warning("send_message: no usable connection %r", name)
            return False
        return await named.conn.send_message(message)

    async def send_custom_message(
        self, connection_name: str, message_type: str, payload: Any
    ) -> bool:
        """Send a custom message (wire type ``custom_<message_type>``) on one connection."""
        named = self._named.get(connection_name)
        if named is None or named.conn is None:
            logger.warning("send_custom_message: no usable connection %r", connection_name)
            return False
        return await named.conn.send_custom_message(message_type, payload)

    def register_custom_handler(self, message_type: str, handler: Callable[..., Any]) -> None:
        """``handler(payload)`` or ``handler(payload, metadata)``, sync or async."""
        self.multi_config.register_custom_handler(message_type, handler)
        self.custom_handlers[normalize_custom_type(message_type)] = handler

    def unregister_custom_handler(self, message_type: str) -> None:
        self.multi_config.unregister_custom_handler(message_type)
        self.custom_handlers.pop(normalize_custom_type(message_type), None)

    # -- state ------------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self.running

    def is_connected(self, name: Optional[str] = None) -> bool:
        if name is not None:
            named = self._named.get(name)
            return named is not None and named.connected
        return any(n.connected for n in self._named.values())

    def get_last_error(self, name: Optional[str] = None) -> Optional[str]:
        if name is not None:
            named = self._named.get(name)
            return named.last_error if named is not None else None
        for named in self._named.values():
            if named.last_error:
                return named.last_error
        return None

    def get_connection_info(self, name: str) -> Optional[Dict[str, Any]]:
        named = self._named.get(name)
        return named.info() if named is not None else None

    def list_connections(self) -> Dict[str, Dict[str, Any]]:
        """Every registered connection: ``{name: info}`` (see ``get_connection_info``)."""
        return {name: named.info() for name, named in self._named.items()}

    def get_active_connections(self) -> Dict[str, Dict[str, Any]]:
        """Connected ones only: ``{name: {url, api_key, platform, connection_uuid}}``."""
        return {
            name: {"url": n.url, "api_key": n.api_key, "platform": n.platform,
                   "connection_uuid": n.connection_uuid}
            for name, n in self._named.items() if n.connected
        }

    def get_stats(self) -> Dict[str, Any]:
        totals = dict(self._retired)
        for named in self._named.values():
            if named.conn is not None:
                for key in _STAT_KEYS:
                    totals[key] += named.conn.stats.get(key, 0)
        active = sum(1 for n in self._named.values() if n.connected)
        return {
            "connect_attempts": totals["connect_attempts"],
            "successful_connects": totals["successful_connects"],
            "failed_connects": totals["failed_connects"],
            "messages_received": totals["messages_received"],
            "messages_sent": totals["messages_sent"],
            "custom_messages_processed": totals["custom_messages_processed"],
            "reconnect_attempts": totals["reconnect_attempts"],
            "active_handler_tasks": self._handlers.active,
            "connections_registered": len(self._named),
            "connections_active": active,
            "connection_names": list(self._named),
            "messages_refused": totals["refused"],  # answered with sys_error, not re-sent
            "messages_resent": totals["resent"],  # written again: after a reconnect, or unacked
            "pending_messages": sum(n.conn.pending_count for n in self._named.values()
                                    if n.conn is not None),  # sent, not yet acked
            "messages_dropped": sum(n.conn.dropped for n in self._named.values()
                                    if n.conn is not None),  # given up: ttl or bounds
            "network": {
                "total_connections": totals["successful_connects"],
                "current_connections": active,
                "messages_received": totals["messages_received"],
                "messages_sent": totals["messages_sent"],
                "bytes_received": totals["bytes_received"],
                "bytes_sent": totals["bytes_sent"],
                "reconnect_attempts": totals["reconnect_attempts"],
            },
        }

    def get_coroutine_status(self) -> Dict[str, Any]:
        return {
            "client_running": self.running,
            "dispatcher_task": None,
            "network_driver_running": self.is_connected(),
            "event_queue_size": 0,
            "connections": {name: n.connected for name, n in self._named.items()},
            "active_handler_tasks": self._handlers.active,
        }
