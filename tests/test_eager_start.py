"""Eager handler start (runtime/eager.py, HandlerTasks.start), without sockets.

A handler that never waits runs to its end inside the call (no task, no loop turn); one
that suspends continues in its own task exactly where it stopped; either way its
exception is isolated and logged, its context changes stay its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import List, Optional

import pytest

from maim_message.runtime.callbacks import HandlerTasks
from maim_message.runtime.eager import start_eagerly

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def test_a_handler_that_never_waits_finishes_inside_the_call() -> None:
    tasks = HandlerTasks("test")
    seen: List[str] = []
    ended: List[Optional[BaseException]] = []

    async def quick(tag: str) -> None:
        seen.append(tag)

    def on_done(exc: Optional[BaseException]) -> bool:
        ended.append(exc)
        return False

    assert tasks.start(quick, "a", on_done=on_done) is None
    assert seen == ["a"] and ended == [None]
    assert tasks.active == 0 and tasks.completed == 1


async def test_a_handler_that_suspends_goes_on_in_its_own_task() -> None:
    tasks = HandlerTasks("test")
    release = asyncio.Event()
    steps: List[str] = []
    caller_task = asyncio.current_task()

    async def slow() -> str:
        VAR.set("handler")
        steps.append("first")
        await release.wait()
        assert asyncio.current_task() is not caller_task  # its own task from here on
        steps.append(VAR.get())
        await asyncio.sleep(0)
        return "done"

    VAR.set("caller")
    task = tasks.start(slow)
    assert task is not None and steps == ["first"]
    assert VAR.get() == "caller"  # the handler's context change stays its own
    assert tasks.active == 1
    release.set()
    assert await asyncio.wait_for(task, 5) == "done"
    assert steps == ["first", "handler"]
    await asyncio.sleep(0)  # the done callback
    assert tasks.active == 0 and tasks.completed == 1


async def test_exceptions_are_isolated_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    tasks = HandlerTasks("test")
    release = asyncio.Event()

    async def broken_at_once() -> None:
        raise RuntimeError("boom-now")

    async def broken_later() -> None:
        await release.wait()
        raise ValueError("boom-later")

    with caplog.at_level(logging.ERROR):
        assert tasks.start(broken_at_once) is None
        task = tasks.start(broken_later)
        assert task is not None
        release.set()
        await asyncio.wait([task], timeout=5)
        await asyncio.sleep(0)
    assert tasks.failed == 2 and tasks.active == 0
    assert "boom-now" in caplog.text and "boom-later" in caplog.text
    assert "broken_later" in caplog.text  # the failure names the handler


async def test_cancelling_the_task_reaches_the_handler() -> None:
    cleaned: List[str] = []

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("finally")

    for settle in (True, False):  # cancelled while waiting, and before the task's first step
        task = start_eagerly(stuck())
        assert task is not None
        if settle:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
    assert cleaned == ["finally", "finally"]


async def _raises_key_error() -> None:
    raise KeyError("k")


async def test_results_errors_and_cancellation_of_the_first_step() -> None:
    async def value() -> int:
        return 42

    async def cancelled() -> None:
        raise asyncio.CancelledError()

    assert start_eagerly(value()) is None  # returned at once: no task
    with pytest.raises(asyncio.CancelledError):
        start_eagerly(cancelled())
    with pytest.raises(KeyError):
        start_eagerly(_raises_key_error())
    tasks = HandlerTasks("test")
    ended: List[Optional[BaseException]] = []
    tasks.start(cancelled, on_done=lambda exc: ended.append(exc) or True)
    assert len(ended) == 1 and isinstance(ended[0], asyncio.CancelledError)
    assert tasks.failed == 0


async def test_plain_functions_and_other_awaitables_still_work() -> None:
    tasks = HandlerTasks("test")
    seen: List[str] = []
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    assert tasks.start(seen.append, "sync") is None
    task = tasks.start(lambda: fut)  # an awaitable that is not a coroutine: a task
    assert task is not None and seen == ["sync"]
    fut.set_result("x")
    assert await asyncio.wait_for(task, 5) == "x"
