"""``Router``: one legacy ``MessageClient`` per configured platform (wire §2.3).

Messages go out through the client of ``message.message_info.platform``; the config key is
sent as that connection's ``platform`` header. Clients reconnect on their own; the monitor
only recreates a client whose run task has ended (0.6.8 recreated any client that was
momentarily disconnected, racing its own reconnect loop).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

from .dispatch import Handler
from .logsupport import Log
from .ws_client import MessageClient

__all__ = ["RouteConfig", "Router", "TargetConfig"]


@dataclass
class TargetConfig:
    url: str = None  # type: ignore[assignment]
    token: Optional[str] = None
    ssl_verify: Optional[str] = None  # CA file for wss://

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> TargetConfig:
        url: Any = data.get("url")
        return cls(url=url, token=data.get("token"), ssl_verify=data.get("ssl_verify"))


@dataclass
class RouteConfig:
    route_config: Dict[str, TargetConfig] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.route_config is None:
            self.route_config = {}

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> RouteConfig:
        """Inner dicts become ``TargetConfig``; ``TargetConfig`` values are kept as is."""
        raw = data.get("route_config") or {}
        return cls(route_config={
            name: t if isinstance(t, TargetConfig) else TargetConfig.from_dict(t)
            for name, t in raw.items()
        })


class Router:
    def __init__(self, config: RouteConfig, custom_logger: Optional[logging.Logger] = None) -> None:
        self._custom_logger = custom_logger
        self._log = Log(__name__, custom_logger)
        self.config = config
        self.clients: Dict[str, MessageClient] = {}
        self.handlers: List[Handler] = []
        self.custom_message_handlers: Dict[str, List[Handler]] = {}
        self._client_tasks: Dict[str, asyncio.Task[None]] = {}
        self._monitor_task: Optional[asyncio.Task[None]] = None
        self._running = False
        self._stopped: Optional[asyncio.Event] = None
        self.monitor_interval = 5.0

    # -- handlers ----------------------------------------------------------------------
    def register_class_handler(self, handler: Handler) -> None:
        """Generic handler for every client created from now on (0.6.8 semantics)."""
        self.handlers.append(handler)

    def register_message_handler(self, handler: Handler) -> None:
        self.register_class_handler(handler)

    def register_custom_message_handler(self, message_type_name: str, handler: Handler) -> None:
        handlers = self.custom_message_handlers.setdefault(message_type_name, [])
        if handler not in handlers:
            handlers.append(handler)
        for client in self.clients.values():
            client.register_custom_message_handler(message_type_name, handler)

    def unregister_message_handler(self, message_type: str, handler: Handler) -> None:
        """Remove a *custom* handler (from the router and its live clients)."""
        handlers = self.custom_message_handlers.get(message_type)
        if handlers and handler in handlers:
            handlers.remove(handler)
            if not handlers:
                del self.custom_message_handlers[message_type]
        for client in self.clients.values():
            registered = client.custom_message_handlers.get(message_type)
            if registered and handler in registered:
                registered.remove(handler)
                if not registered:
                    del client.custom_message_handlers[message_type]

    def handle_message(self, message: Any) -> None:
        """Call the custom handlers registered for ``message_info.message_type`` when the
        message has one (0.6.8 always raised AttributeError here)."""
        info = getattr(message, "message_info", None)
        message_type = getattr(info, "message_type", None)
        for handler in list(self.custom_message_handlers.get(message_type, ())):  # type: ignore[arg-type]
            try:
                handler(message)
            except Exception:
                self._log.exception("handler for %r raised", message_type)

    # -- connections -------------------------------------------------------------------
    async def connect(self, platform: str) -> None:
        """(Re)create the client of ``platform``; starts it when the router runs."""
        if platform not in self.config.route_config:
            raise ValueError(f"platform not configured: {platform}")
        await self._drop_client(platform)
        target = self.config.route_config[platform]
        url = target.url
        client = MessageClient(mode="tcp" if url.startswith(("tcp://", "tcps://")) else "ws",
                               custom_logger=self._custom_logger)
        await client.connect(url=url, platform=platform, token=target.token,
                             ssl_verify=target.ssl_verify)
        for handler in self.handlers:
            client.register_message_handler(handler)
        for name, handlers in self.custom_message_handlers.items():
            for handler in handlers:
                client.register_custom_message_handler(name, handler)
        self.clients[platform] = client
        if self._running:
            self._client_tasks[platform] = asyncio.ensure_future(client.run())

    async def _drop_client(self, platform: str) -> None:
        client = self.clients.pop(platform, None)
        task = self._client_tasks.pop(platform, None)
        if client is not None:
            await client.stop()
        if task is not None:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def add_platform(self, platform: str, config: TargetConfig) -> None:
        self.config.route_config[platform] = config
        if self._running:
            await self.connect(platform)

    async def remove_platform(self, platform: str) -> None:
        self.config.route_config.pop(platform, None)
        await self._drop_client(platform)

    async def update_config(self, config_data: Dict[str, Any]) -> None:
        """Apply a new config: drop removed platforms, reconnect changed url/token, add new."""
        new_config = RouteConfig.from_dict(config_data)
        if self._running:
            old = self.config.route_config
            for platform in set(old) - set(new_config.route_config):
                await self.remove_platform(platform)
            for platform, target in new_config.route_config.items():
                previous = old.get(platform)
                if previous is None:
                    await self.add_platform(platform, target)
                elif (previous.url, previous.token, previous.ssl_verify) != (
                    target.url, target.token, target.ssl_verify
                ):
                    await self.remove_platform(platform)
                    await self.add_platform(platform, target)
        self.config = new_config

    async def _monitor(self) -> None:
        while self._running:
            await asyncio.sleep(self.monitor_interval)
            for platform in list(self.clients):
                task = self._client_tasks.get(platform)
                if self._running and (task is None or task.done()):
                    self._log.info("client of platform %r is not running; restarting it",
                                   platform)
                    try:
                        await self.connect(platform)
                    except Exception:
                        self._log.exception("restarting platform %r failed", platform)

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self) -> None:
        """Start one client per platform and run until ``stop()``."""
        self._running = True
        self._stopped = asyncio.Event()
        try:
            for platform in list(self.config.route_config):
                if platform not in self.clients:
                    await self.connect(platform)
                elif platform not in self._client_tasks:
                    self._client_tasks[platform] = asyncio.ensure_future(
                        self.clients[platform].run()
                    )
            self._monitor_task = asyncio.ensure_future(self._monitor())
            await self._stopped.wait()
        except asyncio.CancelledError:
            await self.stop()
            raise

    async def stop(self) -> None:
        self._running = False
        monitor, self._monitor_task = self._monitor_task, None
        if monitor is not None and not monitor.done():
            monitor.cancel()
        if monitor is not None:
            await asyncio.gather(monitor, return_exceptions=True)
        for platform in list(self.clients):
            await self._drop_client(platform)
        for task in self._client_tasks.values():
            task.cancel()
        await asyncio.gather(*self._client_tasks.values(), return_exceptions=True)
        self._client_tasks.clear()
        self.clients.clear()
        if self._stopped is not None:
            self._stopped.set()

    # -- sending -----------------------------------------------------------------------
    def get_target_url(self, message: Any) -> Optional[str]:
        target = self.config.route_config.get(message.message_info.platform)
        return target.url if target is not None else None

    async def send_message(self, message: Any) -> bool:
        platform = message.message_info.platform
        if self.get_target_url(message) is None:
            raise ValueError(f"no url configured for platform: {platform}")
        client = self.clients.get(platform)
        if client is None:
            self._log.warning("platform %r has no client (router not running?)", platform)
            return False
        return await client.send_message(message.to_dict())

    async def send_custom_message(self, platform: str, message_type_name: str,
                                  message: Dict[str, Any]) -> bool:
        client = self.clients.get(platform)
        if client is None:
            raise ValueError(f"platform {platform} is not connected")
        return await client.send_custom_message(message_type_name, message)

    def check_connection(self, platform: str) -> bool:
        client = self.clients.get(platform)
        return client is not None and client.is_connected()

