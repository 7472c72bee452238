"""Sans-I/O core: codec, envelopes, routing table, dedupe window, identity, frame parser."""

from __future__ import annotations

import os

import pytest

from maim_message.core.codec import decode_envelope, dumps, loads
from maim_message.core.dedupe import DedupeWindow
from maim_message.core.envelope import (
    MessageIdFactory,
    custom_handler_keys,
    encode_ack,
    normalize_custom_type,
)
from maim_message.core.identity import (
    connection_metadata,
    fingerprint,
    identify,
    lower_headers,
    split_path,
)
from maim_message.core.routing import RoutingTable
from maim_message.errors import EnvelopeError
from maim_message.transport.frames import OP_BINARY, OP_PING, OP_TEXT, frame_header
from maim_message.transport.http11 import HandshakeError, parse_http_request
from maim_message.transport.protocol import EV_FAILURE, OPEN, ServerProtocol


def FrameParser(max_size: int) -> ServerProtocol:
    """An open protocol object: what the frame parser of earlier versions was."""
    return ServerProtocol(max_message_size=max_size, state=OPEN)


def failure(events: list) -> tuple:
    """(code, reason) of the EV_FAILURE that ends ``events``."""
    kind, payload = events[-1]
    assert kind == EV_FAILURE
    return int.from_bytes(payload[:2], "big"), payload[2:].decode()


def test_decode_envelope_accepts_0_6_8_frame() -> None:
    env = decode_envelope(b'{"ver": 1, "msg_id": "m1", "type": "sys_std", "meta": {}, '
                          b'"payload": {"message_info": {}}}')
    assert env["type"] == "sys_std" and env["msg_id"] == "m1"


def test_bare_payload_becomes_implicit_sys_std() -> None:
    bare = {"message_info": {"platform": "qq"}, "message_segment": {"type": "text", "data": "x"},
            "message_dim": {"api_key": "k", "platform": "qq"}}
    env = decode_envelope(dumps(bare))
    assert env["type"] == "sys_std" and env["payload"] == bare and env["msg_id"] is None


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"not json", None),
        (b"[1, 2]", "$"),
        (b'{"msg_id": "x"}', "type"),
        (b'{"type": 3}', "type"),
        (b'{"type": "sys_std", "msg_id": [1]}', "msg_id"),
        (b'{"type": "sys_std", "meta": "m"}', "meta"),
    ],
)
def test_decode_errors_name_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode_envelope(raw)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_integer_msg_id_is_accepted_as_string() -> None:
    assert decode_envelope(b'{"type": "sys_std", "msg_id": 7}')["msg_id"] == "7"


def test_invalid_utf8_is_a_codec_error() -> None:
    with pytest.raises(EnvelopeError):
        loads(b'{"a": "\xff"}')


def test_ack_shape_matches_0_6_8() -> None:
    ack = loads(encode_ack("a1", "conn", "m1", from_server=True))
    assert ack["type"] == "sys_ack" and ack["ver"] == 1 and ack["msg_id"] == "a1"
    assert ack["meta"]["uuid"] == "conn" and ack["meta"]["acked_msg_id"] == "m1"
    assert ack["payload"]["status"] == "received" and "server_timestamp" in ack["payload"]
    client_ack = loads(encode_ack("a2", "conn", "m1", from_server=False))
    assert "client_timestamp" in client_ack["payload"]


def test_message_ids_are_unique() -> None:
    ids = MessageIdFactory()
    made = {ids.new() for _ in range(10_000)}
    assert len(made) == 10_000 and all(i.startswith("msg_") for i in made)


def test_custom_type_naming() -> None:
    assert normalize_custom_type("ping") == "custom_ping"
    assert normalize_custom_type("custom_ping") == "custom_ping"
    assert normalize_custom_type("sys_x") == "sys_x"
    assert custom_handler_keys("custom_ping") == ("custom_ping", "ping")
    assert custom_handler_keys("ping") == ("custom_ping", "ping")


def test_routing_table_add_lookup_remove() -> None:
    table = RoutingTable()
    table.add("c1", "u1", "qq")
    table.add("c2", "u1", "qq")
    table.add("c3", "u1", "wx")
    table.add("c4", "u2", "qq")
    assert table.lookup("u1", "qq") == {"c1", "c2"}
    assert table.lookup("u1") == {"c1", "c2", "c3"}
    assert table.on_platform("qq") == {"c1", "c2", "c4"}
    assert table.user_count == 2 and table.connection_count == 4
    assert table.remove("c3") == ("u1", "wx")
    assert table.user_platforms("u1") == {"qq": {"c1", "c2"}}
    table.remove("c1")
    table.remove("c2")
    assert table.lookup("u1") == set() and table.user_count == 1
    assert table.remove("nope") is None
    assert table.platforms() == {"qq": 1}


def test_routing_table_re_adding_moves_connection() -> None:
    table = RoutingTable()
    table.add("c1", "u1", "qq")
    table.add("c1", "u2", "wx")
    assert table.lookup("u1") == set() and table.lookup("u2", "wx") == {"c1"}


def test_dedupe_window_bounds_and_ttl() -> None:
    now = [0.0]
    window = DedupeWindow(max_entries=3, ttl=10.0, clock=lambda: now[0])
    assert not window.seen("a")
    assert window.seen("a")
    for key in ("b", "c", "d"):
        assert not window.seen(key)
    assert len(window) == 3
    assert not window.seen("a")  # evicted by count
    now[0] = 100.0
    assert not window.seen("b")  # expired by age
    assert len(window) == 1


def test_identity_query_wins_over_headers() -> None:
    _, query = split_path("/ws?api_key=k1&platform=qq")
    headers = {"x-apikey": "hk", "x-platform": "hp", "x-uuid": "u-1"}
    ident = identify(query, headers)
    assert (ident.api_key, ident.platform, ident.uuid) == ("k1", "qq", "u-1")
    assert ident.uuid_given
    ident = identify({}, {"x-apikey": "hk"})
    assert ident.api_key == "hk" and ident.platform == "unknown" and not ident.uuid_given


def test_lower_headers_drops_authorization() -> None:
    assert lower_headers([("Authorization", "t"), ("X-ApiKey", "k")]) == {"x-apikey": "k"}


def test_fingerprint_hides_secret() -> None:
    label = fingerprint("super-secret-key")
    assert "super" not in label and label == fingerprint("super-secret-key")
    assert fingerprint("") == "<none>"


def _client_frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    mask = os.urandom(4)
    head = bytearray(frame_header(opcode, len(payload)))
    if not fin:
        head[0] &= 0x7F
    if not masked:
        return bytes(head) + payload
    head[1] |= 0x80
    return bytes(head) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_frame_parser_handles_split_fragmented_and_control_frames() -> None:
    data = (_client_frame(OP_TEXT, b"hello") + _client_frame(OP_TEXT, b"x" * 70_000)
            + _client_frame(OP_BINARY, b"ab", fin=False) + _client_frame(OP_PING, b"p")
            + _client_frame(0, b"cd"))
    parser = FrameParser(1_000_000)
    events = []
    for i in range(0, len(data), 7):
        events += parser.receive_data(data[i:i + 7])
    assert events[0] == (OP_TEXT, b"hello")
    assert events[1] == (OP_TEXT, b"x" * 70_000)
    assert events[2:] == [(OP_PING, b"p"), (OP_BINARY, b"abcd")]


def test_frame_parser_rejects_unmasked_and_oversized() -> None:
    code, _ = failure(FrameParser(100).receive_data(_client_frame(OP_TEXT, b"x", masked=False)))
    assert code == 1002
    code, reason = failure(FrameParser(100).receive_data(_client_frame(OP_TEXT, b"x" * 101)[:10]))
    assert code == 1009 and "exceeds limit" in reason
    parser = FrameParser(100)
    assert parser.receive_data(_client_frame(OP_TEXT, b"x" * 30, fin=False)) == []
    assert failure(parser.receive_data(_client_frame(0, b"x" * 30)))[0] == 1009


def test_http_request_parsing() -> None:
    buf = bytearray(b"GET /ws?api_key=k HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\nrest")
    parsed = parse_http_request(buf)
    assert parsed is not None
    request, used = parsed
    assert bytes(buf[used:]) == b"rest"
    assert request.is_websocket_upgrade
    assert request.websocket_accept_key() == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert parse_http_request(bytearray(b"GET / HTTP/1.1\r\n")) is None
    with pytest.raises(HandshakeError):
        parse_http_request(bytearray(b"garbage\r\n\r\n"))
    with pytest.raises(HandshakeError) as info:
        parse_http_request(bytearray(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 5000), 1000)
    assert info.value.status == 431


def test_frame_parser_big_frames_in_chunks_then_more_frames() -> None:
    big = os.urandom(3 * 1024 * 1024 + 5)
    data = (_client_frame(OP_TEXT, b"a") + _client_frame(OP_BINARY, big)
            + _client_frame(OP_TEXT, b"b") + _client_frame(OP_BINARY, big[:100], fin=False)
            + _client_frame(0, big))
    parser = FrameParser(10 * 1024 * 1024)
    events = []
    for i in range(0, len(data), 65536 + 3):
        events += parser.receive_data(data[i:i + 65536 + 3])
    assert events == [(OP_TEXT, b"a"), (OP_BINARY, big), (OP_TEXT, b"b"),
                      (OP_BINARY, big[:100] + big)]
    assert parser.buffered == 0


def test_dedupe_window_is_per_sender_a_flood_evicts_only_its_own_ids() -> None:
    window = DedupeWindow(max_entries=100, ttl=3600.0)
    assert not window.seen(("u1", "qq", "victim-1"))
    for n in range(10_000):  # another sender's fresh ids
        assert not window.seen(("u2", "qq", f"flood-{n}"))
    assert window.seen(("u1", "qq", "victim-1")), "another sender evicted u1's id"
    assert not window.seen(("u2", "qq", "flood-0"))  # the flooder's oldest went
    assert window.seen(("u2", "qq", "flood-9999"))
    assert not window.seen(("u1", "wx", "victim-1"))  # another platform: another sender


def test_dedupe_window_bounds_senders_and_total() -> None:
    now = [0.0]
    window = DedupeWindow(max_entries=50, ttl=10.0, clock=lambda: now[0], max_senders=4,
                          max_total=60)
    for sender in ("a", "b", "c", "d"):
        assert not window.seen((sender, "p", "1"))
    for n in range(100):  # over the total: "d" is over its share and evicts its own
        window.seen(("d", "p", f"x{n}"))
    assert len(window) <= 60
    for sender in ("a", "b", "c"):
        assert window.seen((sender, "p", "1"))
    assert not window.seen(("e", "p", "1"))  # a fifth sender: the least recently active
    assert window.senders == 4 and not window.seen(("d", "p", "x99"))  # "d" went
    now[0] = 100.0  # everything expired: idle senders are dropped as others send
    for n in range(8):
        window.seen(("f", "p", str(n)))
    assert window.senders == 1 and len(window) == 8
    window.forget(("f", "p", "0"))
    assert not window.seen(("f", "p", "0")) and len(window) == 8


def test_routing_first_names_a_users_connections_on_a_platform_without_copying() -> None:
    table = RoutingTable()
    assert table.first("alice", "qq") == ""
    table.add("c2", "alice", "qq")
    table.add("c1", "alice", "qq")
    table.add("c0", "alice", "wechat")
    assert table.first("alice", "qq") == "c1" == min(table.lookup("alice", "qq"))
    table.remove("c1")
    assert table.first("alice", "qq") == "c2"
    table.remove("c2")
    assert table.first("alice", "qq") == "" and table.first("bob", "qq") == ""


def test_handlers_never_see_the_authorization_header_in_metadata() -> None:
    """Handlers log metadata: its headers leave out ``authorization`` (as 0.6.8's do),
    whichever transport parsed them; the key itself is read from it first."""
    headers = {"authorization": "Bearer secret-key-123", "x-platform": "qq",
               "user-agent": "t"}
    ident = identify({}, headers)
    metadata = connection_metadata(ident, headers, "127.0.0.1", 0.0)
    assert "authorization" not in metadata["headers"]
    assert metadata["headers"]["x-platform"] == "qq"
    assert "secret-key-123" not in repr(metadata["headers"])
