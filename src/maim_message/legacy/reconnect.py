"""Reconnect loop shared by the legacy ws and tcp client transports.

The delays come from the project's one policy (:class:`~maim_message.runtime.reconnect.
ReconnectPolicy`): 2, 4, 8, 10, 10 ... s with the 0.6.8 defaults, the first retry after an
established connection drops waits ``reconnect_interval``. A refusal of the token
(:class:`~maim_message.errors.AuthRejectedError`: HTTP 401/403, or a 0.6.8 server's close
1008) counts as a failure and is retried, as 0.6.8 did. The loop runs until ``stop()``;
every reconnect restarts reading (0.6.8's TCP client did not), and ``stop()`` leaves no
task behind.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Generic, Optional, TypeVar

from ..errors import AuthRejectedError
from ..runtime.reconnect import ReconnectPolicy, keep_connected
from .logsupport import Log

__all__ = ["ReconnectingTransport"]

S = TypeVar("S")
Deliver = Callable[[Any], None]


class ReconnectingTransport(Generic[S]):
    """Subclasses implement ``_open`` (one connection attempt), ``_serve`` (read until the
    connection ends), ``_close_session`` and ``send``."""

    def __init__(self, deliver: Deliver, log: Log) -> None:
        self._deliver = deliver
        self._log = log
        self.policy = ReconnectPolicy(2.0, 10.0)
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

    def _refusal(self, session: S) -> Optional[AuthRejectedError]:
        """The refusal signal when the peer ended the session as an auth refusal."""
        return None

    async def send(self, message: Any) -> bool:
        """Send one JSON value; False when not connected."""
        raise NotImplementedError

    # -- policy knobs (0.6.8 attribute names) --------------------------------------------
    @property
    def reconnect_interval(self) -> float:
        return self.policy.base_delay

    @reconnect_interval.setter
    def reconnect_interval(self, value: float) -> None:
        self.policy.base_delay = value

    @property
    def max_reconnect_delay(self) -> float:
        return self.policy.max_delay

    @max_reconnect_delay.setter
    def max_reconnect_delay(self, value: float) -> None:
        self.policy.max_delay = value

    @property
    def retry_count(self) -> int:
        """Consecutive failed attempts."""
        return self.policy.failures

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
            await keep_connected(self.policy, self._open, self._run_session, self._pause,
                                 lambda: self._running, self._report)
        finally:
            self._running = False
            self._session = None
            connected.clear()
            self._run_task = None

    async def _run_session(self, session: S) -> Optional[AuthRejectedError]:
        if not self._running:  # stopped while connecting
            await self._close_session(session)
            return None
        connected = self._connected_event()
        self._session = session
        connected.set()
        try:
            await self._serve(session)
        except Exception as exc:
            self._log.warning("connection lost: %s", _describe(exc))
        finally:
            self._session = None
            connected.clear()
            await self._close_session(session)
        return self._refusal(session)

    def _report(self, error: Optional[BaseException], was_connected: bool,
                delay: Optional[float]) -> None:
        if not was_connected:
            self._log.warning("connection attempt failed (%s); retrying in %.1f s",
                              _describe(error) if error else "?", delay or 0.0)
        elif self._running:
            self._log.info("disconnected; reconnecting in %.1f s", delay or 0.0)

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
