"""When a client tries again: the one reconnect-and-backoff policy of every client.

Sans-I/O: the connection loops (``client/connection.py`` for the API-Server clients,
``legacy/reconnect.py`` for ``MessageClient`` in ws and tcp mode) report what happened and
sleep for the delay this object returns; ``None`` means stop trying.

The delay after the n-th consecutive failure is ``min(max_delay, base_delay * 2 ** (n-1))``.
A connection that was up and then dropped counts as the first failure (a prompt retry); a
refusal of the credentials (:class:`~maim_message.errors.AuthRejectedError`) counts as a
failure without that reset, and ends the retries when ``give_up_on_refusal`` is set.
"""

from __future__ import annotations

from typing import Optional

from ..errors import AuthRejectedError

__all__ = ["ReconnectPolicy"]

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
