"""The server's templated sys_ack frames are the bytes ``encode_ack`` gives, whatever the
connection uuid and the acked id hold (quotes, backslashes, ``%``, control characters,
non-ASCII), and their ids stay unique."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maim_message.core import envelope
from maim_message.core.envelope import AckEncoder, encode_ack

ODD = ["", "msg_1", 'a"b', "a\\b", "100%", "%s%d%%", "\x00\x1f\x7f", "é中文🙂", "0.5",
       "\\u0002", '"\\u0003"', "\u2028", "ack_x_1"]


def _expected(frame: bytes, uuid: str, acked: str) -> bytes:
    """``encode_ack`` with the ack id and the time ``frame`` carries."""
    ack = orjson.loads(frame)
    return envelope.encode_ack(ack["msg_id"], uuid, acked, from_server=True)


@pytest.fixture()
def fixed_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envelope.time, "time", lambda: 1732500000.123456)


@pytest.mark.usefixtures("fixed_time")
def test_template_gives_encode_acks_bytes_for_odd_ids_and_uuids() -> None:
    acks = AckEncoder()
    for uuid in ODD:
        template = acks.template(uuid)
        for acked in ODD:
            frame = acks.encode(template, acked)
            assert frame == _expected(frame, uuid, acked)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12), st.text(max_size=12))
def test_template_matches_encode_ack_for_any_text(uuid: str, acked: str) -> None:
    acks = AckEncoder()
    try:
        want_error = None
        encode_ack("a", uuid, acked, from_server=True)
    except (TypeError, ValueError) as exc:  # lone surrogates: not encodable either way
        want_error = type(exc)
    if want_error is not None:
        with pytest.raises((TypeError, ValueError)):
            acks.encode(acks.template(uuid), acked)
        return
    frame = acks.encode(acks.template(uuid), acked)
    ack = orjson.loads(frame)
    assert ack["meta"]["uuid"] == uuid and ack["meta"]["acked_msg_id"] == acked
    stamp = ack["meta"]["timestamp"]
    assert ack["payload"] == {"status": "received", "server_timestamp": stamp}
    assert list(ack) == ["ver", "msg_id", "type", "meta", "payload"] and ack["ver"] == 1
    assert ack["type"] == "sys_ack"


def test_ack_ids_are_unique_and_shaped_like_message_ids() -> None:
    acks = AckEncoder()
    template = acks.template("u-1")
    ids = [orjson.loads(acks.encode(template, "m"))["msg_id"] for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(re.fullmatch(r"ack_[0-9a-f]{12}_\d+", i) for i in ids)
    other = orjson.loads(AckEncoder().encode(AckEncoder().template("u"), "m"))["msg_id"]
    assert other.split("_")[1] != ids[0].split("_")[1]  # a per-encoder random part
