"""Every limit and default of the WebSocket side, defined once (httpx's DEFAULT_LIMITS shape).

ServerConfig, the hub's ``[limits]`` section, the transports' options, the client config
and the legacy stack take their defaults from here, and the server passes its values to
the transport with :func:`limit_values` instead of naming each field again.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, Optional

MIB = 1024 * 1024

# 0.6.8's max_size on both sides (100 MiB): the largest frame a peer may send.
MAX_MESSAGE_SIZE = 104_857_600


@dataclass(frozen=True)
class TransportLimits:
    """Per-connection limits of the server transports (asyncio and ASGI).

    The fields are named as in ``ServerConfig`` and the hub's ``[limits]`` section.
    """

    max_message_size: int = MAX_MESSAGE_SIZE
    ping_interval: Optional[float] = 20.0  # s between keepalive pings; None: off
    ping_timeout: Optional[float] = 20.0  # s to wait for the pong
    handshake_timeout: float = 10.0  # s from TCP accept to a completed upgrade
    close_timeout: float = 5.0  # s to wait for the peer's close frame
    max_write_buffer: int = 256 * MIB  # unsent bytes before the connection is closed (1008)
    send_buffer_high: int = 4 * MIB  # above this a connection counts as not writable
    slow_consumer_timeout: float = 60.0  # s not writable before it is closed
    idle_timeout: Optional[float] = None  # s without a data frame before 1001; None: off


DEFAULT_LIMITS = TransportLimits()

LIMIT_FIELDS = tuple(f.name for f in fields(TransportLimits))


def limit_values(source: Any) -> Dict[str, Any]:
    """The transport-limit fields of any object that has them (a config, settings)."""
    return {name: getattr(source, name) for name in LIMIT_FIELDS}


@dataclass(frozen=True)
class OutboxLimits:
    """Bounds of the server's outbox (docs/delivery.md)."""

    max_per_pair: int = 10_000  # unacked messages kept per (user, platform)
    max_bytes: int = 512 * MIB  # all pairs together
    max_bytes_per_user: int = 128 * MIB  # one receiving user's share of max_bytes
    max_pairs_per_user: int = 64  # platforms with queued messages per receiving user
    ttl: float = 86_400.0  # s an undelivered message is kept


DEFAULT_OUTBOX = OutboxLimits()
