"""Calling user callbacks that may be plain functions or coroutine functions.

The spec passes lambdas (sync) where 0.6.8 always awaited; here any callable works: it is
called, and the result is awaited only when it is awaitable.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from types import CoroutineType
from typing import Any, Awaitable, Callable, Dict, Optional, Set

from ..errors import DeliveryRefused
from .eager import start_eagerly

# Told how a handler call ended (None: returned; an exception: raised or was cancelled).
# Returning True means it took care of the exception (it is not logged as a failure).
OnDone = Callable[[Optional[BaseException]], bool]

logger = logging.getLogger(__name__)


async def call_maybe_async(func: Callable[..., Any], *args: Any) -> Any:
    result = func(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def positional_arity(func: Callable[..., Any]) -> Optional[int]:
    """How many positional arguments ``func`` requires (None = takes ``*args`` / unknown).

    Parameters with defaults are not counted, so ``lambda data, x=x: ...`` is a
    one-argument handler."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    count = 0
    for param in sig.parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            return None
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD) and (
            param.default is param.empty
        ):
            count += 1
    return count


class HandlerTasks:
    """Runs each handler call in its own task, counts the live ones, cancels them on stop.

    The spec promises "each handler call in its own task" and reports the count as
    ``get_stats()["active_handler_tasks"]``. Exceptions are logged, never propagated:
    to this module's logger, or to ``log`` (a ``logging.Logger`` or the legacy API's
    per-object adapter, anything with ``exception(msg, *args)`` and
    ``error(msg, *args, exc_info=...)``).
    """

    def __init__(self, owner: str, log: Optional[Any] = None) -> None:
        self._owner = owner
        self._log: Any = log if log is not None else logger
        self.tasks: Set[asyncio.Future[Any]] = set()
        self.completed = 0
        self.failed = 0

    def spawn(self, func: Callable[..., Any], *args: Any, on_done: Optional[OnDone] = None
              ) -> Optional[asyncio.Future[Any]]:
        """Call ``func``; if it returns an awaitable, run that in its own task (returned).

        A plain function runs inline (a task would add nothing but cost); its exception
        is logged like a task's. ``on_done`` is told when the call has ended.
        """
        try:
            result = func(*args)
        except Exception as exc:
            self._failed(func, exc, on_done)
            return None
        return self._returned(result, on_done)

    def start(self, func: Callable[..., Any], *args: Any, on_done: Optional[OnDone] = None
              ) -> Optional[asyncio.Future[Any]]:
        """Like :meth:`spawn`, but a coroutine's first step runs now (eager task start,
        :mod:`.eager`): a handler that never waits costs no task and no loop turn, and
        what it sends goes out with the frame's ack. Its exception is still isolated
        and logged; it gets a task of its own only if it suspends (returned)."""
        try:
            result = func(*args)
        except Exception as exc:
            self._failed(func, exc, on_done)
            return None
        if type(result) is not CoroutineType:
            return self._returned(result, on_done)
        try:
            task = start_eagerly(result)
        except asyncio.CancelledError as exc:
            if on_done is not None:
                on_done(exc)
            return None
        except Exception as exc:
            self._failed(func, exc, on_done)
            return None
        if task is not None:
            return self.track(task, on_done)
        self.completed += 1
        if on_done is not None:
            on_done(None)
        return None

    def _returned(self, result: Any, on_done: Optional[OnDone]
                  ) -> Optional[asyncio.Future[Any]]:
        """What a call returned: an awaitable runs in its own task, anything else has ended."""
        if inspect.isawaitable(result):
            return self.track(asyncio.ensure_future(result), on_done)
        self.completed += 1
        if on_done is not None:
            on_done(None)
        return None

    def _failed(self, func: Callable[..., Any], exc: BaseException,
                on_done: Optional[OnDone]) -> None:
        self.failed += _failure(exc)
        if on_done is not None and on_done(exc):
            return
        self._log.error("%s: handler %s raised", self._owner, _name_of(func),
                        exc_info=(type(exc), exc, exc.__traceback__))

    def track(self, task: asyncio.Future[Any], on_done: Optional[OnDone] = None
              ) -> asyncio.Future[Any]:
        """Count, log and cancel-on-stop a task started elsewhere."""
        self.tasks.add(task)
        if on_done is None:
            task.add_done_callback(self._done)
        else:
            task.add_done_callback(lambda t: self._done(t, on_done))
        return task

    def _done(self, task: asyncio.Future[Any], on_done: Optional[OnDone] = None) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            if on_done is not None:
                on_done(asyncio.CancelledError())
            return
        exc = task.exception()
        if exc is None:
            self.completed += 1
            if on_done is not None:
                on_done(None)
        else:
            self.failed += _failure(exc)
            if on_done is not None and on_done(exc):
                return
            coro = getattr(task, "get_coro", lambda: None)()
            name = getattr(coro, "__qualname__", None) or repr(coro)
            self._log.error("%s: handler %s raised", self._owner, name,
                            exc_info=(type(exc), exc, exc.__traceback__))

    @property
    def active(self) -> int:
        return len(self.tasks)

    async def cancel_all(self, grace: float = 3.0) -> None:
        """Let running handlers finish for ``grace`` seconds, then cancel the rest."""
        if not self.tasks:
            return
        pending = set(self.tasks)
        still = pending
        if grace > 0:
            _, still = await asyncio.wait(pending, timeout=grace)
        for task in still:
            task.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)


def _name_of(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


AsyncCallback = Callable[..., Awaitable[Any]]
CallbackMap = Dict[str, Callable[..., Any]]


def _failure(exc: BaseException) -> int:
    """1 for a handler that failed; 0 for a refusal (``DeliveryRefused``: the sender gets
    a ``sys_error`` naming the field, a final answer, not a handler error)."""
    return 0 if isinstance(exc, DeliveryRefused) else 1
