"""0.6.8's connection interfaces (``maim_message.connection_interface``), for code that
subclassed or type-annotated with them. The transports here do not derive from them."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any, Callable, Dict, List, Set

from ..runtime.callbacks import HandlerTasks

__all__ = [
    "BaseConnection",
    "ClientConnectionInterface",
    "ConnectionInterface",
    "ServerConnectionInterface",
]


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
        self._tasks = HandlerTasks(type(self).__name__)
        self._running = False

    @property
    def background_tasks(self) -> Set[asyncio.Future[Any]]:
        return self._tasks.tasks

    def add_background_task(self, task: asyncio.Future[Any]) -> None:
        self._tasks.track(task)

    def register_message_handler(self, handler: Callable[[Any], Any]) -> None:
        if handler not in self.message_handlers:
            self.message_handlers.append(handler)

    async def process_message(self, message: Dict[str, Any]) -> None:
        """Every handler (sync inline, async as a tracked task); waits for the tasks."""
        spawned = [self._tasks.spawn(handler, message) for handler in self.message_handlers]
        tasks = [task for task in spawned if task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def cleanup_tasks(self) -> None:
        await self._tasks.cancel_all(grace=0)
