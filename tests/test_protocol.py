"""ServerProtocol driven with bytes, no sockets: states, events, the closing handshake,
UTF-8 (also split across fragments), sizes and fragment costs, ping rate, HTTP phase."""

from __future__ import annotations

import struct
from typing import List, Tuple

import pytest

from maim_message.transport.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    PreparedFrame,
    close_code_is_valid,
    encode_close,
    encode_frame,
    frame_header,
)
from maim_message.transport.http11 import HandshakeError
from maim_message.transport.protocol import (
    CLOSED,
    CLOSING,
    CONNECTING,
    EV_FAILURE,
    EV_REQUEST,
    FRAGMENT_OVERHEAD,
    OPEN,
    ProtocolStateError,
    ServerProtocol,
)

from .rawws import close_frame, frame, request


def opened(max_size: int = 1000, **kw: object) -> ServerProtocol:
    return ServerProtocol(max_message_size=max_size, state=OPEN, **kw)  # type: ignore[arg-type]


def failure(events: List[Tuple[int, bytes]]) -> Tuple[int, str]:
    kind, payload = events[-1]
    assert kind == EV_FAILURE, events
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


def sent(proto: ServerProtocol) -> bytes:
    return b"".join(bytes(c) for c in proto.data_to_send())


# -- data frames ------------------------------------------------------------------------------


def test_text_and_binary_messages_come_out_whole_in_order() -> None:
    proto = opened()
    wire = frame(OP_TEXT, b"hello") + frame(OP_BINARY, b"\x00\xff")
    assert proto.receive_data(wire[:3]) == []
    assert proto.receive_data(wire[3:]) == [(OP_TEXT, b"hello"), (OP_BINARY, b"\x00\xff")]
    assert proto.buffered == 0 and proto.state is OPEN


def test_fragments_are_reassembled_with_control_frames_in_between() -> None:
    proto = opened()
    wire = (frame(OP_TEXT, b"he", fin=False) + frame(OP_PING, b"p")
            + frame(0, b"ll", fin=False) + frame(0, b"o"))
    assert proto.receive_data(wire) == [(OP_PING, b"p"), (OP_TEXT, b"hello")]


def test_utf8_is_checked_whole_and_split_across_fragments() -> None:
    snowman = "☃".encode()  # 3 bytes
    proto = opened()
    wire = frame(OP_TEXT, snowman[:1], fin=False) + frame(0, snowman[1:2], fin=False) \
        + frame(0, snowman[2:])
    assert proto.receive_data(wire) == [(OP_TEXT, snowman)]
    assert failure(opened().receive_data(frame(OP_TEXT, b"\xff")))[0] == 1007
    # invalid as soon as the bad byte arrives, before the message ends
    proto = opened()
    events = proto.receive_data(frame(OP_TEXT, b"ok", fin=False) + frame(0, b"\xc0", fin=False))
    assert failure(events)[0] == 1007
    # a sequence cut off by the final fragment
    assert failure(opened().receive_data(frame(OP_TEXT, snowman[:2], fin=False)
                                         + frame(0, b"")))[0] == 1007
    # binary is not text
    assert opened().receive_data(frame(OP_BINARY, b"\xff")) == [(OP_BINARY, b"\xff")]


def test_size_limit_from_the_header_and_fragments_cost_their_overhead() -> None:
    code, reason = failure(opened(100).receive_data(frame(OP_TEXT, b"x" * 101)[:4]))
    assert code == 1009 and "101 bytes exceeds limit of 100" in reason
    assert opened(100).receive_data(frame(OP_TEXT, b"x" * 100)) == [(OP_TEXT, b"x" * 100)]
    # empty continuation frames are not free
    proto = opened(1000)
    accepted = 0
    events = proto.receive_data(frame(OP_BINARY, b"", fin=False))
    while not events:
        accepted += 1
        events = proto.receive_data(frame(0, b"", fin=False))
    assert failure(events)[0] == 1009
    assert accepted == 1000 // FRAGMENT_OVERHEAD  # 15 empty fragments fit, the 16th does not


def test_fragment_count_is_capped() -> None:
    proto = opened(1 << 20, max_fragments=5)
    wire = frame(OP_BINARY, b"a", fin=False) + frame(0, b"b", fin=False) * 4
    assert proto.receive_data(wire) == []
    code, reason = failure(proto.receive_data(frame(0, b"c")))
    assert code == 1009 and "more than 5 fragments" in reason


@pytest.mark.parametrize("wire, code", [
    (frame(OP_TEXT, b"x", masked=False), 1002),
    (frame(OP_TEXT, b"x", rsv=4), 1002),
    (frame(0x3, b"x"), 1002),
    (frame(0xB, b"x"), 1002),
    (frame(OP_PING, b"x" * 126), 1002),
    (frame(OP_PING, b"x", fin=False), 1002),
    (frame(0, b"orphan"), 1002),
    (frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), 1002),
    (frame(OP_CLOSE, b"\x03"), 1002),
    (frame(OP_CLOSE, b"\x03\xe8\xff"), 1007),
])
def test_violations_fail_with_their_code(wire: bytes, code: int) -> None:
    assert failure(opened().receive_data(wire))[0] == code


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999,
                                  5000, 65535])
def test_invalid_close_codes_fail_1002_and_are_not_echoed(code: int) -> None:
    proto = opened()
    events = proto.receive_data(frame(OP_CLOSE, struct.pack("!H", code)))
    assert failure(events)[0] == 1002
    proto.apply(*events[-1])
    out = sent(proto)
    assert out == encode_close(1002, f"invalid close code {code}")
    assert proto.failed and proto.state is CLOSING


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014, 3000, 4999])
def test_valid_close_codes_are_echoed_and_close(code: int) -> None:
    assert close_code_is_valid(code)
    proto = opened()
    events = proto.receive_data(close_frame(code, "bye") + frame(OP_TEXT, b"after"))
    assert events == [(OP_CLOSE, struct.pack("!H", code) + b"bye")]  # nothing after a close
    proto.apply(*events[0])
    assert sent(proto) == encode_close(code, "bye")
    assert proto.state is CLOSED and (proto.close_code, proto.close_reason) == (code, "bye")


def test_empty_close_is_echoed_empty_and_reports_1005() -> None:
    proto = opened()
    (event,) = proto.receive_data(frame(OP_CLOSE, b""))
    proto.apply(*event)
    assert sent(proto) == encode_frame(OP_CLOSE, b"") and proto.close_code == 1005


def test_a_good_frame_before_a_bad_one_in_the_same_read_is_delivered_first() -> None:
    proto = opened()
    events = proto.receive_data(frame(OP_TEXT, b"good") + frame(OP_TEXT, b"x", rsv=2)
                                + frame(OP_TEXT, b"never"))
    assert events[0] == (OP_TEXT, b"good") and failure(events)[0] == 1002 and len(events) == 2
    # until the failure is applied the connection is open: the app can still answer
    assert proto.state is OPEN
    proto.send_text(b"ack")
    proto.apply(*events[-1])
    assert sent(proto) == encode_frame(OP_TEXT, b"ack") + encode_close(
        1002, "reserved bits set (no extension negotiated)")
    assert proto.receive_data(frame(OP_TEXT, b"later")) == []


# -- the closing handshake and pings ------------------------------------------------------------


def test_our_close_waits_for_the_peer_and_no_pong_after_it() -> None:
    proto = opened()
    proto.send_close(1001, "going away")
    assert proto.state is CLOSING and sent(proto) == encode_close(1001, "going away")
    events = proto.receive_data(frame(OP_PING, b"p") + frame(OP_TEXT, b"late"))
    for event in events:
        proto.apply(*event)
    assert sent(proto) == b""  # no pong after our own close
    with pytest.raises(ProtocolStateError):
        proto.send_text(b"x")
    (event,) = proto.receive_data(close_frame(1000))
    proto.apply(*event)
    assert proto.state is CLOSED and sent(proto) == b""  # not echoed: we closed first
    assert (proto.close_code, proto.close_reason) == (1001, "going away")


def test_ping_is_answered_with_its_payload() -> None:
    proto = opened()
    (event,) = proto.receive_data(frame(OP_PING, b"abc"))
    proto.apply(*event)
    assert sent(proto) == encode_frame(OP_PONG, b"abc")
    assert proto.receive_data(frame(OP_PONG, b"x")) == [(OP_PONG, b"x")]


def test_peer_pings_are_rate_limited() -> None:
    now = [0.0]
    proto = opened(ping_rate=2.0, ping_burst=3.0, clock=lambda: now[0])
    events = proto.receive_data(frame(OP_PING, b"") * 3)
    assert [k for k, _ in events] == [OP_PING] * 3
    now[0] += 1.0  # two more allowed
    events = proto.receive_data(frame(OP_PING, b"") * 3)
    assert [k for k, _ in events[:2]] == [OP_PING, OP_PING]
    code, reason = failure(events)
    assert code == 1008 and "ping rate" in reason


# -- sending ------------------------------------------------------------------------------------


def test_sends_are_framed_and_big_payloads_are_not_copied() -> None:
    proto = opened()
    proto.send_text(b"hi")
    proto.send_binary(b"\x01")
    proto.send_ping(b"k")
    assert proto.bytes_to_send == 4 + 3 + 3
    assert sent(proto) == (encode_frame(OP_TEXT, b"hi") + encode_frame(OP_BINARY, b"\x01")
                           + encode_frame(OP_PING, b"k"))
    big = b"x" * 100_000
    proto.send_text(big)
    chunks = proto.data_to_send()
    assert chunks[0] == frame_header(OP_TEXT, len(big)) and isinstance(chunks[1], memoryview)
    assert chunks[1].obj is big


def test_prepared_frame_is_shared_and_matches_send_text() -> None:
    small, big = PreparedFrame.text(b"s"), PreparedFrame.text(b"b" * 70_000)
    a, b = opened(), opened()
    for proto in (a, b):
        proto.send_prepared(small)
        proto.send_prepared(big)
    assert sent(a) == sent(b) == encode_frame(OP_TEXT, b"s") + encode_frame(OP_TEXT, b"b" * 70_000)
    assert bytes(small) == encode_frame(OP_TEXT, b"s") and small.nbytes == 3
    raw = PreparedFrame.from_raw(frame_header(OP_TEXT, 70_000), b"b" * 70_000)
    assert bytes(raw) == bytes(big) and raw.payload == big.payload and raw.opcode == OP_TEXT


def test_close_reason_is_cut_on_a_character_boundary() -> None:
    proto = opened()
    proto.send_close(1000, "é" * 100)
    out = sent(proto)
    assert len(out) <= 2 + 125
    out[4:].decode("utf-8")  # still valid UTF-8


def test_connection_lost_lets_buffers_go() -> None:
    proto = opened(1 << 20)
    proto.receive_data(frame(OP_BINARY, b"x" * 5000, fin=False) + frame(0, b"y" * 10)[:5])
    assert proto.buffered > 5000
    proto.connection_lost()
    assert proto.state is CLOSED and proto.buffered == 0 and proto.data_to_send() == []


# -- the HTTP phase -----------------------------------------------------------------------------


def test_upgrade_request_then_accept_parses_early_frames() -> None:
    proto = ServerProtocol(max_message_size=1000)
    assert proto.state is CONNECTING
    events = proto.receive_data(request() + frame(OP_TEXT, b"early"))
    assert events == [(EV_REQUEST, b"")] and proto.request is not None
    assert proto.receive_data(frame(OP_TEXT, b"more")) == []  # held while the app decides
    early = proto.accept(proto.request.websocket_accept_key())
    assert early == [(OP_TEXT, b"early"), (OP_TEXT, b"more")]
    assert sent(proto).startswith(b"HTTP/1.1 101 ") and proto.state is OPEN


def test_plain_request_body_and_head_reject() -> None:
    proto = ServerProtocol(max_message_size=1000, max_request_body=10)
    events = proto.receive_data(b"HEAD /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nab")
    assert events == []
    assert proto.receive_data(b"c") == [(EV_REQUEST, b"abc")]
    proto.reject(200, b"body")
    out = sent(proto)
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"\r\n\r\n")
    assert b"Content-Length: 4" in out and proto.state is CLOSED
    with pytest.raises(HandshakeError) as exc:
        ServerProtocol(max_message_size=1000, max_request_body=10).receive_data(
            b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
    assert exc.value.status == 413
    with pytest.raises(ProtocolStateError):
        opened().accept("x")
