"""The one reconnect-and-backoff policy of every client, driven without sockets."""

from __future__ import annotations

from typing import List, Optional, Tuple

from maim_message.errors import AuthRejectedError, MaimMessageError
from maim_message.runtime.reconnect import (
    ReconnectPolicy,
    keep_connected,
    refusal_for_status,
)


def delays(policy: ReconnectPolicy, n: int) -> List[Optional[float]]:
    return [policy.attempt_failed(OSError("refused")) for _ in range(n)]


def test_backoff_doubles_up_to_the_cap() -> None:
    assert delays(ReconnectPolicy(2.0, 10.0), 6) == [2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert delays(ReconnectPolicy(1.0, 30.0), 7) == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_huge_failure_counts_do_not_overflow() -> None:
    policy = ReconnectPolicy(0.5, 60.0)
    policy.failures = 10_000
    assert policy.attempt_failed() == 60.0


def test_a_lost_connection_retries_promptly_and_resets_the_count() -> None:
    policy = ReconnectPolicy(2.0, 10.0)
    delays(policy, 4)
    assert policy.connection_lost() == 2.0
    assert policy.failures == 1
    assert policy.attempt_failed() == 4.0


def test_refusal_after_upgrade_keeps_counting() -> None:
    policy = ReconnectPolicy(2.0, 10.0)
    refusal = AuthRejectedError(None, "bad token", close_code=1008)
    assert [policy.connection_lost(refusal) for _ in range(3)] == [2.0, 4.0, 8.0]


def test_give_up_on_refusal() -> None:
    policy = ReconnectPolicy(1.0, 5.0, give_up_on_refusal=True)
    assert policy.attempt_failed(OSError()) == 1.0
    assert policy.attempt_failed(AuthRejectedError(403)) is None
    assert not policy.gave_up()  # stopped for the refusal, not for the attempt limit
    legacy = ReconnectPolicy(1.0, 5.0)  # 0.6.8 clients keep trying
    assert legacy.attempt_failed(AuthRejectedError(401)) == 1.0


def test_max_attempts_then_give_up() -> None:
    policy = ReconnectPolicy(1.0, 5.0, max_attempts=2)
    assert delays(policy, 3) == [1.0, 2.0, None]
    assert policy.gave_up()


def test_no_retry_when_disabled() -> None:
    policy = ReconnectPolicy(1.0, 5.0, retry=False)
    assert policy.attempt_failed(OSError()) is None
    assert policy.connection_lost() is None
    assert not policy.gave_up()


def test_refusal_signal() -> None:
    for status in (401, 403):
        refusal = refusal_for_status(status)
        assert isinstance(refusal, AuthRejectedError)
        assert isinstance(refusal, MaimMessageError) and isinstance(refusal, ConnectionError)
        assert refusal.status == status
        assert str(refusal) == f"server rejected WebSocket connection: HTTP {status}"
    assert refusal_for_status(404) is None
    after = AuthRejectedError(None, "Authentication failed", close_code=1000)
    assert after.status is None and after.close_code == 1000
    assert "Authentication failed" in str(after)


# -- the one loop around the policy, with fake I/O --------------------------------------------
class Script:
    """Connection attempts that follow a script: an exception to raise, or "up" followed by
    how that session ends (a refusal, or None: a plain drop)."""

    def __init__(self, steps: List[object], stop_after: int) -> None:
        self.steps = list(steps)
        self.stop_after = stop_after
        self.reports: List[Tuple[Optional[str], bool, Optional[float]]] = []
        self.paused: List[float] = []
        self.served = 0

    def wanted(self) -> bool:
        return len(self.reports) < self.stop_after and bool(self.steps)

    async def attempt(self) -> str:
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return "session"

    async def serve(self, session: str) -> Optional[AuthRejectedError]:
        self.served += 1
        end = self.steps.pop(0)  # the step after "up": how the session ended
        assert end is None or isinstance(end, AuthRejectedError)
        return end

    async def pause(self, delay: float) -> None:
        self.paused.append(delay)

    def report(self, error: Optional[BaseException], was_connected: bool,
               delay: Optional[float]) -> None:
        self.reports.append((type(error).__name__ if error else None, was_connected, delay))


async def test_keep_connected_backs_off_and_resets_after_a_session() -> None:
    script = Script([OSError(), OSError(), "up", None, OSError()], stop_after=4)
    await keep_connected(ReconnectPolicy(1.0, 10.0), script.attempt, script.serve,
                         script.pause, script.wanted, script.report)
    assert script.reports == [("OSError", False, 1.0), ("OSError", False, 2.0),
                              (None, True, 1.0), ("OSError", False, 2.0)]
    assert script.paused == [1.0, 2.0, 1.0]  # no pause once nobody wants the connection
    assert script.served == 1


async def test_keep_connected_stops_on_refusal_when_told() -> None:
    script = Script([OSError(), AuthRejectedError(403), OSError()], stop_after=10)
    await keep_connected(ReconnectPolicy(1.0, 10.0, give_up_on_refusal=True), script.attempt,
                         script.serve, script.pause, script.wanted, script.report)
    assert script.reports == [("OSError", False, 1.0), ("AuthRejectedError", False, None)]
    assert script.steps  # the third attempt never happened


async def test_keep_connected_refusal_after_upgrade() -> None:
    refusal = AuthRejectedError(None, "Authentication failed", close_code=1000)
    script = Script(["up", refusal, "up", refusal], stop_after=10)
    await keep_connected(ReconnectPolicy(1.0, 10.0), script.attempt, script.serve,
                         script.pause, script.wanted, script.report)
    # a refusal keeps counting (0.6.8 clients retry, with a growing delay)
    assert script.reports == [("AuthRejectedError", True, 1.0),
                              ("AuthRejectedError", True, 2.0)]
