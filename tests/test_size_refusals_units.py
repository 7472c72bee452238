"""Which queued message a receiver keeps refusing as too big (no sockets)."""

from __future__ import annotations

import pytest

from maim_message.core.size_refusals import SizeRefusals
from maim_message.transport.protocol import OPEN, SessionState

PAIR = ("bob", "qq")


def test_the_same_suspect_on_three_closes_in_a_row_is_given_up() -> None:
    refusals = SizeRefusals()
    assert not refusals.refused(PAIR, "big")
    assert not refusals.refused(PAIR, "big")
    assert refusals.strikes_of(PAIR) == 2
    assert refusals.refused(PAIR, "big")  # the third close: give it up
    assert refusals.strikes_of(PAIR) == 0  # forgotten once given up


def test_another_suspect_starts_the_count_again() -> None:
    refusals = SizeRefusals()
    refusals.refused(PAIR, "big")
    refusals.refused(PAIR, "big")
    assert not refusals.refused(PAIR, "other")  # a different message: one strike
    assert refusals.strikes_of(PAIR) == 1
    assert not refusals.refused(("carol", "qq"), "big")  # counted per pair


def test_remembered_pairs_are_bounded() -> None:
    refusals = SizeRefusals(strikes=2, max_pairs=3)
    for n in range(10):
        refusals.refused((f"u{n}", "qq"), "m")
    assert [refusals.strikes_of((f"u{n}", "qq")) for n in range(10)] == [0] * 7 + [1] * 3
    with pytest.raises(ValueError):
        SizeRefusals(strikes=0)


def test_a_session_knows_whether_the_peer_closed_first() -> None:
    theirs = SessionState(OPEN)
    theirs.close_received(1009, "too big")
    assert theirs.closed_by_peer and theirs.close_code == 1009
    ours = SessionState(OPEN)
    assert ours.start_close(1009, "message of 9 bytes exceeds limit of 5 bytes")
    ours.close_received(1009, "message of 9 bytes exceeds limit of 5 bytes")  # the echo
    assert not ours.closed_by_peer


async def test_under_asgi_a_1009_is_never_taken_for_the_receivers_limit() -> None:
    """The ASGI server reports its own size limit (uvicorn's ws_max_size) as a disconnect
    with 1009: under ASGI such a close gives nothing up."""
    from maim_message.transport.asgi import ASGIServerConnection

    async def send(message: object) -> None:
        return None

    for code, by_peer in ((1009, False), (1000, True)):
        conn = ASGIServerConnection(None, send, "127.0.0.1", None)  # type: ignore[arg-type]
        conn._session.state = OPEN
        conn.close_received(code, "")
        assert conn.closed_by_peer is by_peer
        await conn.finish()
