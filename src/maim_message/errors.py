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


class ConfigError(MaimMessageError, ValueError):
    """A configuration value is missing or invalid; the message names the key."""


class ServerStartError(MaimMessageError, RuntimeError):
    """The server could not start listening (port in use, bad TLS files, ...)."""


class ClusterError(MaimMessageError, RuntimeError):
    """The cluster store (Redis) did not confirm an operation in time, or the cluster
    backend is not running. Defined here so it can be caught without redis installed."""


class AuthRejectedError(MaimMessageError, ConnectionError):
    """The server refused this client's credentials: the one refusal signal of every client.

    ``status`` is the HTTP status of a refusal before the upgrade (401/403); a server that
    accepts the upgrade and then refuses (0.6.8 does) leaves it ``None`` and sets
    ``close_code`` and ``reason`` from its close frame.
    """

    def __init__(
        self, status: Optional[int] = None, reason: str = "", close_code: Optional[int] = None
    ) -> None:
        if status is not None:
            text = f"server rejected WebSocket connection: HTTP {status}"
            text += f" ({reason})" if reason else ""
        else:
            text = f"server refused authentication after the upgrade: {close_code} {reason}"
        super().__init__(text.strip())
        self.status = status
        self.reason = reason
        self.close_code = close_code


class DeliveryRefused(MaimMessageError):
    """A message was not queued for delivery: its receiver has no live connection and
    the receiver's outbox is at a bound (too many platforms queued for that user).

    The hub answers the frame that carried such a message with a ``sys_error`` naming
    ``field`` instead of acking it. Nothing was stored.
    """

    def __init__(self, message: str, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.field = field
