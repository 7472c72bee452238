"""A raw WebSocket client for hostile tests: builds requests and frames byte by byte.

Nothing here validates anything, on purpose: tests use it to send what a well-behaved
library never would (unmasked frames, reserved bits, bad opcodes, early frames).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlencode


def request(
    path: str = "/ws", query: Optional[Dict[str, str]] = None,
    headers: Optional[Dict[str, str]] = None, host: str = "127.0.0.1",
) -> bytes:
    """An HTTP/1.1 upgrade request head."""
    target = path + ("?" + urlencode(query) if query else "")
    lines = [
        f"GET {target} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def xor_mask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return b""
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, masked: bool = True,
    mask: Optional[bytes] = None, length: Optional[int] = None,
) -> bytes:
    """One frame; ``length`` overrides the announced length (lying headers)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    mbit = 0x80 if masked else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not masked:
        return head + payload
    mask = os.urandom(4) if mask is None else mask
    return head + mask + xor_mask(payload, mask)


def text(data: str | bytes, **kw: object) -> bytes:
    return frame(0x1, data.encode() if isinstance(data, str) else data, **kw)  # type: ignore[arg-type]


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    return frame(0x8, struct.pack("!H", code) + reason.encode())


class RawWS:
    """One TCP connection to the hub; reads HTTP heads and unmasked server frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.head = ""

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> RawWS:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        return cls(reader, writer)

    @classmethod
    async def open(cls, port: int, data: bytes, timeout: float = 5.0) -> RawWS:
        """Connect, send ``data`` (request head, maybe frames after it), read the reply head."""
        ws = await cls.connect(port)
        ws.send(data)
        await ws.read_head(timeout)
        return ws

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_head(self, timeout: float = 5.0) -> int:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        self.head = raw.decode("latin-1")
        self.status = int(self.head.split(" ", 2)[1])
        return self.status

    async def read_all(self, timeout: float = 5.0) -> bytes:
        """Everything until the server closes the connection."""
        return await asyncio.wait_for(self.reader.read(), timeout)

    async def read_frame(self, timeout: float = 5.0) -> Tuple[int, bytes]:
        async def _read() -> Tuple[int, bytes]:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return b0 & 0x0F, await self.reader.readexactly(n)

        return await asyncio.wait_for(_read(), timeout)

    async def frames_until_close(self, timeout: float = 5.0) -> Tuple[List[bytes], int, str]:
        """Text payloads received, then the close code and reason."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        texts: List[bytes] = []
        while True:
            opcode, payload = await self.read_frame(max(0.01, deadline - loop.time()))
            if opcode == 0x1:
                texts.append(payload)
            elif opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return texts, code, payload[2:].decode("utf-8", "replace")

    async def expect_close(self, timeout: float = 5.0) -> Tuple[int, str]:
        _, code, reason = await self.frames_until_close(timeout)
        return code, reason

    async def at_eof(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the TCP connection (data before it is dropped)."""
        try:
            await asyncio.wait_for(self.reader.read(), timeout)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        return self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()
