"""Property tests: the codec, the data model, the frame parser and the server's frame
handler reject hostile input only with the errors they document, never anything else."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Dict, List, Optional, Tuple

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maim_message.core.codec import decode_envelope
from maim_message.core.models.api import APIMessageBase
from maim_message.errors import EnvelopeError
from maim_message.server import ServerConfig, WebSocketServer
from maim_message.transport.base import Accept, HandshakeInfo
from maim_message.transport.protocol import EV_FAILURE, OPEN, ServerProtocol

from .rawws import frame

MODEL_ERRORS = (ValueError, TypeError, AttributeError)

# -- strategies ---------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=20)
           | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=20,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually the right shape, sometimes any JSON value (wrong type), sometimes absent."""
    return st.one_of(strategy, strategy, json_values)


def optional_keys(required: Dict[str, Any], optional: Dict[str, Any]) -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {k: maybe(v) for k, v in required.items()},
        optional={k: maybe(v) for k, v in optional.items()},
    )


ids = st.text(max_size=12) | st.integers(0, 10**6)
user_info = optional_keys({"platform": st.text(max_size=8), "user_id": ids},
                          {"user_nickname": st.text(max_size=8),
                           "user_cardname": st.text(max_size=8)})
group_info = optional_keys({"platform": st.text(max_size=8), "group_id": ids},
                           {"group_name": st.text(max_size=8)})
info_base = optional_keys({}, {"user_info": user_info, "group_info": group_info})
segments = st.recursive(
    optional_keys({"type": st.sampled_from(["text", "image", "emoji", "at", "reply"]),
                   "data": st.text(max_size=16)}, {}),
    lambda inner: optional_keys({"type": st.just("seglist"), "data": st.lists(inner, max_size=3)},
                                {}),
    max_leaves=8,
)
message_info = optional_keys(
    {"platform": st.text(max_size=8), "message_id": ids,
     "time": st.floats(0, 2e9, allow_nan=False)},
    {"sender_info": info_base, "receiver_info": info_base,
     "format_info": optional_keys({}, {"content_format": st.lists(st.text(max_size=6)),
                                       "accept_format": st.lists(st.text(max_size=6))}),
     "template_info": optional_keys({}, {"template_items": st.dictionaries(
         st.text(max_size=4), st.text(max_size=4)), "template_default": st.booleans()}),
     "additional_config": st.dictionaries(st.text(max_size=6), json_values, max_size=3)},
)
message_dicts = optional_keys(
    {"message_info": message_info, "message_segment": segments,
     "message_dim": optional_keys({"api_key": st.text(max_size=10),
                                   "platform": st.text(max_size=8)}, {})},
    {},
)
envelopes = optional_keys(
    {"type": st.sampled_from(["sys_std", "sys_ack", "sys_error", "custom_x", "custom_",
                              "weird", ""])},
    {"ver": st.integers(0, 3), "msg_id": ids, "payload": message_dicts,
     "meta": st.dictionaries(st.text(max_size=6), json_values, max_size=3)},
)
frames_bytes = st.one_of(
    envelopes.map(orjson.dumps),
    message_dicts.map(orjson.dumps),  # bare payloads (no envelope)
    json_values.map(orjson.dumps),
    st.binary(max_size=64),
    envelopes.map(orjson.dumps).flatmap(
        lambda b: st.integers(0, max(0, len(b) - 1)).map(lambda i: b[:i])),  # truncated
)

# -- codec and model ------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(frames_bytes)
def test_decode_raises_only_envelope_error(data: bytes) -> None:
    try:
        env = decode_envelope(data)
    except EnvelopeError as exc:
        assert str(exc)
        return
    assert type(env) is dict and type(env["type"]) is str


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message_dicts | json_values)
def test_model_from_dict_raises_only_value_type_attribute_errors(data: Any) -> None:
    try:
        message = APIMessageBase.from_dict(data)
    except MODEL_ERRORS:
        return
    out = message.to_dict()
    assert type(out) is dict
    again = APIMessageBase.from_dict(orjson.loads(orjson.dumps(out))).to_dict()
    template = message.message_info.template_info
    if template is not None and template.template_default is None:
        # 0.6.8 quirk kept on purpose (wire-protocol.md 3.3): a null template_default is
        # omitted by to_dict, so it reads back as the default True on the next round
        again["message_info"]["template_info"].pop("template_default", None)
    assert again == orjson.loads(orjson.dumps(out))


# -- frame parser ---------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 64))
def test_frame_parser_raises_only_protocol_violations(data: bytes, chunk: int) -> None:
    parser = ServerProtocol(max_message_size=1000, state=OPEN)
    failed = False
    for i in range(0, len(data), chunk):
        for opcode, payload in parser.receive_data(data[i:i + chunk]):
            assert not failed, "nothing after a failure"
            if opcode == EV_FAILURE:
                failed = True
                code = int.from_bytes(payload[:2], "big")
                assert code in (1002, 1007, 1008, 1009) and payload[2:]
                continue
            assert opcode in (0x1, 0x2, 0x8, 0x9, 0xA)
            assert len(payload) <= 1000


messages = st.lists(
    st.tuples(st.sampled_from([0x1, 0x2, 0x9, 0xA]), st.binary(max_size=200),
              st.integers(1, 4)),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(messages, st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_frame_parser_is_split_invariant_and_reassembles_fragments(
    msgs: List[Tuple[int, bytes, int]], cuts: List[int],
) -> None:
    wire = b""
    expected: List[Tuple[int, bytes]] = []
    for opcode, payload, parts in msgs:
        if opcode == 0x1:  # text is UTF-8 (multi-byte characters get cut between fragments)
            payload = payload.decode("latin-1").encode("utf-8")[:200]
            payload = payload.decode("utf-8", "ignore").encode("utf-8")
        expected.append((opcode, payload))
        if opcode >= 8 or parts == 1 or len(payload) < parts:
            wire += frame(opcode, payload[:125] if opcode >= 8 else payload)
            if opcode >= 8:
                expected[-1] = (opcode, payload[:125])
            continue
        size = len(payload) // parts
        pieces = [payload[i * size:(i + 1) * size] for i in range(parts - 1)]
        pieces.append(payload[(parts - 1) * size:])
        for i, piece in enumerate(pieces):
            wire += frame(opcode if i == 0 else 0x0, piece, fin=i == parts - 1)
    parser = ServerProtocol(max_message_size=10_000, state=OPEN)
    got: List[Tuple[int, bytes]] = []
    pos = 0
    step = 0
    while pos < len(wire):
        n = cuts[step % len(cuts)]
        got += parser.receive_data(wire[pos:pos + n])
        pos += n
        step += 1
    assert got == expected
    assert parser.buffered == 0


# -- the server's frame handler, without sockets -------------------------------------------


class FakeConn:
    """A ServerConnection that records what the server writes."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.sent: List[bytes] = []
        self.closed: Optional[Tuple[int, str]] = None

    @property
    def is_open(self) -> bool:
        return self.closed is None

    @property
    def is_writable(self) -> bool:
        return self.closed is None

    @property
    def client_ip(self) -> str:
        return "192.0.2.1"

    def send_text(self, payload: bytes) -> bool:
        self.sent.append(payload)
        return True

    def send_raw(self, data: bytes) -> bool:
        self.sent.append(data)
        return True

    def send_prepared(self, frame: Any) -> bool:
        self.sent.append(frame.payload)
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def write_buffer_size(self) -> int:
        return 0


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_server_frame_handler_never_raises() -> None:
    loop = asyncio.new_event_loop()
    delivered: List[Any] = []

    def on_message(message: Any, metadata: Dict[str, Any]) -> None:
        assert isinstance(message, APIMessageBase)
        delivered.append(message)

    server = WebSocketServer(ServerConfig(port=0, on_message=on_message,
                                          rate_limit_per_second=None))
    info = HandshakeInfo(path="/ws", query={"api_key": "fuzz-key"}, headers={},
                         raw_headers=[], client_ip="192.0.2.1", is_upgrade=True)
    decision = loop.run_until_complete(server.handshake(info))
    assert isinstance(decision, Accept)
    conn = FakeConn(decision.context)

    async def opened() -> None:
        server.connection_opened(conn)

    loop.run_until_complete(opened())

    @settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(frames_bytes)
    def feed(data: bytes) -> None:
        before = len(conn.sent)

        async def run() -> None:
            server.text_received(conn, data)

        loop.run_until_complete(run())
        if conn.closed is not None:  # only invalid UTF-8 closes (1007)
            assert conn.closed[0] == 1007 and not is_utf8(data)
            conn.closed = None
            return
        for out in conn.sent[before:]:
            env = orjson.loads(out)
            assert env["type"] in ("sys_ack", "sys_error")

    try:
        feed()
        deep = b'{"type":"sys_std","msg_id":"d","payload":' + b"[" * 1000 + b"]" * 1000 + b"}"
        loop.run_until_complete(asyncio.sleep(0))
        before = len(conn.sent)

        async def run_deep() -> None:
            server.text_received(conn, deep)
            server.text_received(conn, os.urandom(64))

        loop.run_until_complete(run_deep())
        assert any(b"sys_error" in out for out in conn.sent[before:])
        loop.run_until_complete(asyncio.sleep(0.05))
        assert server.get_stats()["handler_errors"] == 0
    finally:
        loop.run_until_complete(server._handlers.cancel_all(1.0))
        loop.close()
