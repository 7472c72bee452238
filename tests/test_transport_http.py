"""Plain HTTP requests through the transport: method and body in HandshakeInfo, body limits
(413, chunked 411), HEAD, long-running app answers (long polling), HTTP/1.0 upgrades, 426.

The request parsing is tested without sockets; both shells (asyncio and ASGI under
uvicorn) with real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Optional, Tuple

import pytest
import uvicorn

from maim_message.transport.asgi import serve_http
from maim_message.transport.base import Accept, Decision, HandshakeInfo, HttpReply
from maim_message.transport.http11 import (
    HandshakeError,
    http_response,
    parse_http_request,
    response_headers,
)
from maim_message.transport.ws_server import ServerOptions, WebSocketServerTransport

from .conftest import free_port
from .rawws import request as upgrade_request


def parse(raw: bytes) -> Any:
    parsed = parse_http_request(bytearray(raw))
    assert parsed is not None
    return parsed[0]


# -- request parsing, no sockets -------------------------------------------------------------


def test_content_length_body_is_measured_and_bounded() -> None:
    req = parse(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    assert req.method == "POST" and req.version == "HTTP/1.1"
    assert req.body_length(limit=5) == 5
    with pytest.raises(HandshakeError) as big:
        req.body_length(limit=4)
    assert big.value.status == 413
    assert parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").body_length() == 0


@pytest.mark.parametrize("headers, status", [
    (b"Transfer-Encoding: chunked\r\n", 411),
    (b"Transfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n", 411),
    (b"Content-Length: -1\r\n", 400),
    (b"Content-Length: 1e3\r\n", 400),
    (b"Content-Length: 3\r\nContent-Length: 4\r\n", 400),
    pytest.param("Content-Length: \u00b2\r\n".encode("latin-1"), 400, id="superscript-two"),
    pytest.param(b"Content-Length: " + b"9" * 5000 + b"\r\n", 400, id="5000-digits"),
    pytest.param(b"Content-Length: " + b"1" * 19 + b"\r\n", 400, id="19-digits"),
])
def test_bad_body_framing_is_refused(headers: bytes, status: int) -> None:
    req = parse(b"POST / HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n")
    with pytest.raises(HandshakeError) as exc:
        req.body_length()
    assert exc.value.status == status


def test_http10_upgrade_is_refused_and_other_versions_are_bad_requests() -> None:
    req = parse(upgrade_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1))
    assert req.is_websocket_upgrade
    with pytest.raises(HandshakeError) as exc:
        req.websocket_accept_key()
    assert exc.value.status == 505  # as a bare websockets server answers
    for line in (b"GET / HTTP/2.0", b"GET / HTTP/1.2", b" / HTTP/1.1"):
        with pytest.raises(HandshakeError) as bad:
            parse_http_request(bytearray(line + b"\r\nHost: a\r\n\r\n"))
        assert bad.value.status == 400


def test_426_always_names_version_13_and_head_only_drops_the_body() -> None:
    assert ("Sec-WebSocket-Version", "13") in response_headers(426, 0, "", ())
    given = (("Sec-WebSocket-Version", "13"),)
    assert response_headers(426, 0, "", given).count(("Sec-WebSocket-Version", "13")) == 1
    assert not any(k == "Sec-WebSocket-Version" for k, _ in response_headers(404, 0, "", ()))
    full = http_response(200, b"body!")
    head = http_response(200, b"body!", head_only=True)
    assert full == head + b"body!" and b"Content-Length: 5" in head


# -- an app that records what it was asked -----------------------------------------------------


class RecordingApp:
    def __init__(self, hold: float = 0.0) -> None:
        self.seen: List[HandshakeInfo] = []
        self.hold = hold
        self.cancelled = asyncio.Event()
        self.entered = asyncio.Event()

    async def handshake(self, info: HandshakeInfo) -> Decision:
        self.seen.append(info)
        self.entered.set()
        if info.path == "/ws":
            return Accept()
        if info.path == "/poll":
            try:
                await asyncio.sleep(self.hold)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        body = f"{info.method} {len(info.body)}:".encode() + info.body
        return HttpReply(200, body)

    def connection_opened(self, conn: Any) -> None: ...
    def text_received(self, conn: Any, payload: bytes) -> None: ...
    def binary_received(self, conn: Any, payload: bytes) -> None: ...
    def connection_writable(self, conn: Any) -> None: ...
    def connection_closed(self, conn: Any, code: int, reason: str) -> None: ...


async def exchange(port: int, *parts: bytes, pause: float = 0.0) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    for part in parts:
        writer.write(part)
        await writer.drain()
        if pause:
            await asyncio.sleep(pause)
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def post(path: str, body: bytes, method: str = "POST") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


class AsyncioShell:
    def __init__(self, app: RecordingApp, **options: Any) -> None:
        self.server = WebSocketServerTransport(app, ServerOptions(**options))

    async def __aenter__(self) -> int:
        await self.server.start("127.0.0.1", 0)
        assert self.server.port
        return self.server.port

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()


class ASGIShell:
    """``serve_http`` under uvicorn (the websocket path is covered by test_asgi)."""

    def __init__(self, app: RecordingApp, max_body: int = 1 << 20) -> None:
        async def asgi(scope: Dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                await serve_http(app, scope, receive, send, max_body=max_body)

        self.port = free_port()
        self.uvicorn = uvicorn.Server(uvicorn.Config(
            asgi, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"))
        self.task: Optional[asyncio.Task[Any]] = None

    async def __aenter__(self) -> int:
        self.task = asyncio.ensure_future(self.uvicorn.serve())
        for _ in range(500):
            if self.uvicorn.started:
                return self.port
            await asyncio.sleep(0.01)
        raise AssertionError("uvicorn did not start")

    async def __aexit__(self, *exc: object) -> None:
        self.uvicorn.should_exit = True
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


def status_and_body(raw: bytes) -> Tuple[int, bytes, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    text = head.decode("latin-1")
    return int(text.split(" ", 2)[1]), body, text.lower()


SHELLS = ["asyncio", "asgi"]


def shell(kind: str, app: RecordingApp, max_body: int = 1 << 20, **options: Any) -> Any:
    if kind == "asyncio":
        return AsyncioShell(app, max_request_body=max_body, **options)
    return ASGIShell(app, max_body=max_body)


@pytest.mark.parametrize("kind", SHELLS)
async def test_post_body_reaches_the_app_even_when_split(kind: str) -> None:
    app = RecordingApp()
    async with shell(kind, app) as port:
        raw = post("/echo?x=1", b"0123456789")
        status, body, _ = status_and_body(await exchange(port, raw[:-7], raw[-7:], pause=0.05))
    assert status == 200 and body == b"POST 10:0123456789"
    info = app.seen[0]
    assert info.method == "POST" and info.body == b"0123456789" and not info.is_upgrade
    assert info.path == "/echo" and info.query == {"x": "1"}


@pytest.mark.parametrize("kind", SHELLS)
async def test_body_over_the_limit_is_413_without_asking_the_app(kind: str) -> None:
    app = RecordingApp()
    async with shell(kind, app, max_body=100) as port:
        status, _, _ = status_and_body(await exchange(port, post("/echo", b"x" * 101)))
        ok, body, _ = status_and_body(await exchange(port, post("/echo", b"x" * 100)))
    assert status == 413 and ok == 200 and body.startswith(b"POST 100:")
    assert len(app.seen) == 1


@pytest.mark.parametrize("kind", SHELLS)
async def test_head_gets_headers_without_the_body(kind: str) -> None:
    app = RecordingApp()
    async with shell(kind, app) as port:
        raw = await exchange(port, b"HEAD /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    status, body, head = status_and_body(raw)
    assert status == 200 and body == b""
    assert "content-length: 7" in head  # the length of what GET would have sent
    assert app.seen[0].method == "HEAD"


@pytest.mark.parametrize("kind", SHELLS)
async def test_app_may_answer_after_the_handshake_timeout(kind: str) -> None:
    app = RecordingApp(hold=0.8)
    async with shell(kind, app, handshake_timeout=0.2) as port:
        status, body, _ = status_and_body(
            await exchange(port, b"GET /poll HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
    assert status == 200 and body == b"GET 0:"


@pytest.mark.parametrize("kind", SHELLS)
async def test_client_leaving_cancels_a_waiting_answer(kind: str) -> None:
    app = RecordingApp(hold=30.0)
    async with shell(kind, app) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /poll HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.wait_for(app.entered.wait(), 5)
        writer.close()
        await asyncio.wait_for(app.cancelled.wait(), 5)


async def test_asyncio_shell_times_out_a_body_that_never_completes() -> None:
    app = RecordingApp()
    served = AsyncioShell(app, handshake_timeout=0.3)
    async with served as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12345")
        try:
            rest = await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:
            rest = b""
        writer.close()
        assert rest == b"" and app.seen == []
        assert served.server.options.limits["handshake_timeout"] == 1


async def test_asyncio_shell_refuses_chunked_and_http10_upgrades_and_names_version() -> None:
    app = RecordingApp()
    async with AsyncioShell(app) as port:
        chunked = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: a\r\n"
                                       b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        old = await exchange(port, upgrade_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        version = await exchange(port, upgrade_request().replace(b"Version: 13", b"Version: 8"))
        plain = await exchange(port, b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n")
        plain10 = await exchange(port, b"GET /echo HTTP/1.0\r\n\r\n")
    assert status_and_body(chunked)[0] == 411
    assert status_and_body(old)[0] == 505
    for raw in (version, plain):
        status, _, head = status_and_body(raw)
        assert status == 426 and "sec-websocket-version: 13" in head
    assert status_and_body(plain10)[:2] == (200, b"GET 0:")  # plain HTTP/1.0 is fine
    assert [i.path for i in app.seen] == ["/ws", "/echo"]


async def test_asyncio_shell_answers_unparsable_content_length_with_400() -> None:
    """Digits Python's int() refuses are a 400 on the wire, not an error in the event loop,
    and the server keeps serving."""
    loop_errors: List[Dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    app = RecordingApp()
    try:
        async with AsyncioShell(app) as port:
            for value in ("\u00b2".encode("latin-1"), b"9" * 5000):
                raw = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: a\r\n"
                                           b"Content-Length: " + value + b"\r\n\r\n")
                assert status_and_body(raw)[0] == 400
            ok = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: a\r\n"
                                      b"Content-Length: 2\r\n\r\nhi")
            assert status_and_body(ok)[0] == 200
    finally:
        loop.set_exception_handler(None)
    assert loop_errors == []
    assert [i.path for i in app.seen] == ["/echo"]
