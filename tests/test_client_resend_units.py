"""The client's re-send clock (no sockets): which unacked frames are written again on the
live connection, and when."""

from __future__ import annotations

from typing import List

from maim_message.client.resend_clock import ResendClock
from maim_message.core.outbox import OutboxEntry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def entries(count: int) -> List[OutboxEntry]:
    return [OutboxEntry(seq, f"m{seq}", b"x", 0.0) for seq in range(1, count + 1)]


def test_a_frame_is_due_once_it_waited_the_interval_then_twice_as_long() -> None:
    clock = Clock()
    resend = ResendClock(10.0, max_interval=30.0, clock=clock)
    frame, = entries(1)
    resend.written(frame)
    waits: List[float] = []
    for _ in range(4):
        start = clock.now
        while not resend.due([frame], upto=1):
            clock.now += resend.tick
        waits.append(clock.now - start)
    assert waits == [10.0, 20.0, 30.0, 30.0]  # doubling, capped
    resend.written(frame)  # written anew (a reconnect): the backoff starts again
    clock.now += 10
    assert resend.due([frame], upto=1) == [frame]


def test_each_frame_keeps_its_own_time_whatever_else_is_acked() -> None:
    """A server slow on one frame only: the frames around it are acked (they leave the
    outbox), and the slow one is re-sent at its own pace, not at every tick."""
    clock = Clock()
    resend = ResendClock(10.0, clock=clock)
    slow, *others = entries(81)
    resend.written(slow)
    sent = 0
    for other in others:  # one new frame every 0.5 s, acked at once
        clock.now += 0.5
        resend.written(other)
        sent += len(resend.due([slow], upto=other.seq))
    assert sent == 2  # at 10 s and at 30 s, in 40 s of traffic


def test_only_frames_written_on_this_connection_are_due() -> None:
    clock = Clock()
    resend = ResendClock(1.0, clock=clock)
    frames = entries(3)
    for frame in frames:
        resend.written(frame)
    clock.now += 1
    assert resend.due(frames, upto=2) == frames[:2]  # the third is not written yet


def test_an_interval_of_zero_turns_it_off() -> None:
    assert not ResendClock(0.0).enabled and ResendClock(0.5).enabled
