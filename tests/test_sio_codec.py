"""Engine.IO v4 / Socket.IO v5 codec and server session: bytes in, events out, no sockets.

Frames are those of wire-0.7.md §1.5, §2.3 and §9 (captured from 0.7.5).
"""

from __future__ import annotations

import json
from typing import List

import pytest

from maim_message.sio.packets import (
    EioType,
    PacketError,
    SioPacket,
    SioType,
    decode_eio,
    decode_sio,
    encode_sio,
    join_payload,
    message_body,
    message_frame,
    open_packet,
    split_payload,
)
from maim_message.sio.session import (
    Closed,
    ConnectRequest,
    Message,
    ProbeAnswer,
    ServerSession,
    State,
    Upgraded,
)

ENVELOPE = b'{"ver":1,"msg_id":"m1","type":"sys_std","meta":{},"payload":{"n":1}}'


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def session(websocket: bool = False, clock: Clock = None) -> ServerSession:  # type: ignore[assignment]
    return ServerSession("SID", ping_interval=25.0, ping_timeout=20.0,
                         clock=clock or Clock(), websocket=websocket)


def connected(websocket: bool = True) -> ServerSession:
    s = session(websocket)
    assert s.receive(b"40{}") == [ConnectRequest({})]
    s.accept("NS")
    assert s.take() == [b'40{"sid":"NS"}']
    return s


# -- packets -------------------------------------------------------------------------------


def test_open_packet_matches_0_7_5() -> None:
    packet = open_packet("KuRo", ["websocket"], 25.0, 20.0, 104857600)
    kind, data = decode_eio(packet)
    assert kind is EioType.OPEN
    assert json.loads(data) == {"sid": "KuRo", "upgrades": ["websocket"], "pingTimeout": 20000,
                                "pingInterval": 25000, "maxPayload": 104857600}


def test_message_frame_round_trip_and_fast_slice() -> None:
    frame = message_frame(ENVELOPE)
    assert frame == b'42["message",' + ENVELOPE + b"]"
    assert message_body(frame) == ENVELOPE
    assert message_body(b'42["message", ' + ENVELOPE + b"]") == ENVELOPE  # json.dumps spacing
    # other shapes are left to the full decoder
    assert message_body(b'4217["message",' + ENVELOPE + b"]") is None
    assert message_body(b'42["message","{}"]') is None
    assert message_body(b"2") is None


@pytest.mark.parametrize("raw,expected", [
    (b"0", SioPacket(SioType.CONNECT)),
    (b"0{}", SioPacket(SioType.CONNECT, data={})),
    (b'0{"sid":"x"}', SioPacket(SioType.CONNECT, data={"sid": "x"})),
    (b"1", SioPacket(SioType.DISCONNECT)),
    (b'4{"message":"no"}', SioPacket(SioType.CONNECT_ERROR, data={"message": "no"})),
    (b'217["message",{"a":1}]', SioPacket(SioType.EVENT, data=["message", {"a": 1}], ack_id=17)),
    (b"317[]", SioPacket(SioType.ACK, data=[], ack_id=17)),
    (b"0/admin,", SioPacket(SioType.CONNECT, "/admin")),
    (b'2/admin,5["x"]', SioPacket(SioType.EVENT, "/admin", ["x"], 5)),
])
def test_socketio_packets_decode_and_encode(raw: bytes, expected: SioPacket) -> None:
    assert decode_sio(raw) == expected
    assert decode_sio(encode_sio(expected)) == expected


@pytest.mark.parametrize("raw", [b"", b"9", b"b4AAA", b"x"])
def test_bad_engineio_packets_raise(raw: bytes) -> None:
    with pytest.raises(PacketError):
        decode_eio(raw)


@pytest.mark.parametrize("raw", [b"", b"7", b'51-["message",{"_placeholder":true}]', b"2{not json",
                                 pytest.param(b"2" + b"1" * 16 + b'["message",{}]', id="ack16"),
                                 pytest.param(b"2" + b"1" * 5000 + b'["message",{}]',
                                              id="ack5000")])
def test_bad_socketio_packets_raise(raw: bytes) -> None:
    with pytest.raises(PacketError):
        decode_sio(raw)


def test_polling_payload_split_and_join() -> None:
    packets = [b"40", b'42["message",{}]', b"3"]
    body = join_payload(packets)
    assert body == b'40\x1e42["message",{}]\x1e3'
    assert split_payload(body) == packets
    assert split_payload(b"") == []


# -- session -------------------------------------------------------------------------------


def test_namespace_connect_then_messages() -> None:
    s = connected()
    assert s.receive(message_frame(ENVELOPE)) == [Message(ENVELOPE, None)]
    s.send_message(b'{"x":1}')
    assert s.take() == [b'42["message",{"x":1}]']


def test_messages_before_the_connect_is_accepted_are_dropped() -> None:
    s = session(websocket=True)
    assert s.receive(message_frame(ENVELOPE)) == []
    assert s.receive(b"40") == [ConnectRequest(None)]
    assert s.receive(message_frame(ENVELOPE)) == []  # still undecided: nothing accepted
    s.refuse("Authentication failed: bad key")
    assert s.take() == [b'44{"message":"Authentication failed: bad key"}']
    assert s.receive(message_frame(ENVELOPE)) == []
    assert s.receive(b"40") == []  # one answer per session


def test_socketio_ack_id_is_answered_and_string_argument_parsed() -> None:
    s = connected()
    events = s.receive(b'4217["message",' + ENVELOPE + b"]")
    assert events == [Message(ENVELOPE, 17)]
    assert s.take() == [b"4317[]"]
    as_string = json.dumps(["message", ENVELOPE.decode()]).encode()
    assert s.receive(b"42" + as_string) == [Message(ENVELOPE, None)]


def test_other_events_and_namespaces() -> None:
    s = connected()
    assert s.receive(b'42["other",{"a":1}]') == []
    assert s.receive(b"40/admin,") == []
    assert s.take() == [b'44/admin,{"message":"Invalid namespace"}']


def test_polling_then_upgrade() -> None:
    s = session()
    assert s.receive_payload(b"40") == [ConnectRequest(None)]
    s.accept("NS")
    assert s.state is State.POLLING
    assert s.receive(b"5") == []  # an upgrade without a probe is ignored
    assert s.receive(b"2probe") == [ProbeAnswer(b"3probe")]
    assert s.state is State.UPGRADING
    assert s.receive(b"5") == [Upgraded()]
    assert s.upgraded


def test_probe_over_polling_is_not_an_upgrade() -> None:
    s = session()
    assert s.receive_payload(b"2probe") == []
    assert s.state is State.POLLING


def test_polling_body_with_several_packets() -> None:
    s = connected(websocket=False)
    body = join_payload([message_frame(ENVELOPE), b"3", message_frame(b'{"b":2}')])
    assert s.receive_payload(body) == [Message(ENVELOPE, None), Message(b'{"b":2}', None)]


def test_heartbeat_ping_pong_and_timeout() -> None:
    clock = Clock()
    s = session(websocket=True, clock=clock)
    assert s.heartbeat() and s.take() == []
    clock.now += 25.0
    assert s.heartbeat()
    assert s.take() == [b"2"]
    clock.now += 10.0
    assert s.heartbeat()  # waiting for the pong, not late yet
    assert s.receive(b"3") == []
    clock.now += 30.0
    assert s.heartbeat() and s.take() == [b"2"]
    clock.now += 20.5
    assert not s.heartbeat()  # no pong within pingTimeout


def test_pong_counts_only_after_the_ping_was_taken() -> None:
    """A polling client that never GETs cannot keep itself alive with bare pongs."""
    clock = Clock()
    s = session(websocket=False, clock=clock)
    clock.now += 25.0
    assert s.heartbeat()
    assert s.receive(b"3", websocket=False) == []  # the PING is still in the queue
    clock.now += 20.5
    assert not s.heartbeat()
    s = session(websocket=False, clock=clock)
    clock.now += 25.0
    assert s.heartbeat() and s.take() == [b"2"]
    assert s.receive(b"3", websocket=False) == []  # read, then answered
    clock.now += 20.5
    assert s.heartbeat()


@pytest.mark.parametrize("packet,reason", [
    (b"1", "client closed the session"),
    (b"41", "client disconnected"),
    (b"b4AAAA", "protocol error"),
])
def test_close_events(packet: bytes, reason: str) -> None:
    s = connected()
    events: List[object] = list(s.receive(packet))
    assert len(events) == 1 and isinstance(events[0], Closed)
    assert events[0].reason.startswith(reason)
    assert s.closed
    assert s.receive(message_frame(ENVELOPE)) == []


def test_disconnect_only_when_connected() -> None:
    s = connected()
    s.disconnect()
    assert s.take() == [b"41"]
    s.disconnect()
    assert s.take() == []


# -- SioSocket: what a close sends (no sockets: a fake WebSocket and endpoint) ----------------


class FakeWs:
    def __init__(self) -> None:
        self.sent: List[bytes] = []
        self.closed: List[int] = []
        self.is_writable = True

    def send_text(self, payload: bytes) -> bool:
        self.sent.append(payload)
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed.append(code)


class FakeEndpoint:
    poll_buffer_high = 1024

    def __init__(self) -> None:
        self.dropped: List[int] = []
        self.held: List[int] = []

    def drop(self, sock: object, code: int, reason: str) -> None:
        self.dropped.append(code)

    def held_back(self, sock: object, size: int) -> None:
        self.held.append(size)


def open_socket() -> tuple:
    from maim_message.sio.socket import SioSocket

    endpoint, ws = FakeEndpoint(), FakeWs()
    sock = SioSocket(endpoint, connected(), None, "127.0.0.1")  # type: ignore[arg-type]
    sock.ws = ws  # type: ignore[assignment]
    return sock, endpoint, ws


@pytest.mark.parametrize("code,sends_41", [(1000, True), (4000, True), (1001, False),
                                           (1011, False), (1008, False)])
def test_close_sends_41_only_when_the_session_ends_on_purpose(code: int, sends_41: bool) -> None:
    sock, endpoint, ws = open_socket()
    sock.close(code, "why")
    assert (b"41" in ws.sent) is sends_41  # 0.7.5 clients never come back after a 41
    assert endpoint.dropped == [code]


def test_send_text_frames_the_body_and_respects_the_client_limit() -> None:
    from maim_message.sio.socket import AIOHTTP_CLIENT_MAX, client_ws_limit, ws_payload

    sock, endpoint, ws = open_socket()
    assert sock.send_text(b'{"a":1}') and ws.sent == [b'42["message",{"a":1}]']
    sock.ws_limit = client_ws_limit("Python/3.11 aiohttp/3.14.5")
    assert sock.ws_limit == AIOHTTP_CLIENT_MAX and client_ws_limit("node-XMLHttpRequest") is None
    assert sock.send_text(b"x" * AIOHTTP_CLIENT_MAX) is False
    assert endpoint.held == [AIOHTTP_CLIENT_MAX] and len(ws.sent) == 1
    # delivery's pre-framed bytes: the payload is unwrapped once
    assert ws_payload(b"\x81\x07" + b'{"b":2}', b"") == b'{"b":2}'
    assert ws_payload(b"\x81\x7e\x00\x07", b'{"b":2}') == b'{"b":2}'
