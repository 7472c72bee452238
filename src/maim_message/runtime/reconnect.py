"""When a client tries again: the one reconnect-and-backoff policy of every client.

Sans-I/O: :class:`ReconnectPolicy` is told what happened and answers with the delay before
the next attempt (``None``: stop trying). :func:`keep_connected` is the one loop around it,
with the I/O injected (connect, serve, pause), used by the API-Server clients
(``client/connection.py``) and by ``MessageClient`` in ws and tcp mode
(``legacy/reconnect.py``).

The delay after the n-th consecutive failure is ``min(max_delay, base_delay * 2 ** (n-1))``.
A connection that was up and then dropped counts as the first failure (a prompt retry); a
refusal of the credentials (:class:`~maim_message.errors.AuthRejectedError`) counts as a
failure without that reset, and ends the retries when ``give_up_on_refusal`` is set.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Optional, TypeVar

from ..errors import AuthRejectedError

__all__ = ["ReconnectPolicy", "keep_connected", "refusal_for_status"]

S = TypeVar("S")

_MAX_EXPONENT = 30  # 2**30 * any sane base is far beyond every max_delay


class ReconnectPolicy:
    """Consecutive-failure counter plus the backoff rule (no clock, no I/O)."""

    __slots__ = ("base_delay", "failures", "give_up_on_refusal", "max_attempts", "max_delay",
                 "retry")

    def __init__(
        self, base_delay: float = 2.0, max_delay: float = 10.0, *, max_attempts: int = 0,
        give_up_on_refusal: bool = False, retry: bool = True,
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_attempts = max_attempts  # failures in a row before giving up; 0 = never
        self.give_up_on_refusal = give_up_on_refusal
        self.retry = retry  # False: one attempt, no reconnect
        self.failures = 0

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (>= 1)."""
        exponent = min(max(failures - 1, 0), _MAX_EXPONENT)
        return float(min(self.max_delay, self.base_delay * 2 ** exponent))

    def attempt_failed(self, error: Optional[BaseException] = None) -> Optional[float]:
        """A connection attempt failed (or was refused): the delay, or None to stop."""
        self.failures += 1
        if not self.retry:
            return None
        if isinstance(error, AuthRejectedError) and self.give_up_on_refusal:
            return None
        if self.max_attempts and self.failures > self.max_attempts:
            return None
        return self.delay(self.failures)

    def connection_lost(self, refusal: Optional[AuthRejectedError] = None) -> Optional[float]:
        """An established connection ended; a refusal after the upgrade keeps the count."""
        if refusal is None:
            self.failures = 0
        return self.attempt_failed(refusal)

    def gave_up(self) -> bool:
        """True when the last failure ended the retries because of ``max_attempts``."""
        return bool(self.max_attempts) and self.failures > self.max_attempts


REFUSAL_STATUSES = (401, 403)


def refusal_for_status(status: int) -> Optional[AuthRejectedError]:
    """The refusal signal for an HTTP answer to the upgrade, or None (another failure)."""
    return AuthRejectedError(status) if status in REFUSAL_STATUSES else None


async def keep_connected(
    policy: ReconnectPolicy,
    attempt: Callable[[], Awaitable[S]],
    serve: Callable[[S], Awaitable[Optional[AuthRejectedError]]],
    pause: Callable[[float], Awaitable[None]],
    wanted: Callable[[], bool],
    report: Callable[[Optional[BaseException], bool, Optional[float]], None],
) -> None:
    """Connect, serve, and reconnect as ``policy`` says, until ``wanted()`` is False or the
    policy stops.

    ``attempt()`` opens a session or raises (an :class:`AuthRejectedError` for a refused
    credential); ``serve(session)`` runs it to its end and returns the refusal that ended
    it, if any. After every failed attempt or ended session
    ``report(error, was_connected, delay)`` runs (``delay`` None: no further attempt), then
    ``pause(delay)``. Cancellation passes through.
    """
    while wanted():
        delay: Optional[float]
        try:
            session = await attempt()
        except Exception as exc:
            delay = policy.attempt_failed(exc)
            report(exc, False, delay)
        else:
            refusal = await serve(session)
            delay = policy.connection_lost(refusal)
            report(refusal, True, delay)
        if delay is None or not wanted():
            return
        await pause(delay)
