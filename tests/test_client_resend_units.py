"""The client's re-send clock (no sockets): when unacked frames are written again on the
live connection."""

from __future__ import annotations

from typing import List

from maim_message.client.resend_clock import ResendClock


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_frames_are_due_once_they_waited_the_interval() -> None:
    clock = Clock()
    resend = ResendClock(8.0, clock=clock)
    resend.written(1)
    clock.now += 4
    resend.written(2)
    assert resend.due() == 0  # nothing waited 8 s yet
    clock.now += 4
    assert resend.due() == 1  # frame 1 waited 8 s; frame 2 only 4
    assert resend.due() == 0  # asked once
    clock.now += 4
    assert resend.due() == 2


def test_writes_within_one_slice_share_a_record() -> None:
    clock = Clock()
    resend = ResendClock(8.0, clock=clock)  # slices of 1 s
    for seq in range(1, 10_001):
        clock.now += 0.00005  # 10,000 frames in half a second
        resend.written(seq)
    assert len(resend._slices) == 1  # memory stays flat however many frames
    clock.now += 8
    assert resend.due() == 10_000


def test_a_round_without_an_ack_doubles_the_wait_and_an_ack_resets_it() -> None:
    clock = Clock()
    resend = ResendClock(10.0, max_interval=30.0, clock=clock)
    waits: List[float] = []
    for _ in range(4):
        resend.written(1)
        start = clock.now
        while not resend.due():
            clock.now += resend.tick
        waits.append(clock.now - start)
        resend.resent()
    assert waits == [10.0, 20.0, 30.0, 30.0]  # capped
    resend.acked()
    assert resend.interval == 10.0
    resend.written(2)
    resend.reset()  # a new connection: its own writes only
    clock.now += 100
    assert resend.due() == 0


def test_an_interval_of_zero_turns_it_off() -> None:
    assert not ResendClock(0.0).enabled and ResendClock(0.5).enabled
