"""The fan-out log position of a node (no I/O): what is handled now, what waits for a
catch-up read, and what the read hands on, each logged fan-out once and in log order."""

from __future__ import annotations

from typing import List

from maim_message.backends.cluster_base import Selector
from maim_message.backends.fanout_log import MAX_HELD, FanoutLog
from maim_message.backends.pubsub_messages import (
    FanoutMessage,
    decode_message,
    encode_message,
)


def fo(log_id: str, origin: str = "other", text: str = "") -> FanoutMessage:
    return FanoutMessage(origin, Selector("all", None), f"m{log_id}", text.encode(), log_id)


def ids(messages: List[FanoutMessage]) -> List[str]:
    return [m.log_id for m in messages]


def test_channel_fan_outs_are_handled_once_in_log_order() -> None:
    log = FanoutLog(last="5-0")
    assert log.handle_now(fo("4-9")) == []  # before the log's end when the node joined
    assert log.handle_now(fo("5-0")) == []
    assert ids(log.handle_now(fo("5-1"))) == ["5-1"]
    assert log.handle_now(fo("5-1")) == []  # the same entry again
    assert ids(log.handle_now(fo("10-0"))) == ["10-0"] and log.last == "10-0"


def test_an_unlogged_fan_out_is_always_handled() -> None:
    log = FanoutLog(last="9-0")
    log.gap()
    unlogged = FanoutMessage("b", Selector("all", None), "x", b"p")  # Redis could not log it
    assert log.handle_now(unlogged) == [unlogged]


def test_a_gap_holds_channel_fan_outs_until_the_read_and_merges_them() -> None:
    log = FanoutLog(last="3-0")
    assert log.gap() == "3-0"
    # arrived on the re-subscribed channel while the read is pending
    assert log.handle_now(fo("7-0")) == [] and log.handle_now(fo("8-0")) == []
    # the read found what was missed, and 7-0 (published before it ran), in two pages
    assert ids(log.page([fo("4-0"), fo("6-0")], "6-0")) == ["4-0", "6-0"]
    assert log.reading and log.last == "6-0"
    assert ids(log.page([fo("7-0")], "7-0")) == ["7-0"]
    assert ids(log.caught_up()) == ["8-0"]
    assert not log.reading and log.last == "8-0" and log.held == []
    assert ids(log.handle_now(fo("9-0"))) == ["9-0"]


def test_a_page_moves_past_entries_that_could_not_be_decoded() -> None:
    log = FanoutLog(last="1-0")
    log.gap()
    assert ids(log.page([fo("2-0")], "4-0")) == ["2-0"]  # 3-0 and 4-0 were not fan-outs
    assert log.last == "4-0"
    assert ids(log.caught_up()) == []


def test_a_second_gap_during_a_read_reads_again_from_where_it_ended() -> None:
    log = FanoutLog(last="1-0")
    assert log.gap() == "1-0"
    assert log.gap() is None  # a read is pending already
    assert ids(log.page([fo("2-0")], "2-0")) == ["2-0"]
    assert log.caught_up() == []
    assert log.take_again() and not log.take_again()
    assert log.gap() == "2-0"


def test_a_read_that_cannot_finish_is_given_up_when_too_many_wait() -> None:
    log = FanoutLog(last="1-0")
    log.gap()
    read = log.read_id
    for n in range(2, MAX_HELD + 1):
        assert log.handle_now(fo(f"{n}-0")) == []
    out = log.handle_now(fo(f"{MAX_HELD + 1}-0"))  # the read never came: hand them on
    assert ids(out) == [f"{n}-0" for n in range(2, MAX_HELD + 2)]
    assert not log.reading and log.read_id != read and log.given_up == 1
    assert log.held == [] and log.last == f"{MAX_HELD + 1}-0"


def test_restart_forgets_a_pending_read() -> None:
    log = FanoutLog(last="1-0")
    log.gap()
    read = log.read_id
    log.handle_now(fo("5-0"))
    log.restart("20-0")
    assert not log.reading and not log.take_again() and log.read_id != read
    assert log.handle_now(fo("19-0")) == [] and ids(log.handle_now(fo("20-1"))) == ["20-1"]


def test_the_log_id_travels_in_the_fan_out_head() -> None:
    sent = encode_message(fo("", text="payload\nwith lines"))
    assert b'"log"' not in sent  # the sender does not know it: the script adds it
    head, _, rest = sent.partition(b"\n")
    published = head[:-1] + b',"log":"17-3"}\n' + rest  # what the script publishes
    got = decode_message(published)
    assert isinstance(got, FanoutMessage)
    assert got.log_id == "17-3" and got.payload == b"payload\nwith lines"
    assert decode_message(encode_message(fo("2-1"))) == fo("2-1")
