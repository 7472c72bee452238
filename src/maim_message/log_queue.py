"""0.6.8 module path ``maim_message.log_queue``."""

from __future__ import annotations

from .legacy.log_queue import (
    LoggerProxy,
    LogLevel,
    LogMessage,
    LogQueueProcessor,
    create_log_queue,
)

__all__ = ["LogLevel", "LogMessage", "LogQueueProcessor", "LoggerProxy", "create_log_queue"]
