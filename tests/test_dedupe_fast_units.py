"""The dedupe window's fast paths keep its answers: ``seen_from`` is ``seen`` of the joined
key, the skipped move of the most recent sender and the skipped expiry pass change nothing
a caller can observe."""

from __future__ import annotations

import random
from typing import List, Tuple

from maim_message.core.dedupe import DedupeWindow


def _script(seed: int, steps: int = 3000) -> List[Tuple[str, Tuple[str, str], str, float]]:
    """Random calls: seen / forget, 6 senders, ids often repeated, time jumping past the ttl."""
    rnd = random.Random(seed)
    now = 0.0
    out = []
    for _ in range(steps):
        now += rnd.choice((0.0, 0.01, 0.5, 3.0, 12.0))
        op = "forget" if rnd.random() < 0.05 else "seen"
        sender = (f"u{rnd.randrange(6)}", rnd.choice(("qq", "wx")))
        out.append((op, sender, f"m{rnd.randrange(40)}", now))
    return out


def test_seen_from_answers_as_seen_of_the_joined_key() -> None:
    for seed in range(8):
        now = [0.0]
        joined = DedupeWindow(8, 10.0, clock=lambda now=now: now[0], max_senders=4, max_total=20)
        split = DedupeWindow(8, 10.0, clock=lambda now=now: now[0], max_senders=4, max_total=20)
        for op, sender, msg_id, t in _script(seed):
            now[0] = t
            if op == "forget":
                joined.forget((*sender, msg_id))
                split.forget((*sender, msg_id))
                continue
            assert joined.seen((*sender, msg_id)) == split.seen_from(sender, msg_id)
            assert len(joined) == len(split) and joined.senders == split.senders


def test_expiry_still_happens_after_a_long_quiet_stretch() -> None:
    now = [0.0]
    window = DedupeWindow(100, 10.0, clock=lambda: now[0])
    pair = ("u", "qq")
    for n in range(5):
        now[0] = float(n)
        assert not window.seen_from(pair, f"a{n}")
    assert window.seen_from(pair, "a0")  # within the ttl: a duplicate
    now[0] = 12.5  # a0..a2 are older than the ttl now
    assert not window.seen_from(pair, "b")
    assert len(window) == 3  # a3, a4, b
    assert not window.seen_from(pair, "a1")  # expired: seen anew
    now[0] = 100.0
    assert not window.seen_from(pair, "c")
    assert len(window) == 1


def test_the_most_recent_sender_stays_last_and_least_recent_is_dropped_first() -> None:
    now = [0.0]
    window = DedupeWindow(10, 100.0, clock=lambda: now[0], max_senders=2)
    a, b, c = ("a", "p"), ("b", "p"), ("c", "p")
    assert not window.seen_from(a, "1")
    assert not window.seen_from(b, "1")
    assert not window.seen_from(a, "2")  # a is the most recently active again
    assert not window.seen_from(a, "3")  # (no move needed: already last)
    assert not window.seen_from(c, "1")  # over max_senders: b, the least recent, goes
    assert window.seen_from(a, "1") and not window.seen_from(b, "1")
    window.clear()
    assert len(window) == 0 and not window.seen_from(a, "1")
