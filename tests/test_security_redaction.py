"""No secret in any log line: a whole session captured at DEBUG must not contain a key.

Root logger, every ``maim_message`` logger and the ``websockets`` loggers are at DEBUG
(``websockets`` logs every request header and the request path at that level). The
session has server and clients, good and bad keys, keys in the query (URL-encoded) and
in headers, the spec's ``user id = api key`` extractor, refusals, protocol errors, a
server restart with client reconnects, and a send while the server is down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Dict, Iterator, List
from urllib.parse import quote, quote_plus

import pytest

from maim_message.client import ClientConfig, WebSocketClient, WebSocketMultiClient
from maim_message.core.identity import fingerprint
from maim_message.server import ServerConfig, WebSocketServer

from .conftest import free_port
from .helpers_api import make_message
from .rawws import RawWS, frame, request, text

GOOD_HEADER = "hdrKey7Q2mZ9xW4vB8nR1tY6"
GOOD_QUERY = "qry+Key/3Lp0=Ks5Jd7Hf2Gc"  # needs URL-encoding in a query string
GOOD_MULTI = "mulKey9Vb2Nc4Xz6Lk8Jh1Gf"
BAD_HEADER = "badHdr1Aa2Bb3Cc4Dd5Ee6Ff"
BAD_QUERY = "badQry6Gg5Hh4Ii3Jj2Kk1Ll"
SECRETS = (GOOD_HEADER, GOOD_QUERY, GOOD_MULTI, BAD_HEADER, BAD_QUERY)
GOOD = {GOOD_HEADER, GOOD_QUERY, GOOD_MULTI}


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: List[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def capture() -> Iterator[Capture]:
    handler = Capture()
    root = logging.getLogger()
    names = ["maim_message", "websockets", "websockets.client", "websockets.server", "asyncio"]
    saved = {name: logging.getLogger(name).level for name in names}
    saved_root = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_root)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def server_config(port: int, received: List[Any]) -> ServerConfig:
    async def on_message(message: Any, metadata: Dict[str, Any]) -> None:
        received.append(message)

    config = ServerConfig(
        host="127.0.0.1", port=port,
        on_auth=lambda m: m["api_key"] in GOOD,
        on_auth_extract_user=lambda m: m["api_key"],  # the spec's example: user id = key
        on_message=on_message,
    )
    config.register_custom_handler("ping", lambda env, meta: None)
    return config


def client(url: str, key: str, got: List[Any]) -> WebSocketClient:
    async def on_message(message: Any, metadata: Dict[str, Any]) -> None:
        got.append(message)

    return WebSocketClient(ClientConfig(
        url=url, api_key=key, platform="qq", reconnect_delay=0.05, max_reconnect_delay=0.2,
        connect_timeout=3.0, on_message=on_message,
    ))


async def test_a_whole_session_at_debug_logs_no_key(capture: Capture) -> None:
    port = free_port()
    base = f"ws://127.0.0.1:{port}/ws"
    received: List[Any] = []
    server = WebSocketServer(server_config(port, received))
    await server.start()
    got_h: List[Any] = []
    got_q: List[Any] = []
    extra_texts: List[str] = []
    header_client = client(base, GOOD_HEADER, got_h)
    query_client = client(f"{base}?api_key={quote(GOOD_QUERY, safe='')}&platform=qq",
                          GOOD_QUERY, got_q)
    multi = WebSocketMultiClient()
    bad_clients = [
        client(base, BAD_HEADER, []),
        client(f"{base}?api_key={quote_plus(BAD_QUERY)}", BAD_QUERY, []),
        client(f"ws://127.0.0.1:notaport/ws?api_key={GOOD_HEADER}", GOOD_HEADER, []),
    ]
    try:
        assert await header_client.connect()
        assert await query_client.connect()
        multi.register_connection("m1", base, GOOD_MULTI, "tg")
        multi.register_connection("m2", f"{base}?api_key={BAD_QUERY}", BAD_QUERY, "tg")
        await multi.start()
        await multi.connect()
        await until(lambda: multi.is_connected("m1"))
        for bad in bad_clients:
            assert not await bad.connect()
            extra_texts.append(str(bad.get_last_error()))
        extra_texts.append(str(multi.get_last_error("m2")))

        # Traffic both ways, standard and custom.
        assert await header_client.send_message(make_message("hello", GOOD_HEADER, "qq"))
        assert await query_client.send_message(make_message("hi", GOOD_QUERY, "qq"))
        assert await header_client.send_custom_message("ping", {"key_hint": "none"})
        await until(lambda: len(received) >= 2)
        sent = await server.send_message(make_message("back", GOOD_HEADER, "qq"))
        assert sent and all(sent.values())
        await until(lambda: len(got_h) == 1)

        # Raw peers: no key (401), protocol errors with a key in the query.
        assert server.port == port
        raw = await RawWS.connect(port)
        raw.send(request())
        assert (await raw.read_all()).startswith(b"HTTP/1.1 401")
        raw.close()
        for hostile, closes in ((text(b"not json"), False), (frame(0x2, b"\x00"), True),
                                (text(b'"\xff"'), True), (frame(0x1, b"x", masked=False), True)):
            raw = await RawWS.open(port, request(query={"api_key": GOOD_QUERY},
                                                 headers={"x-uuid": "raw-hostile"}))
            raw.send(hostile)
            if closes:
                assert (await raw.expect_close())[0] in (1002, 1003, 1007)
            else:
                assert b"sys_error" in (await raw.read_frame())[1]
            raw.close()

        # Restart: clients notice, fail to send, reconnect, and work again.
        await server.stop()
        await until(lambda: not header_client.is_connected() and not query_client.is_connected())
        await header_client.send_message(make_message("while down", GOOD_HEADER, "qq"))
        await asyncio.sleep(0.3)  # a few refused reconnect attempts
        server = WebSocketServer(server_config(port, received))
        await server.start()
        await until(lambda: header_client.is_connected() and query_client.is_connected())
        await until(lambda: multi.is_connected("m1"))
        before = len(received)
        assert await header_client.send_message(make_message("again", GOOD_HEADER, "qq"))
        await until(lambda: len(received) > before)

        extra_texts += [repr(server.get_stats()), repr(server.get_connections()),
                        repr(header_client.get_stats()), repr(query_client.get_stats()),
                        repr(multi.get_stats())]
    finally:
        for c in (header_client, query_client, *bad_clients):
            await c.stop()
        await multi.stop()
        await server.stop()

    everything = "\n".join(capture.lines + extra_texts)
    # The capture really saw DEBUG output of websockets and of our own code.
    assert any(line.startswith("websockets.client DEBUG > GET") for line in capture.lines)
    assert any("x-apikey" in line.lower() for line in capture.lines)
    assert any(line.startswith("maim_message.") for line in capture.lines)
    assert fingerprint(GOOD_HEADER) in everything and fingerprint(BAD_HEADER) in everything
    for secret in SECRETS:
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            leaks = [line for line in everything.splitlines() if form in line]
            assert not leaks, f"{fingerprint(secret)} leaked: {leaks[:3]}"


@pytest.mark.parametrize("url, shown", [
    ("redis://user:pass@host:6379/0", "redis://***@host:6379/0"),
    ("redis://:pa/ss@host:1/0", "redis://***@host:1/0"),  # an unencoded "/" in it
    ("unix://user:pass@/tmp/redis.sock?db=0", "unix://***@/tmp/redis.sock?db=0"),
    ("redis://host?password=pass&db=1", "redis://host?db=1"),
    ("redis://host?%70assword=pass&db=1", "redis://host?db=1"),  # percent-encoded name
    ("rediss://host?ssl_password=pass", "rediss://host"),
    ("127.0.0.1:6379/0?password=pass", "127.0.0.1:6379/0"),  # not a URL at all
    ("user:pass@host:1", "***@host:1"),
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("redis://admin:pa?ss@host:1/0", "redis://***@host:1/0"),  # "?" in the password
    ("redis://admin:pa#ss@host:1/0?db=2", "redis://***@host:1/0?db=2"),  # "#" in it
    ("redis://host?password=pa@ss&db=1", "redis://host?db=1"),  # "@" in a secret param
])
def test_redis_urls_are_shown_without_their_secrets(url: str, shown: str) -> None:
    from maim_message.core.redact import safe_url

    assert safe_url(url) == shown and "pass" not in safe_url(url)
