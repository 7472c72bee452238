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
    """The server refused the connection (HTTP 401/403 before the upgrade)."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"server rejected WebSocket connection: HTTP {status}" +
                         (f" ({reason})" if reason else ""))
        self.status = status
        self.reason = reason
