"""Starting a coroutine eagerly: its first step now, a task only if it suspends.

Most message handlers finish without ever waiting (they look at the message, maybe queue a
reply, return). For them a task costs more than the handler itself: the task object, one
loop turn to start it, another to run its done callback. Python 3.12's eager task factory
removes that cost; this module gives the same semantics on 3.9-3.11 too: the coroutine's
first step runs synchronously, in a copy of the caller's context, and only when it
suspends does a task take it over, resuming it exactly where it stopped (the future it
waits on, cancellation and the context carry over). On 3.12+ the interpreter's own eager
start is used (``asyncio.current_task()`` is then the new task from the first step on);
on older versions ``asyncio.current_task()`` during the first step is the caller's task
(``None`` in a protocol callback), after the first suspension it is the handler's task.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import sys
from typing import Any, Coroutine, Generator, Optional

_NATIVE = sys.version_info >= (3, 12)


class _Resume(collections.abc.Coroutine):
    """A coroutine whose first step already ran (and yielded ``first``), as a coroutine
    a task can drive: it hands the task ``first`` (the future the coroutine waits on),
    then forwards every send and throw, each in the coroutine's context."""

    __slots__ = ("_coro", "_ctx", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any,
                 ctx: contextvars.Context) -> None:
        self._coro = coro
        self._first: Any = (first,)
        self._ctx = ctx

    def __repr__(self) -> str:  # named in failure logs
        return getattr(self._coro, "__qualname__", None) or repr(self._coro)

    def send(self, value: Any) -> Any:
        first = self._first
        if first is not None:
            self._first = None
            return first[0]
        return self._ctx.run(self._coro.send, value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._first = None
        if val is None and tb is None:
            return self._ctx.run(self._coro.throw, typ)
        return self._ctx.run(self._coro.throw, typ, val, tb)  # pragma: no cover - old form

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield from _drive(self))


def _drive(resume: _Resume) -> Generator[Any, Any, Any]:
    try:
        value = resume.send(None)
    except StopIteration as stop:
        return stop.value
    while True:
        try:
            sent = yield value
        except BaseException as exc:
            try:
                value = resume.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                value = resume.send(sent)
            except StopIteration as stop:
                return stop.value


def start_eagerly(coro: Coroutine[Any, Any, Any]) -> Optional[asyncio.Future[Any]]:
    """Run ``coro`` until it first suspends.

    Returns the task that runs the rest when it suspended, ``None`` when it returned (its
    result is dropped); raises what its first step raised (``asyncio.CancelledError``
    included), as awaiting a task that failed at once would.
    """
    if _NATIVE:
        task = asyncio.Task(coro, loop=asyncio.get_running_loop(),  # type: ignore[call-arg]
                            eager_start=True)
        if not task.done():
            return task
        task.result()  # raises the exception (or CancelledError) of the first step
        return None
    ctx = contextvars.copy_context()
    try:
        first = ctx.run(coro.send, None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_Resume(coro, first, ctx))
