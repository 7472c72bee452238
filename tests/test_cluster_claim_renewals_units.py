"""Which frame claims a node writes again while their handlers run (no I/O)."""

from __future__ import annotations

from typing import List

from maim_message.backends.frame_dedupe import ClaimRenewals


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_claim_is_due_every_half_bucket_while_its_handler_runs() -> None:
    clock = Clock()
    renewals = ClaimRenewals(60.0, clock=clock)
    renewals.claimed("t1")
    clock.now += 29.9
    assert renewals.due() == []
    clock.now += 0.1
    assert renewals.due() == ["t1"]  # 30 s old: written again now
    assert renewals.due() == []  # and counts as written
    clock.now += 30.0
    assert renewals.due() == ["t1"]


def test_a_recorded_or_given_back_frame_is_not_renewed() -> None:
    clock = Clock()
    renewals = ClaimRenewals(60.0, clock=clock)
    renewals.claimed("t1")
    renewals.claimed("t2")
    renewals.ended("t1")  # recorded as handled
    renewals.ended("t9")  # never claimed here: nothing happens
    clock.now += 30.0
    assert renewals.due() == ["t2"]
    assert len(renewals) == 1


def test_a_handler_that_never_returns_does_not_hold_its_frame_forever() -> None:
    clock = Clock()
    renewals = ClaimRenewals(60.0, max_age=90.0, clock=clock)
    renewals.claimed("t1")
    due: List[List[str]] = []
    for _ in range(4):
        clock.now += 30.0
        due.append(renewals.due())
    assert due == [["t1"], ["t1"], [], []]  # dropped at 90 s
    assert len(renewals) == 0


def test_claims_held_at_once_are_bounded() -> None:
    renewals = ClaimRenewals(60.0, cap=2, clock=Clock())
    for token in ("t1", "t2", "t3"):
        renewals.claimed(token)
    assert len(renewals) == 2  # the third relies on its bucket alone
    renewals.clear()
    assert len(renewals) == 0
