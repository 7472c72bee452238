"""Exception types users can catch and act on.

Every error the library raises on purpose derives from :class:`MaimMessageError`, so a
caller can catch the whole family; the specific classes say which input was wrong.
"""

from __future__ import annotations

from typing import Optional


class MaimMessageError(Exception):
    """Base class of every error raised on purpose by maim_message."""


class EnvelopeError(MaimMessageError, ValueError):
    """A frame could not be decoded into a valid envelope.

    ``field`` names the offending field (dotted path), or is ``None`` when the frame is not
    JSON at all. Subclasses ``ValueError`` so code written for 0.6.8 still catches it.
    """

    def __init__(self, message: str, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.field = field


class MessageTooLargeError(MaimMessageError, ValueError):
    """A frame or message is bigger than the configured limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds limit of {limit} bytes")
        self.size = size
        self.limit = limit


class ConfigError(MaimMessageError, ValueError):
    """A configuration value is missing or invalid; the message names the key."""


class ServerStartError(MaimMessageError, RuntimeError):
    """The server could not start listening (port in use, bad TLS files, ...)."""


class NotConnectedError(MaimMessageError, ConnectionError):
    """An operation needs a live connection and there is none."""


class AuthRejectedError(MaimMessageError, ConnectionError):
    """The server refused the connection (HTTP 401/403 before the upgrade)."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"server rejected WebSocket connection: HTTP {status}" +
                         (f" ({reason})" if reason else ""))
        self.status = status
        self.reason = reason


class DeliveryRefused(MaimMessageError):
    """A message was not queued for delivery: its receiver has no live connection and
    the receiver's outbox is at a bound (too many platforms queued for that user).

    The hub answers the frame that carried such a message with a ``sys_error`` naming
    ``field`` instead of acking it. Nothing was stored.
    """

    def __init__(self, message: str, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.field = field
