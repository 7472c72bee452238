"""Abuse limits as small sans-I/O objects: rate buckets, per-key counters, hit counters.

Nothing here touches a socket or reads a clock on its own: the clock is injected, so every
rule is unit-tested without sleeping. The server wires them in at the handshake (origin,
connections per key) and per text frame (token bucket: a few float operations).
"""

from __future__ import annotations

import re
import time
from typing import Callable, Dict, Hashable, Iterable, Optional

Clock = Callable[[], float]

# Reasons counted in ``get_stats()["limits"]`` (one counter each; the docs list them).
MESSAGE_SIZE = "message_size"
RATE = "rate"
CONNECTIONS_PER_KEY = "connections_per_key"
HANDSHAKE_TIMEOUT = "handshake_timeout"
IDLE_TIMEOUT = "idle_timeout"
WRITE_BUFFER = "write_buffer"
REQUEST_HEAD = "request_head"
BAD_HANDSHAKE = "bad_handshake"
ORIGIN = "origin"
PROTOCOL_ERROR = "protocol_error"
BINARY_FRAME = "binary_frame"
INVALID_UTF8 = "invalid_utf8"

LIMIT_REASONS = (
    MESSAGE_SIZE, RATE, CONNECTIONS_PER_KEY, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, WRITE_BUFFER,
    REQUEST_HEAD, BAD_HANDSHAKE, ORIGIN, PROTOCOL_ERROR, BINARY_FRAME, INVALID_UTF8,
)

_CLOSE_CODE_REASONS = {1009: MESSAGE_SIZE, 1007: INVALID_UTF8, 1003: BINARY_FRAME}


_SIZE_LIMIT = re.compile(r"limit of (\d+) bytes")


def size_limit_of(code: int, reason: str) -> Optional[int]:
    """The message size limit a 1009 close names ("... exceeds limit of N bytes": our
    server's and client's, and the websockets library's words), else None."""
    if code != 1009:
        return None
    found = _SIZE_LIMIT.search(reason or "")
    return int(found.group(1)) if found else None


def reason_for_close_code(code: int) -> str:
    """The counter a transport-level close belongs to (1002 and others: protocol_error)."""
    return _CLOSE_CODE_REASONS.get(code, PROTOCOL_ERROR)


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; one token per message.

    Starts full, so a client may send ``burst`` messages at once after connecting.
    """

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("TokenBucket needs rate > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def allow(self, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens; False (and nothing taken) when there are not enough."""
        now = self._clock()
        tokens = self._tokens + (now - self._last) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self._last = now
        if tokens < cost - 1e-9:  # tolerate float rounding of (now - last) * rate
            self._tokens = tokens
            return False
        self._tokens = tokens - cost
        return True

    def give_back(self, cost: float = 1.0) -> None:
        """Return tokens taken for a frame that turned out not to count (an ack of a
        message the server sent: a client that only receives must not hit the limit)."""
        self._tokens = min(self.burst, self._tokens + cost)

    @property
    def tokens(self) -> float:
        """Tokens available now (without taking any)."""
        return min(self.burst, self._tokens + (self._clock() - self._last) * self.rate)


class KeyConnectionCounter:
    """Open connections per API key, with an optional ceiling (``None`` = unlimited).

    The server checks :meth:`can_open` during the handshake (to answer HTTP 429 before
    upgrading) and calls :meth:`acquire` when the connection opens, so two handshakes
    racing for the last slot cannot both get in.
    """

    __slots__ = ("_counts", "limit")

    def __init__(self, limit: Optional[int] = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError("max connections per key must be >= 1 or None")
        self.limit = limit
        self._counts: Dict[str, int] = {}

    def can_open(self, key: str) -> bool:
        limit = self.limit
        return limit is None or self._counts.get(key, 0) < limit

    def acquire(self, key: str) -> bool:
        """Count one more connection for ``key``; False (not counted) when at the limit."""
        count = self._counts.get(key, 0)
        if self.limit is not None and count >= self.limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: str) -> int:
        """Count one connection less; returns how many are left (the key is forgotten at 0)."""
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
            return count
        self._counts.pop(key, None)
        return 0

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)

    def __len__(self) -> int:
        """How many keys have at least one connection."""
        return len(self._counts)


class LimitCounters:
    """How often each limit was hit; shared by the transport and the server."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: Dict[str, int] = dict.fromkeys(LIMIT_REASONS, 0)

    def hit(self, reason: str) -> None:
        self._counts[reason] = self._counts.get(reason, 0) + 1

    def __getitem__(self, reason: str) -> int:
        return self._counts.get(reason, 0)

    def snapshot(self) -> Dict[str, int]:
        """A copy: ``{reason: times hit}`` (every known reason present, zero or not)."""
        return dict(self._counts)

    @property
    def total(self) -> int:
        return sum(self._counts.values())


def normalize_origin(origin: str) -> str:
    """Origins compare case-insensitively and without a trailing slash."""
    return origin.strip().rstrip("/").lower()


class OriginPolicy:
    """An allowlist of browser origins (``scheme://host[:port]``); ``None`` = no check.

    A request without an ``Origin`` header is not from a browser and is not checked: the
    allowlist exists to stop other web pages from using a visitor's browser (and its
    network position) to reach the hub. ``"*"`` in the list allows every origin.
    """

    __slots__ = ("_allowed", "_any")

    def __init__(self, allowed: Optional[Iterable[str]]) -> None:
        self._allowed = (
            None if allowed is None else frozenset(normalize_origin(o) for o in allowed)
        )
        self._any = self._allowed is not None and "*" in self._allowed

    @property
    def enabled(self) -> bool:
        return self._allowed is not None

    def allows(self, origin: Optional[str]) -> bool:
        allowed = self._allowed
        if allowed is None or not origin or self._any:
            return True
        return normalize_origin(origin) in allowed


class FirstSeen:
    """Remembers the last ``max_entries`` keys; ``first(key)`` is True once per key.

    Used to log a limit hit once per peer (reason + key fingerprint or address) at
    WARNING and repeats at DEBUG, so a client that keeps reconnecting into a limit cannot
    flood the log. Bounded: the oldest keys are forgotten first.
    """

    __slots__ = ("_seen", "max_entries")

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._seen: Dict[Hashable, None] = {}

    def first(self, key: Hashable) -> bool:
        seen = self._seen
        if key in seen:
            return False
        seen[key] = None
        if len(seen) > self.max_entries:
            del seen[next(iter(seen))]
        return True

    def __len__(self) -> int:
        return len(self._seen)
