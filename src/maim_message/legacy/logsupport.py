"""Per-object logging for the legacy API.

0.6.8 swapped a process-wide logger when ``custom_logger`` was given and installed its own
handler. Here every object logs through its own :class:`Log`: the module logger by default,
or the ``custom_logger`` passed to that object (a stdlib ``Logger`` or anything with
``debug``/``info``/``warning``/``error`` methods, e.g. loguru or structlog). Nothing is
configured globally and tokens are never passed to a log call.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Union

from ..core.codec import dumps_compat

__all__ = ["Log", "encoded_or_logged"]


class Log:
    """Small adapter: lazy ``%`` formatting for stdlib loggers, pre-formatted text otherwise."""

    __slots__ = ("_std", "target")

    def __init__(self, name: str, custom_logger: Optional[Any] = None) -> None:
        self.target: Any = custom_logger if custom_logger is not None else logging.getLogger(name)
        self._std = isinstance(self.target, (logging.Logger, logging.LoggerAdapter))

    def _emit(
        self, level: int, method: str, msg: str, args: tuple, exc: Union[bool, BaseException]
    ) -> None:
        target = self.target
        if self._std:
            if target.isEnabledFor(level):
                target.log(level, msg, *args, exc_info=exc)
            return
        text = msg % args if args else msg
        if isinstance(exc, BaseException):
            text = f"{text}: {exc!r}"
        elif exc and hasattr(target, "exception"):
            target.exception(text)
            return
        fn = getattr(target, method, None)
        if fn is None:
            return
        try:
            fn(text)
        except Exception:  # a broken custom logger must never break message flow
            logging.getLogger(__name__).debug("custom logger failed", exc_info=True)

    def debug(self, msg: str, *args: Any) -> None:
        self._emit(logging.DEBUG, "debug", msg, args, False)

    def info(self, msg: str, *args: Any) -> None:
        self._emit(logging.INFO, "info", msg, args, False)

    def warning(self, msg: str, *args: Any) -> None:
        self._emit(logging.WARNING, "warning", msg, args, False)

    def error(self, msg: str, *args: Any, exc: Union[bool, BaseException] = False,
              exc_info: Any = None) -> None:
        """``exc_info`` as in ``logging`` (a ``(type, value, tb)`` tuple) is also accepted."""
        if isinstance(exc_info, tuple) and len(exc_info) == 3:
            exc = exc_info[1]
        self._emit(logging.ERROR, "error", msg, args, exc)

    def exception(self, msg: str, *args: Any) -> None:
        self._emit(logging.ERROR, "error", msg, args, True)


def encoded_or_logged(message: Any, log: Log) -> Optional[bytes]:
    """The message as JSON, or None when JSON cannot represent it (a ``set``, an object):
    logged at ERROR and the send returns False, as 0.6.8's did (no exception to the bot)."""
    try:
        return dumps_compat(message)
    except (TypeError, ValueError) as exc:
        log.error("message not sent: it cannot be encoded as JSON (%s)", exc)
        return None
