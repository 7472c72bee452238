"""A deliberately thin WebSocket client for the load generator.

Everything that costs CPU per message is done before the clock starts: frames are built,
JSON-encoded and masked up front (``build_frames``), and sent as pre-joined batches. While
the clock runs the client only parses frame *headers*: a server frame is classified as an
ack or a message by a bounded substring search, never by decoding its JSON (except in the
opt-in modes that need the content: ``ack_messages`` and ``keep_messages``).

``socketio=True`` speaks the 0.7 (Socket.IO) wire instead: a direct Engine.IO WebSocket
session (``<path>/?EIO=4&transport=websocket``, wire-0.7.md §8.2), every envelope framed as
``42["message",<envelope>]``, Engine.IO pings answered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
from typing import Callable, List, Optional

try:  # the C helper that websockets itself uses; only used before the clock starts
    from websockets.speedups import apply_mask as _c_mask
except Exception:  # pragma: no cover - pure Python fallback
    _c_mask = None

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PLATFORM = "bench"
TEXT_100 = ("The quick brown fox jumps over the lazy dog. " * 3)[:100]
# Frames received by all clients of this process: [acks, messages] (O(1) completion checks).
TOTALS = [0, 0]


def apply_mask(data: bytes, key: bytes) -> bytes:
    if _c_mask is not None:
        return _c_mask(data, key)
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def frame(payload: bytes, opcode: int = 1, key: Optional[bytes] = None) -> bytes:
    """One masked client frame (FIN set)."""
    key = os.urandom(4) if key is None else key
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + key + apply_mask(payload, key)


def envelope(api_key: str, msg_id: str, segment: dict, msg_type: str = "sys_std") -> dict:
    """A client -> server ``sys_std`` envelope as a 0.6.8 client emits it (~700 bytes)."""
    return {
        "ver": 1,
        "msg_id": msg_id,
        "type": msg_type,
        "meta": {"sender_user": api_key, "platform": PLATFORM, "timestamp": 1732500000.72},
        "payload": {
            "message_info": {
                "platform": PLATFORM,
                "message_id": msg_id,
                "time": 1732500000.7,
                "sender_info": {
                    "group_info": {
                        "platform": PLATFORM,
                        "group_id": "group_000123456",
                        "group_name": "benchmark group",
                    },
                    "user_info": {
                        "platform": PLATFORM,
                        "user_id": "user_000654321",
                        "user_nickname": "Bench Alice",
                    },
                },
            },
            "message_segment": segment,
            "message_dim": {"api_key": api_key, "platform": PLATFORM},
        },
    }


def text_seg() -> dict:
    return {"type": "text", "data": TEXT_100}


SIO_PREFIX, SIO_SUFFIX = b'42["message",', b"]"


def build_frames(api_key: str, tag: str, count: int, start: int = 0,
                 socketio: bool = False) -> List[bytes]:
    """``count`` masked frames with unique msg_ids (0.6.8 drops repeated ids)."""
    marker = "msg_@@@@@@@@@@@@@@@@@@@@"
    raw = json.dumps(envelope(api_key, marker, text_seg())).encode()
    if socketio:
        raw = SIO_PREFIX + raw + SIO_SUFFIX
    parts = raw.split(marker.encode())
    width = len(marker) - 4 - len(tag) - 1
    keys = os.urandom(4 * count)
    out = []
    for i in range(count):
        mid = f"msg_{tag}_{start + i:0{width}d}".encode()
        out.append(frame(mid.join(parts), key=keys[4 * i : 4 * i + 4]))
    return out


def batches(frames: List[bytes], size: int) -> List[bytes]:
    return [b"".join(frames[i : i + size]) for i in range(0, len(frames), size)]


class WSClient(asyncio.Protocol):
    """Counts server frames by header; calls ``on_progress`` after each read."""

    def __init__(self, path: str, api_key: str, conn_id: str, host: str, port: int,
                 socketio: bool = False):
        self.socketio = socketio
        if socketio:
            path = path.rstrip("/") + "/?EIO=4&transport=websocket"
        key = base64.b64encode(os.urandom(16))
        self._accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\nx-apikey: {api_key}\r\nx-platform: {PLATFORM}\r\n"
            f"x-uuid: {conn_id}\r\nUser-Agent: maim-bench\r\n\r\n"
        ).encode()
        self.api_key = api_key
        self.transport: Optional[asyncio.Transport] = None
        self.buf = bytearray()
        self.need = 2
        self.upgraded: asyncio.Future = asyncio.get_running_loop().create_future()
        # Socket.IO: resolved by the server's CONNECT answer (40{"sid":...})
        self.joined: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed: Optional[str] = None
        self.acks = 0
        self.msgs = 0
        self.on_progress: Optional[Callable[[WSClient], None]] = None
        self.ack_messages = False  # S6 hook: ack every server message like a 0.6.8 client
        self.acked_ids: Optional[List[str]] = None  # a list: every acked msg_id goes in it
        self.keep_messages = False  # S5: keep message payloads for an integrity check
        self.kept: List[bytes] = []

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc):  # type: ignore[override]
        self.closed = self.closed or f"connection lost: {exc or 'EOF'}"
        for fut in (self.upgraded, self.joined):
            if not fut.done():
                fut.set_exception(ConnectionError(self.closed))
                fut.exception()  # retrieved here: nobody awaits `joined` on the 0.6 wire
        if self.on_progress is not None:
            self.on_progress(self)

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        buf = self.buf
        buf += data
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[: end + 4]
            status = head.split("\r\n", 1)[0]
            if " 101 " not in status + " " or self._accept.decode() not in head:
                self.upgraded.set_exception(ConnectionError(f"handshake refused: {status}"))
                self.transport.close()  # type: ignore[union-attr]
                return
            self.upgraded.set_result(None)
        if len(buf) >= self.need:
            self._parse()
        if self.on_progress is not None:
            self.on_progress(self)

    # -- frames -------------------------------------------------------------------------
    def _parse(self) -> None:
        buf = self.buf
        n = len(buf)
        pos = acks = msgs = 0
        self.need = 2
        while n - pos >= 2:
            ln = buf[pos + 1] & 0x7F
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    self.need = 4
                    break
                ln = (buf[pos + 2] << 8) | buf[pos + 3]
                hl = 4
            elif ln == 127:
                if n - pos < 10:
                    self.need = 10
                    break
                ln = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hl = 10
            end = pos + hl + ln
            if end > n:
                self.need = end - pos
                break
            op = buf[pos] & 0x0F
            start = pos + hl
            if (op == 1 or op == 0) and self.socketio and not (
                    ln > 1 and buf[start] == 0x34 and buf[start + 1] == 0x32):  # not "42"
                self._sio_control(bytes(buf[start:end]))
            elif op == 1 or op == 0:
                if ln < 1024 and buf.find(b"sys_ack", start, end) >= 0:
                    acks += 1
                else:
                    msgs += 1
                    if self.keep_messages:
                        self.kept.append(bytes(buf[start:end]))
                    if self.ack_messages:
                        self._ack(bytes(buf[start:end]))
            elif op == 9:  # ping -> pong
                self.transport.write(frame(bytes(buf[start:end]), opcode=10))  # type: ignore[union-attr]
            elif op == 8:
                code = int.from_bytes(buf[start : start + 2], "big") if ln >= 2 else 1005
                reason = bytes(buf[start + 2 : end]).decode("utf-8", "replace")
                self.closed = f"closed by server: {code} {reason}".strip()
            pos = end
        del buf[:pos]
        if acks:
            self.acks += acks
            TOTALS[0] += acks
        if msgs:
            self.msgs += msgs
            TOTALS[1] += msgs

    def _sio_control(self, packet: bytes) -> None:
        """Engine.IO / Socket.IO packets other than events: OPEN, CONNECT answer, ping."""
        if packet == b"2":
            self.transport.write(frame(b"3"))  # type: ignore[union-attr]
        elif packet.startswith(b"0{"):
            self.transport.write(frame(b"40"))  # type: ignore[union-attr]
        elif packet.startswith(b"40") and not self.joined.done():
            self.joined.set_result(None)
        elif packet.startswith((b"41", b"44", b"1")):
            self.closed = f"Socket.IO session ended: {packet[:80]!r}"
            if not self.joined.done():
                self.joined.set_exception(ConnectionError(self.closed))

    def _ack(self, payload: bytes) -> None:
        if self.socketio:
            payload = payload[len(SIO_PREFIX):-len(SIO_SUFFIX)]
        msg_id = json.loads(payload).get("msg_id")
        if msg_id:
            if self.acked_ids is not None:
                self.acked_ids.append(msg_id)
            ack = {
                "ver": 1,
                "msg_id": os.urandom(16).hex(),
                "type": "sys_ack",
                "meta": {"uuid": "bench", "acked_msg_id": msg_id, "timestamp": 0.0},
                "payload": {"status": "received", "client_timestamp": 0.0},
            }
            body = json.dumps(ack).encode()
            if self.socketio:
                body = SIO_PREFIX + body + SIO_SUFFIX
            self.transport.write(frame(body))  # type: ignore[union-attr]

    def send(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def abort(self) -> None:
        if self.transport is not None:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:  # RST instead of FIN: no TIME_WAIT pile-up on the client
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            self.transport.abort()


async def connect(host: str, port: int, path: str, api_key: str, conn_id: str,
                  socketio: bool = False) -> WSClient:
    """Open and upgrade one connection (callers bound the time of the whole batch)."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(
        lambda: WSClient(path, api_key, conn_id, host, port, socketio), host, port
    )
    await proto.upgraded
    if socketio:
        await proto.joined
    return proto
