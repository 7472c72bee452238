"""The debugging commands for adapter authors: ``send``, ``tail`` and ``ping``.

They go through the library's own :class:`~maim_message.client.WebSocketClient`, so they
speak whatever it speaks (our hub, the published 0.6.8 server). Results go to the given
text streams (the CLI passes stdout/stderr); exit codes: 0 ok, 1 refused or unreachable,
3 sent but not acknowledged in time.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid as uuid_module
from typing import Any, Callable, Dict, List, Optional, TextIO
from urllib.parse import urlsplit

from ..client import WebSocketClient, create_client_config
from ..core.codec import dumps
from ..core.models.api import (
    APIMessageBase,
    BaseMessageInfo,
    MessageDim,
    Seg,
    SenderInfo,
    UserInfo,
)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_NOT_ACKED = 3
# last_error of a client the server refused after the upgrade: a 0.6.8 close ("server
# refused authentication after the upgrade") or a 0.7 CONNECT refusal ("server refused
# the Socket.IO connection"), as AuthRejectedError words them
AUTH_REFUSED = "server refused "
PING_TYPE = "maim_cli_ping"  # custom type of ping's round-trip probe (acked, not routed)


def _client(url: str, key: str, platform: str, *, ca_certs: Optional[str] = None,
            insecure: bool = False, reconnect: bool = False, **callbacks: Any) -> WebSocketClient:
    config = create_client_config(url, key, platform=platform, auto_reconnect=reconnect,
                                  max_reconnect_attempts=0 if reconnect else 1, **callbacks)
    if ca_certs:
        config.ssl_ca_certs = ca_certs
    if insecure:
        config.ssl_verify = False
        config.ssl_check_hostname = False
    return WebSocketClient(config)


def _refused(client: WebSocketClient) -> Optional[str]:
    """The reason the server refused us, if it did (before or right after the upgrade)."""
    error = client.last_error or ""
    if error.startswith(AUTH_REFUSED) or "HTTP 401" in error or "HTTP 403" in error:
        return error
    return None


async def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll a cheap in-process condition every 1 ms (the client has no ack event, so a
    timing shown includes up to 1 ms of this granularity)."""
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() >= deadline:
            return False
        await asyncio.sleep(0.001)
    return True


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# -- send ----------------------------------------------------------------------------------


def text_message(text: str, platform: str, dim_key: str, user_id: str) -> APIMessageBase:
    """A standard text message as an adapter would send it."""
    sender = SenderInfo(user_info=UserInfo(platform, user_id)) if user_id else None
    info = BaseMessageInfo(platform, f"cli-{uuid_module.uuid4().hex[:12]}", time.time(),
                           sender_info=sender)
    return APIMessageBase(info, Seg("text", text), MessageDim(dim_key, platform))


async def send(
    url: str, key: str, platform: str, text: str, *, to_key: Optional[str] = None,
    user_id: str = "", timeout: float = 10.0, out: TextIO, err: TextIO, **tls: Any,
) -> int:
    """Send one standard message and wait for the server's ``sys_ack``."""
    client = _client(url, key, platform, **tls)
    started = time.perf_counter()
    try:
        if not await client.connect():
            err.write(f"refused: {client.last_error or 'cannot connect'}\n")
            return EXIT_REFUSED
        connected = time.perf_counter()
        message = text_message(text, platform, to_key or key, user_id)
        if not await client.send_message(message):
            err.write(f"not sent: {client.last_error or 'connection lost'}\n")
            return EXIT_REFUSED

        def settled() -> bool:
            return client.get_stats()["pending_messages"] == 0 or _refused(client) is not None

        acked = await _wait(settled, timeout)
        reason = _refused(client)
        if reason is not None:
            err.write(f"refused: {reason}\n")
            return EXIT_REFUSED
        if not acked:
            err.write(f"not acknowledged within {timeout:g} s "
                      f"({client.last_error or 'no sys_ack from the server'})\n")
            return EXIT_NOT_ACKED
        done = time.perf_counter()
        out.write(f"acked: message {message.message_info.message_id} to {platform} "
                  f"(connect {_ms(connected - started)}, ack {_ms(done - connected)})\n")
        return EXIT_OK
    finally:
        await client.stop()


# -- tail ----------------------------------------------------------------------------------


def describe_seg(seg: Seg) -> str:
    if seg.type == "seglist" and isinstance(seg.data, list):
        return " ".join(describe_seg(s) for s in seg.data)
    if seg.type == "text":
        return str(seg.data)
    return f"[{seg.type}]"


class _AnyCustomType(Dict[str, Callable[..., Any]]):
    """A custom-handler table that answers every type (tail shows them all)."""

    def __init__(self, sink: Callable[[str, Any, Dict[str, Any]], None]) -> None:
        super().__init__()
        self._sink = sink

    def get(self, key: str, default: Any = None) -> Any:
        return functools.partial(self._sink, key)


class Printer:
    """Writes what tail receives: readable lines (rich when available) or JSON lines."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.console: Any = None
        if not as_json:
            try:
                from rich.console import Console

                self.console = Console(file=out, highlight=False, soft_wrap=True)
            except ImportError:  # pragma: no cover - rich is in the hub extra
                self.console = None

    def _line(self, obj: Dict[str, Any], text: str) -> None:
        if self.as_json:
            self.out.write(dumps(obj).decode("utf-8") + "\n")
        elif self.console is not None:
            from rich.markup import escape

            self.console.print(escape(text))
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def message(self, message: APIMessageBase, meta: Dict[str, Any]) -> None:
        info = message.message_info
        sender = info.sender_info.user_info if info.sender_info else None
        who = f" from {sender.user_id}" if sender is not None and sender.user_id else ""
        stamp = time.strftime("%H:%M:%S")
        self._line({"type": "message", "message": message.to_dict(), "meta": meta},
                   f"{stamp} message {info.platform}{who}: {describe_seg(message.message_segment)}")

    def custom(self, kind: str, payload: Any, meta: Dict[str, Any]) -> None:
        stamp = time.strftime("%H:%M:%S")
        self._line({"type": "custom", "custom_type": kind, "payload": payload, "meta": meta},
                   f"{stamp} custom {kind}: {dumps(payload).decode('utf-8')[:500]}")


async def tail(
    url: str, key: str, platform: str, *, as_json: bool = False, count: int = 0,
    duration: float = 0.0, out: TextIO, err: TextIO, **tls: Any,
) -> int:
    """Connect as a client and print every message and custom message until stopped
    (Ctrl+C), ``count`` messages or ``duration`` seconds; reconnects like any client."""
    printer = Printer(out, as_json)
    done = asyncio.Event()
    seen = 0

    def counted() -> None:
        nonlocal seen
        seen += 1
        if count and seen >= count:
            done.set()

    def on_message(message: APIMessageBase, meta: Dict[str, Any]) -> None:
        printer.message(message, meta)
        counted()

    def on_custom(kind: str, payload: Any, meta: Dict[str, Any]) -> None:
        printer.custom(kind, payload, meta)
        counted()

    closed: List[str] = []  # why the server closed the connection (a revoke: 4003)

    tailing = False  # connected once and not stopping: a disconnect is worth a line
    told: List[Optional[str]] = []  # disconnects already printed

    def on_disconnect(uuid: str, error: Optional[str]) -> None:
        if error and not error.startswith(AUTH_REFUSED) and "HTTP " not in error:
            closed.append(error)
        if _refused(client) is not None:
            done.set()
        elif tailing and not done.is_set():
            err.write(f"disconnected: {error or 'connection lost'}; reconnecting\n")
            err.flush()
            told.append(error)

    connects = 0

    def on_connect(uuid: str, config: Any) -> None:
        nonlocal connects
        connects += 1
        if connects > 1 and tailing:
            err.write("reconnected\n")
            err.flush()

    client = _client(url, key, platform, reconnect=True, on_message=on_message,
                     on_disconnect=on_disconnect, on_connect=on_connect, **tls)
    client.custom_handlers = _AnyCustomType(on_custom)
    taken = 0

    def take() -> bool:  # a backlog arrives in one burst: the rest stays queued, unacked
        nonlocal taken
        if count and taken >= count:
            return False
        taken += 1
        return True

    client._take_message = take
    try:
        if not await client.connect():
            err.write(f"refused: {client.last_error or 'cannot connect'}\n")
            return EXIT_REFUSED
        if not as_json:
            err.write(f"tailing {urlsplit(url)._replace(query='').geturl()} as platform "
                      f"{platform} (Ctrl+C to stop)\n")
        err.flush()
        tailing = True
        try:
            await asyncio.wait_for(done.wait(), duration or None)
        except asyncio.TimeoutError:
            pass
        reason = _refused(client)
        if reason is not None:
            if closed and closed[-1] not in told:  # what ended the last connection, then
                err.write(f"disconnected: {closed[-1]}\n")  # why reconnecting failed
            err.write(f"refused: {reason}\n")
            return EXIT_REFUSED
        return EXIT_OK
    finally:
        tailing = False
        await client.stop()


# -- ping ----------------------------------------------------------------------------------


async def _tcp_connect(url: str, timeout: float) -> float:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    started = time.perf_counter()
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname or "127.0.0.1", port), timeout)
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed


async def _keyless(url: str, timeout: float) -> str:
    """What the server answers a handshake without a key (our hub: HTTP 401)."""
    import websockets
    from websockets.exceptions import InvalidStatus

    try:
        async with websockets.connect(url, open_timeout=timeout, compression=None):
            return "upgrade accepted without a key"
    except InvalidStatus as exc:
        body = exc.response.body or b""
        return f"HTTP {exc.response.status_code} {body.decode('utf-8', 'replace').strip()}"


async def ping(
    url: str, key: Optional[str], platform: str, *, timeout: float = 10.0, out: TextIO,
    err: TextIO, **tls: Any,
) -> int:
    """TCP connect, handshake + auth with the key, and a round trip (a custom message's
    ack), each timed. Without a key: only what the server answers a keyless handshake."""
    try:
        tcp = await _tcp_connect(url, timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        err.write(f"unreachable: {type(exc).__name__}: {exc}\n")
        return EXIT_REFUSED
    out.write(f"tcp connect      {_ms(tcp)}\n")
    if not key:
        try:
            answer = await _keyless(url, timeout)
        except Exception as exc:  # any handshake failure is the answer we report
            err.write(f"handshake failed: {type(exc).__name__}: {exc}\n")
            return EXIT_REFUSED
        out.write(f"handshake        {answer} (no key given: auth not checked)\n")
        return EXIT_OK
    client = _client(url, key, platform, **tls)
    try:
        started = time.perf_counter()
        if not await client.connect():
            err.write(f"refused: {client.last_error or 'cannot connect'}\n")
            return EXIT_REFUSED
        handshake = time.perf_counter() - started
        out.write(f"handshake + auth {_ms(handshake)} (accepted, platform {platform})\n")
        sent = time.perf_counter()
        await client.send_custom_message(PING_TYPE, {"sent": time.time()})
        acked = await _wait(lambda: client.get_stats()["pending_messages"] == 0
                            or _refused(client) is not None, timeout)
        reason = _refused(client)
        if reason is not None:
            err.write(f"refused: {reason}\n")
            return EXIT_REFUSED
        if not acked:
            err.write(f"no ack for the round-trip probe within {timeout:g} s\n")
            return EXIT_NOT_ACKED
        out.write(f"round trip       {_ms(time.perf_counter() - sent)} (custom message ack)\n")
        return EXIT_OK
    finally:
        await client.stop()
