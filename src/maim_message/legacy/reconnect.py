"""Reconnect loop shared by the legacy ws and tcp client transports.

Delay after a failed attempt ``n`` (0-based) is ``min(max_reconnect_delay,
reconnect_interval * 2 ** min(n, 5))`` -> 2, 4, 8, 10, 10 ... s with the 0.6.8 defaults;
after an established connection drops, the next attempt waits ``reconnect_interval``.
The loop runs until ``stop()``; every reconnect restarts reading (0.6.8's TCP client did
not), and ``stop()`` leaves no task behind.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Generic, Optional, TypeVar

from .logsupport import Log

__all__ = ["ReconnectingTransport", "backoff_delay"]

S = TypeVar("S")
Deliver = Callable[[Any], None]


def backoff_delay(failures: int, base: float, cap: float) -> float:
    return float(min(cap, base * (2 ** min(failures, 5))))


class ReconnectingTransport(Generic[S]):
    """Subclasses implement ``_open`` (one connection attempt), ``_serve`` (read until the
    connection ends), ``_close_session`` and ``send``."""

    def __init__(self, deliver: Deliver, log: Log) -> None:
        self._deliver = deliver
        self._log = log
        self.reconnect_interval = 2.0
        self.max_reconnect_delay = 10.0
        self.retry_count = 0
        self._session: Optional[S] = None
        self._running = False
        self._wakeup: Optional[asyncio.Event] = None
        self._connected: Optional[asyncio.Event] = None
        self._run_task: Optional[asyncio.Task[Any]] = None

    # -- subclass hooks ------------------------------------------------------------------
    async def _open(self) -> S:
        raise NotImplementedError

    async def _serve(self, session: S) -> None:
        raise NotImplementedError

    async def _close_session(self, session: S) -> None:
        raise NotImplementedError

    def _session_open(self, session: S) -> bool:
        return True

    def _refused(self, session: S) -> bool:
        """True when the peer ended the session as an auth refusal (counts as a failure)."""
        return False

    async def send(self, message: Any) -> bool:
        """Send one JSON value; False when not connected."""
        raise NotImplementedError

    # -- state -------------------------------------------------------------------------
    def _connected_event(self) -> asyncio.Event:
        if self._connected is None:
            self._connected = asyncio.Event()
        return self._connected

    def is_connected(self) -> bool:
        session = self._session
        return session is not None and self._session_open(session)

    async def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Wait until a connection is up; False on timeout."""
        if self.is_connected():
            return True
        try:
            await asyncio.wait_for(self._connected_event().wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    # -- loop ----------------------------------------------------------------------------
    async def _pause(self, delay: float) -> None:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        try:
            await asyncio.wait_for(self._wakeup.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def run(self) -> None:
        self._running = True
        self._wakeup = asyncio.Event()
        self._run_task = asyncio.current_task()
        connected = self._connected_event()
        try:
            while self._running:
                try:
                    session = await self._open()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    delay = backoff_delay(
                        self.retry_count, self.reconnect_interval, self.max_reconnect_delay
                    )
                    self.retry_count += 1
                    self._log.warning("connection attempt failed (%s); retrying in %.1f s",
                                      _describe(exc), delay)
                    if self._running:
                        await self._pause(delay)
                    continue
                if not self._running:
                    await self._close_session(session)
                    break
                self._session = session
                connected.set()
                try:
                    await self._serve(session)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._log.warning("connection lost: %s", _describe(exc))
                finally:
                    self._session = None
                    connected.clear()
                    await self._close_session(session)
                if self._running:
                    failures = 0
                    if self._refused(session):  # e.g. a 0.6.8 server's close 1008
                        failures = self.retry_count
                        self.retry_count += 1
                    else:
                        self.retry_count = 0
                    delay = backoff_delay(failures, self.reconnect_interval,
                                          self.max_reconnect_delay)
                    self._log.info("disconnected; reconnecting in %.1f s", delay)
                    await self._pause(delay)
        finally:
            self._running = False
            self._session = None
            connected.clear()
            self._run_task = None

    async def stop(self) -> None:
        self._running = False
        if self._wakeup is not None:
            self._wakeup.set()
        session = self._session
        if session is not None:
            try:
                await self._close_session(session)
            except Exception:  # pragma: no cover - best effort
                pass
        task = self._run_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            done, _ = await asyncio.wait({task}, timeout=5.0)
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
