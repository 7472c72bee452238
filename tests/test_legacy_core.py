"""Sans-I/O core of the legacy API: TCP framing, crypto, protocol state machines,
dispatch rules. No sockets."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any, List

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from maim_message.core.codec import dumps_compat, loads_compat
from maim_message.legacy.crypto import CryptoManager, CryptoSession, ReplayError
from maim_message.legacy.dispatch import HandlerRegistry, build_custom_message, select_handlers
from maim_message.legacy.tcp_framing import (
    FrameDecoder,
    FrameError,
    FrameType,
    encode_frame,
    unpack_data_payload,
)
from maim_message.legacy.tcp_protocol import (
    HEARTBEAT_FRAME,
    Dropped,
    Established,
    Fatal,
    Heartbeat,
    Outgoing,
    Received,
    Registration,
    State,
    TcpClientProtocol,
    TcpServerProtocol,
)


# -- framing -------------------------------------------------------------------------------
def test_frame_layout_matches_wire_spec() -> None:
    frame = encode_frame(FrameType.DATA, b"abc")
    assert frame == struct.pack("!IB", 8, 3) + b"abc"
    assert HEARTBEAT_FRAME == b"\x00\x00\x00\x05\x04"


@given(st.lists(st.tuples(st.integers(1, 4), st.binary(max_size=300)), max_size=8),
       st.integers(1, 50))
def test_decoder_reassembles_any_chunking(frames: List[Any], chunk: int) -> None:
    stream = b"".join(encode_frame(t, p) for t, p in frames)
    dec = FrameDecoder()
    out = []
    for i in range(0, len(stream), chunk):
        out.extend(dec.feed(stream[i : i + chunk]))
    assert [(f.type, f.payload) for f in out] == frames
    assert dec.buffered == 0


def test_decoder_rejects_bad_lengths() -> None:
    with pytest.raises(FrameError):
        FrameDecoder().feed(struct.pack("!IB", 3, 3))
    with pytest.raises(FrameError):
        FrameDecoder(max_frame=100).feed(struct.pack("!IB", 101, 3))


def test_short_data_payload_is_an_error() -> None:
    with pytest.raises(FrameError):
        unpack_data_payload(b"x" * 20)


# -- crypto --------------------------------------------------------------------------------
def _raw(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_session_matches_spec_construction() -> None:
    """Key = HKDF-SHA256(X25519, info=b"handshake data"); AD = seq as u64 (wire §2.4)."""
    peer = X25519PrivateKey.generate()
    ours = CryptoSession()
    ours.establish(_raw(peer))
    frame = ours.encrypt({"k": "ü"})
    (ftype, payload), = FrameDecoder().feed(frame)
    assert ftype == FrameType.DATA
    nonce, seq, ct = payload[:12], struct.unpack("!Q", payload[12:20])[0], payload[20:]
    shared = peer.exchange(X25519PrivateKey.from_private_bytes(
        ours._private.private_bytes_raw()).public_key())
    key = HKDF(hashes.SHA256(), 32, None, b"handshake data").derive(shared)
    assert seq == 0
    assert json.loads(ChaCha20Poly1305(key).decrypt(nonce, ct, struct.pack("!Q", 0))) == {"k": "ü"}


def test_replayed_and_old_sequences_are_rejected() -> None:
    a, b = CryptoSession(), CryptoSession()
    a.establish(b.public_bytes)
    b.establish(a.public_bytes)
    f0, f1 = a.encrypt({"n": 0}), a.encrypt({"n": 1})
    p0, p1 = f0[5:], f1[5:]
    assert b.decrypt(p0) == {"n": 0}
    assert b.decrypt(p1) == {"n": 1}
    with pytest.raises(ReplayError):
        b.decrypt(p1)
    with pytest.raises(ReplayError):
        b.decrypt(p0)


def test_first_sequence_may_be_anything() -> None:
    """A 0.6.8 client keeps its counter across reconnects: first seq on a connection > 0."""
    a, b = CryptoSession(), CryptoSession()
    a.establish(b.public_bytes)
    b.establish(a.public_bytes)
    a.next_out = 41
    assert b.decrypt(a.encrypt({"x": 1})[5:]) == {"x": 1}


def test_crypto_manager_compat_round_trip() -> None:
    m1, m2 = CryptoManager(), CryptoManager()
    m1.compute_shared_key(m2.get_public_bytes())
    m2.compute_shared_key(m1.get_public_bytes())
    iv, enc = m1.encrypt_message({"a": 1}, 7)
    frame = CryptoManager.create_data_frame(iv, enc, 7)
    ftype, payload = CryptoManager.parse_frame(frame)
    assert ftype is FrameType.DATA
    iv2, enc2, seq = CryptoManager.parse_data_frame(payload)
    assert seq == 7 and m2.decrypt_message(iv2, enc2, seq) == {"a": 1}


# -- protocol state machines ------------------------------------------------------------------
def _pair(token: Any = None) -> tuple[TcpServerProtocol, TcpClientProtocol, list]:
    server, client = TcpServerProtocol(), TcpClientProtocol("qq", token)
    events = server.receive_data(client.start())
    assert isinstance(events[0], Outgoing) and server.state is State.AWAIT_REGISTRATION
    cev = client.receive_data(events[0].data)
    assert isinstance(cev[0], Outgoing) and isinstance(cev[1], Established)
    return server, client, server.receive_data(cev[0].data)


def test_handshake_registration_and_data() -> None:
    server, client, events = _pair("secret")
    assert events == [Registration("qq", "secret")]
    assert server.state is State.OPEN and server.platform == "qq"
    ev = server.receive_data(client.encrypt({"m": 1}) + HEARTBEAT_FRAME)
    assert ev == [Received({"m": 1}), Heartbeat(), Outgoing(HEARTBEAT_FRAME)]
    assert client.receive_data(server.encrypt([1, 2])) == [Received([1, 2])]


def test_server_drops_replay_but_keeps_connection() -> None:
    server, client, _ = _pair()
    frame = client.encrypt({"m": 1})
    assert server.receive_data(frame) == [Received({"m": 1})]
    (event,) = server.receive_data(frame)
    assert isinstance(event, Dropped) and server.state is State.OPEN


def test_tampered_frame_dropped() -> None:
    server, client, _ = _pair()
    frame = bytearray(client.encrypt({"m": 1}))
    frame[-1] ^= 1
    (event,) = server.receive_data(bytes(frame))
    assert isinstance(event, Dropped)


@pytest.mark.parametrize("first", [
    encode_frame(FrameType.DATA, b"x" * 40),       # not a handshake
    encode_frame(FrameType.HANDSHAKE_REQUEST, b"short"),
    struct.pack("!IB", 2, 1),                       # impossible length
])
def test_server_fatal_on_bad_start(first: bytes) -> None:
    server = TcpServerProtocol()
    events = server.receive_data(first)
    assert isinstance(events[-1], Fatal) and server.state is State.CLOSED
    assert server.receive_data(b"more") == []


def test_registration_without_platform_is_fatal() -> None:
    server, client = TcpServerProtocol(), TcpClientProtocol("qq")
    (out,) = server.receive_data(client.start())
    client.receive_data(out.data)  # establishes; we ignore its registration frame
    events = server.receive_data(client.encrypt({"token": "x"}))
    assert isinstance(events[-1], Fatal)


def test_client_accepts_type_2_reply() -> None:
    server_key = CryptoSession()
    client = TcpClientProtocol("qq")
    client.start()
    events = client.receive_data(encode_frame(FrameType.HANDSHAKE_RESPONSE,
                                              server_key.public_bytes))
    assert isinstance(events[-1], Established)
    assert isinstance(TcpClientProtocol("x").receive_data(encode_frame(4))[0], Fatal)


# -- json ----------------------------------------------------------------------------------
def test_json_codec_fallbacks() -> None:
    assert loads_compat(dumps_compat({"a": "ü"})) == {"a": "ü"}
    assert loads_compat(dumps_compat({1: 2**70})) == {"1": 2**70}
    assert loads_compat("[NaN]")[0] != 0
    with pytest.raises(ValueError):
        loads_compat("{nope")


def test_json_compat_writes_and_reads_what_0_6_8s_stdlib_json_did() -> None:
    """orjson writes NaN/Infinity as null and reads integers beyond 64 bits as floats;
    0.6.8's peers (stdlib json) send and expect both as they are."""
    import json
    import math

    value = {"v": math.nan, "i": math.inf, "m": [-math.inf], "n": None, "big": 2**70 + 1,
             "neg": -(2**64) - 3, "text": "12345678901234567890123", "f": 1.5}
    wire = dumps_compat(value)
    assert wire == json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    back = loads_compat(wire)
    assert math.isnan(back["v"]) and back["i"] == math.inf and back["m"] == [-math.inf]
    assert back["big"] == 2**70 + 1 and type(back["big"]) is int
    assert back["neg"] == -(2**64) - 3 and back["text"] == "12345678901234567890123"
    assert dumps_compat({"n": None, "f": 1.5}) == b'{"n":null,"f":1.5}'  # the fast path
    with pytest.raises(TypeError):
        dumps_compat({"s": {1, 2}})


def test_a_message_json_cannot_represent_is_logged_and_not_sent() -> None:
    """0.6.8's send_message logged the encoding error and returned False."""
    from maim_message.legacy.logsupport import Log, encoded_or_logged

    errors: List[str] = []

    class Recorder:
        def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
            errors.append(msg % args if args else msg)

    assert encoded_or_logged({"ok": 1}, Log("t", Recorder())) == b'{"ok":1}'
    assert encoded_or_logged({"s": {1, 2}}, Log("t", Recorder())) is None
    assert len(errors) == 1 and "cannot be encoded as JSON" in errors[0]


# -- dispatch rules -------------------------------------------------------------------------
def g(m: Any) -> None: ...
def c(m: Any) -> None: ...


@pytest.mark.parametrize(("message", "expected", "warn"), [
    ({"is_custom_message": True, "message_type_name": "n"}, [c], None),
    ({"is_custom_message": True, "message_type_name": "other"}, [], "other"),
    ({"is_custom_message": True}, [], "None"),
    ({"message_type_name": "n"}, [c], None),                 # rule 2: legacy custom
    ({"message_type_name": "other"}, [g], None),             # unknown name -> generic
    ({"message_type_name": ["unhashable"]}, [g], None),
    ({"message_info": {}}, [g], None),
    ([1, 2], [g], None),
    ("text", [g], None),
])
def test_select_handlers(message: Any, expected: List[Any], warn: Any) -> None:
    handlers, unregistered = select_handlers(message, [g], {"n": [c]})
    assert list(handlers) == expected
    assert unregistered == warn


async def test_registry_sync_async_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    reg = HandlerRegistry()
    seen: List[Any] = []

    def bad(m: Any) -> None:
        raise RuntimeError("boom")

    async def async_handler(m: Any) -> None:
        await asyncio.sleep(0)
        seen.append(("async", m))

    async def async_bad(m: Any) -> None:
        raise ValueError("async boom")

    for h in (bad, lambda m: seen.append(("sync", m)), async_handler, async_bad):
        reg.register_message_handler(h)
    reg.register_message_handler(async_handler)  # duplicate ignored
    assert len(reg.message_handlers) == 4
    await reg.process_message({"x": 1})
    assert seen == [("sync", {"x": 1}), ("async", {"x": 1})]
    assert "boom" in caplog.text and "async boom" in caplog.text
    assert not reg.background_tasks


async def test_overridden_process_message_is_honoured() -> None:
    got: List[Any] = []

    class Sub(HandlerRegistry):
        async def process_message(self, message: Any) -> None:
            got.append(message)

    sub = Sub()
    sub._deliver({"a": 1})
    await asyncio.gather(*sub.background_tasks)
    assert got == [{"a": 1}]


async def test_custom_frame_shape() -> None:
    frame = build_custom_message("qq", "notice", {"b": 2})
    assert list(frame) == ["platform", "message_type_name", "content", "timestamp",
                           "is_custom_message"]
    assert frame["is_custom_message"] is True
    assert abs(frame["timestamp"] - asyncio.get_running_loop().time()) < 1


async def test_068_base_connection_runs_handlers_on_the_shared_tracker() -> None:
    from maim_message.connection_interface import BaseConnection

    class Conn(BaseConnection):
        pass

    conn, got = Conn(), []

    async def async_handler(m: Any) -> None:
        got.append(("async", m))

    conn.register_message_handler(got.append)
    conn.register_message_handler(async_handler)
    conn.register_message_handler(got.append)  # duplicate ignored
    await conn.process_message({"x": 1})
    assert got == [{"x": 1}, ("async", {"x": 1})]
    assert not conn.background_tasks
    sleeper = asyncio.ensure_future(asyncio.sleep(10))
    conn.add_background_task(sleeper)
    assert conn.background_tasks == {sleeper}
    await conn.cleanup_tasks()
    assert sleeper.cancelled() and not conn.background_tasks
