"""The one reconnect-and-backoff policy of every client, driven without sockets."""

from __future__ import annotations

from typing import List, Optional

from maim_message.errors import AuthRejectedError, MaimMessageError
from maim_message.runtime.reconnect import ReconnectPolicy, refusal_for_status


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
