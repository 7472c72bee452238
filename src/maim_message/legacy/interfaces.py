"""0.6.8's connection interfaces (``maim_message.connection_interface``), for code that
subclassed or type-annotated with them. The transports here do not derive from them."""

from __future__ import annotations

import asyncio
import inspect
import logging
from abc import ABC, abstractmethod
from typing import Any, Callable, Dict, List, Set

__all__ = [
    "BaseConnection",
    "ClientConnectionInterface",
    "ConnectionInterface",
    "ServerConnectionInterface",
]

_logger = logging.getLogger(__name__)


class ConnectionInterface(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def send_message(self, target: str, message: Dict[str, Any]) -> bool: ...

    @abstractmethod
    def register_message_handler(self, handler: Callable[[Any], Any]) -> None: ...


class ServerConnectionInterface(ConnectionInterface):
    @abstractmethod
    async def broadcast_message(self, message: Dict[str, Any]) -> None: ...


class ClientConnectionInterface(ConnectionInterface):
    @abstractmethod
    async def connect(self) -> bool: ...

    @abstractmethod
    def is_connected(self) -> bool: ...


class BaseConnection(ABC):  # noqa: B024 - abstract by convention, as in 0.6.8
    """Handler list and background-task bookkeeping shared by 0.6.8's transports."""

    def __init__(self) -> None:
        self.message_handlers: List[Callable[[Any], Any]] = []
        self.background_tasks: Set[asyncio.Future[Any]] = set()
        self._running = False

    def add_background_task(self, task: asyncio.Future[Any]) -> None:
        self.background_tasks.add(task)
        task.add_done_callback(self.background_tasks.discard)

    def register_message_handler(self, handler: Callable[[Any], Any]) -> None:
        if handler not in self.message_handlers:
            self.message_handlers.append(handler)

    async def process_message(self, message: Dict[str, Any]) -> None:
        tasks = []
        for handler in self.message_handlers:
            try:
                result = handler(message)
            except Exception:
                _logger.exception("message handler raised")
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self.add_background_task(task)
                tasks.append(task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def cleanup_tasks(self) -> None:
        for task in self.background_tasks:
            task.cancel()
        if self.background_tasks:
            await asyncio.gather(*self.background_tasks, return_exceptions=True)
        self.background_tasks.clear()
