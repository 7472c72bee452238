"""Legacy WebSocket client transport on ``websockets`` (0.6.8 used aiohttp; same wire).

Handshake headers: ``platform: <platform>`` and, with a token, ``Authorization: <token>``
(raw, no ``Bearer``). ``wss://`` verifies the server certificate by default (0.6.8 turned
verification off when no CA file was given), through the client side's one TLS builder.
permessage-deflate is offered, as 0.6.8's server side (uvicorn) accepts it; servers that
do not negotiate it (ours) get plain frames.
"""

from __future__ import annotations

import inspect
import ssl
from typing import Any, Dict, Optional, Union

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State

from ..client.tls import build_client_context
from ..core.codec import dumps_compat, loads_compat
from ..core.defaults import MAX_MESSAGE_SIZE
from ..errors import AuthRejectedError
from ..runtime.reconnect import refusal_for_status
from .logsupport import Log
from .reconnect import Deliver, ReconnectingTransport

__all__ = ["SSLVerify", "WebSocketClientTransport", "client_ssl_context", "normalize_ws_url"]

SSLVerify = Union[None, str, bool, ssl.SSLContext]
# websockets >= 15 reads proxy settings from the environment unless told not to; aiohttp
# (0.6.8) did not, so neither do we.
_NO_PROXY: Dict[str, Any] = (
    {"proxy": None} if "proxy" in inspect.signature(connect).parameters else {}
)


def normalize_ws_url(url: str) -> str:
    """aiohttp also accepted ``http(s)://``; websockets needs ``ws(s)://``."""
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    return url


def client_ssl_context(url: str, ssl_verify: SSLVerify) -> Optional[ssl.SSLContext]:
    """TLS context for ``wss://``: a CA file path, an ``SSLContext``, ``None`` (system CAs)
    or ``False`` (verification explicitly disabled)."""
    if not url.startswith("wss://"):
        return None
    if isinstance(ssl_verify, ssl.SSLContext):
        return ssl_verify
    return build_client_context(
        verify=ssl_verify is not False,
        ca_certs=ssl_verify if isinstance(ssl_verify, str) and ssl_verify else None,
    )


class WebSocketClientTransport(ReconnectingTransport[ClientConnection]):
    def __init__(
        self,
        deliver: Deliver,
        log: Log,
        *,
        url: str,
        platform: str,
        token: Optional[str] = None,
        ssl_verify: SSLVerify = None,
        max_message_size: int = MAX_MESSAGE_SIZE,
        heartbeat_interval: float = 20.0,
        heartbeat_timeout: float = 10.0,
    ) -> None:
        super().__init__(deliver, log)
        self.url = normalize_ws_url(url)
        self.platform = platform
        self.token = token
        self.ssl_verify = ssl_verify
        self.max_message_size = max_message_size
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.headers: Dict[str, str] = {"platform": platform}
        if token:
            self.headers["Authorization"] = str(token)
        if ssl_verify is False and self.url.startswith("wss://"):
            log.warning("TLS certificate verification disabled for %s", self.url)

    async def _open(self) -> ClientConnection:
        ssl_ctx = client_ssl_context(self.url, self.ssl_verify)
        kwargs: Dict[str, Any] = dict(_NO_PROXY)
        if ssl_ctx is not None:
            kwargs["ssl"] = ssl_ctx
        try:
            ws = await connect(
                self.url,
                additional_headers=self.headers,
                max_size=self.max_message_size,
                ping_interval=self.heartbeat_interval,
                ping_timeout=self.heartbeat_timeout,
                open_timeout=10,
                compression="deflate",
                **kwargs,
            )
        except InvalidStatus as exc:
            refusal = refusal_for_status(exc.response.status_code)
            if refusal is not None:
                raise refusal from None
            raise
        self._log.info("connected to %s as platform %r", self.url, self.platform)
        return ws

    def _session_open(self, session: ClientConnection) -> bool:
        return session.state is State.OPEN

    def _refusal(self, session: ClientConnection) -> Optional[AuthRejectedError]:
        # 0.6.8 servers accept the upgrade, then close with 1008 on a bad token
        if session.close_code == 1008:
            return AuthRejectedError(None, session.close_reason or "", close_code=1008)
        return None

    async def _serve(self, ws: ClientConnection) -> None:
        deliver = self._deliver
        loads = loads_compat
        try:
            async for frame in ws:
                if isinstance(frame, str):
                    try:
                        value = loads(frame)
                    except ValueError as exc:
                        self._log.warning("server sent invalid JSON: %s", exc)
                        continue
                    deliver(value)
                else:
                    self._log.debug("binary frame from server ignored")
        except ConnectionClosed:
            pass
        if self._running:
            self._log.info("connection closed (%s %s)", ws.close_code, ws.close_reason)

    async def _close_session(self, ws: ClientConnection) -> None:
        await ws.close()

    async def send(self, message: Any) -> bool:
        ws = self._session
        if ws is None or ws.state is not State.OPEN:
            self._log.warning("not connected; message not sent")
            return False
        try:
            await ws.send(dumps_compat(message), text=True)
            return True
        except ConnectionClosed:
            self._log.warning("connection closed while sending")
            return False
