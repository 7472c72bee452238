"""0.6.8's thread-safe log queue (``maim_message.log_queue``), kept for importers.

Worker threads log through a :class:`LoggerProxy` into a ``queue.Queue``; a
:class:`LogQueueProcessor` task on the event loop forwards the records to a real logger
(stdlib, structlog or loguru). Unlike 0.6.8 it never prints to stderr.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import sys
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, Optional

__all__ = ["LogLevel", "LogMessage", "LogQueueProcessor", "LoggerProxy", "create_log_queue"]

_logger = logging.getLogger(__name__)


class LogLevel(Enum):
    TRACE = 0
    DEBUG = 10
    INFO = 20
    SUCCESS = 25
    WARNING = 30
    ERROR = 40
    CRITICAL = 50


_STD_LEVEL = {
    LogLevel.TRACE: 5, LogLevel.DEBUG: logging.DEBUG, LogLevel.INFO: logging.INFO,
    LogLevel.SUCCESS: logging.INFO, LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR, LogLevel.CRITICAL: logging.CRITICAL,
}


@dataclass
class LogMessage:
    level: LogLevel
    message: str
    exception: Optional[BaseException] = None
    extra: Optional[Dict[str, Any]] = None
    filename: Optional[str] = None
    function: Optional[str] = None
    line: Optional[int] = None
    timestamp: Optional[float] = None

    def __post_init__(self) -> None:
        if self.timestamp is None:
            self.timestamp = time.time()

    @classmethod
    def from_frame(cls, level: LogLevel, message: str, exception: Optional[BaseException] = None,
                   extra: Optional[Dict[str, Any]] = None) -> LogMessage:
        frame = inspect.currentframe()
        caller = frame.f_back.f_back if frame and frame.f_back else None
        return cls(level, message, exception, extra,
                   caller.f_code.co_filename if caller else None,
                   caller.f_code.co_name if caller else None,
                   caller.f_lineno if caller else None)


class LoggerProxy:
    """Logger-like object for worker threads; every call becomes a queued ``LogMessage``."""

    def __init__(self, log_queue: queue.Queue[LogMessage],
                 logger_name: str = "maim_message_worker",
                 bound_extra: Optional[Dict[str, Any]] = None) -> None:
        self._queue = log_queue
        self._logger_name = logger_name
        self._bound_extra = dict(bound_extra or {})

    def _log(self, level: LogLevel, message: str, exception: Optional[BaseException] = None,
             **kwargs: Any) -> None:
        extra = {**self._bound_extra, **kwargs} or None
        try:
            self._queue.put_nowait(LogMessage.from_frame(level, message, exception, extra))
        except queue.Full:
            _logger.debug("log queue full; dropped a record from %s", self._logger_name)

    def trace(self, message: str, **kwargs: Any) -> None:
        self._log(LogLevel.TRACE, message, **kwargs)

    def debug(self, message: str, **kwargs: Any) -> None:
        self._log(LogLevel.DEBUG, message, **kwargs)

    def info(self, message: str, **kwargs: Any) -> None:
        self._log(LogLevel.INFO, message, **kwargs)

    def success(self, message: str, **kwargs: Any) -> None:
        self._log(LogLevel.SUCCESS, message, **kwargs)

    def warning(self, message: str, **kwargs: Any) -> None:
        self._log(LogLevel.WARNING, message, **kwargs)

    def error(self, message: str, exception: Optional[BaseException] = None,
              **kwargs: Any) -> None:
        self._log(LogLevel.ERROR, message, exception, **kwargs)

    def critical(self, message: str, exception: Optional[BaseException] = None,
                 **kwargs: Any) -> None:
        self._log(LogLevel.CRITICAL, message, exception, **kwargs)

    def exception(self, message: str, **kwargs: Any) -> None:
        exc = kwargs.pop("exception", None) or sys.exc_info()[1]
        self._log(LogLevel.ERROR, message, exc, **kwargs)

    def bind(self, **kwargs: Any) -> LoggerProxy:
        return LoggerProxy(self._queue, self._logger_name, {**self._bound_extra, **kwargs})


class LogQueueProcessor:
    """Drains the queue on the event loop into ``real_logger``."""

    def __init__(self, log_queue: queue.Queue[LogMessage], real_logger: Any,
                 batch_size: int = 10, batch_timeout: float = 0.1) -> None:
        self._queue = log_queue
        self._real_logger = real_logger
        self._batch_size = batch_size
        self._batch_timeout = batch_timeout
        self._running = False
        self._processor_task: Optional[asyncio.Task[None]] = None

    def _emit(self, msg: LogMessage) -> None:
        target = self._real_logger
        try:
            if type(target).__module__.startswith("loguru"):
                bound = target.bind(**msg.extra) if msg.extra else target
                bound.log(msg.level.name, msg.message)
            elif msg.extra and hasattr(target, "bind"):
                target.bind(**msg.extra).log(_STD_LEVEL[msg.level], msg.message)
            else:
                target.log(_STD_LEVEL[msg.level], msg.message,
                           exc_info=msg.exception, extra=msg.extra)
        except Exception:
            _logger.debug("forwarding a queued log record failed", exc_info=True)

    async def _loop(self) -> None:
        while self._running:
            try:
                msg = self._queue.get_nowait()
            except queue.Empty:
                await asyncio.sleep(self._batch_timeout)
                continue
            self._emit(msg)
            for _ in range(self._batch_size - 1):
                try:
                    self._emit(self._queue.get_nowait())
                except queue.Empty:
                    break
            await asyncio.sleep(0)

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._processor_task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        self._running = False
        task, self._processor_task = self._processor_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        while True:
            try:
                self._emit(self._queue.get_nowait())
            except queue.Empty:
                break

    def is_running(self) -> bool:
        return self._running


def create_log_queue(maxsize: int = 1000) -> queue.Queue[LogMessage]:
    return queue.Queue(maxsize=maxsize)
