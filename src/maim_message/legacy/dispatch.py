"""Handler registry and the legacy ``process_message`` rules (wire §2.2), shared by
``MessageServer``, ``MessageClient`` and ``Router``.

Rules, applied to each decoded JSON value:

1. a dict with a truthy ``is_custom_message``: the handlers registered for its
   ``message_type_name`` get the whole dict; none registered -> a warning; generic
   handlers are not called;
2. else a dict whose ``message_type_name`` has registered custom handlers: same as 1;
3. otherwise every generic handler gets the value unchanged.

Handlers may be sync or async. Sync handlers run in registration order as the frame is
read; async ones become tasks of the project's one task tracker
(:class:`~maim_message.runtime.callbacks.HandlerTasks`: exceptions logged, cancelled on
``stop``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Set

from ..runtime.callbacks import HandlerTasks
from .logsupport import Log

__all__ = ["HandlerRegistry", "build_custom_message", "select_handlers"]

Handler = Callable[[Any], Any]


def _custom_name(message: Dict[str, Any]) -> Any:
    name = message.get("message_type_name")
    return name if isinstance(name, Hashable) else None


def select_handlers(
    message: Any,
    generic: Sequence[Handler],
    custom: Dict[str, List[Handler]],
) -> tuple[Sequence[Handler], Optional[str]]:
    """Pure dispatch decision: ``(handlers to call, unregistered custom type or None)``.

    The second item is set (to the type name, possibly ``""``) only when the message is
    flagged custom but nobody handles its type, so the caller can warn.
    """
    if isinstance(message, dict):
        if message.get("is_custom_message"):
            name = _custom_name(message)
            handlers = custom.get(name) if name else None
            if handlers:
                return handlers, None
            return (), str(message.get("message_type_name"))
        name = _custom_name(message)
        if name:
            handlers = custom.get(name)
            if handlers:
                return handlers, None
    return generic, None


def build_custom_message(platform: Any, message_type_name: str, content: Any) -> Dict[str, Any]:
    """The legacy custom frame; ``timestamp`` is the loop's monotonic clock, as in 0.6.8."""
    try:
        now = asyncio.get_running_loop().time()
    except RuntimeError:  # not in a loop: keep the field, value is meaningless anyway
        import time

        now = time.monotonic()
    return {
        "platform": platform,
        "message_type_name": message_type_name,
        "content": content,
        "timestamp": now,
        "is_custom_message": True,
    }


class HandlerRegistry:
    """0.6.8's ``BaseMessageHandler``: handler lists plus the dispatcher."""

    _log: Log

    def __init__(self, custom_logger: Optional[Any] = None, logger_name: str = __name__) -> None:
        self._log = Log(logger_name, custom_logger)
        self.message_handlers: List[Handler] = []
        self.custom_message_handlers: Dict[str, List[Handler]] = {}
        self._tasks = HandlerTasks(type(self).__name__, self._log)

    @property
    def background_tasks(self) -> Set[asyncio.Future[Any]]:
        """Running async handler calls (0.6.8 name)."""
        return self._tasks.tasks

    # -- registration ------------------------------------------------------------------
    def register_message_handler(self, handler: Handler) -> None:
        """Generic handler (called with the decoded JSON value); duplicates ignored."""
        if handler not in self.message_handlers:
            self.message_handlers.append(handler)

    def register_custom_message_handler(self, message_type_name: str, handler: Handler) -> None:
        handlers = self.custom_message_handlers.setdefault(message_type_name, [])
        if handler not in handlers:
            handlers.append(handler)

    # -- dispatch ----------------------------------------------------------------------
    def dispatch(self, message: Any) -> List[asyncio.Future[Any]]:
        """Call the handlers for one message; returns the tasks of async handlers."""
        handlers, unregistered = select_handlers(
            message, self.message_handlers, self.custom_message_handlers
        )
        if unregistered is not None:
            self._log.warning("received custom message of unregistered type %r", unregistered)
            return []
        tasks: List[asyncio.Future[Any]] = []
        for handler in tuple(handlers):
            task = self._tasks.spawn(handler, message)
            if task is not None:
                tasks.append(task)
        return tasks

    async def process_message(self, message: Any) -> None:
        """Dispatch one message and wait for its async handlers (0.6.8 semantics)."""
        tasks = self.dispatch(message)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _deliver(self, message: Any) -> None:
        """Entry point used by the transports for every received value.

        When a subclass or the instance replaced ``process_message`` (0.6.8 routed every
        frame through it), honour that by running it as a task.
        """
        if (
            type(self).process_message is HandlerRegistry.process_message
            and "process_message" not in self.__dict__
        ):
            self.dispatch(message)
        else:
            self._tasks.track(asyncio.ensure_future(self.process_message(message)))

    async def _cancel_background(self) -> None:
        await self._tasks.cancel_all(grace=0)
