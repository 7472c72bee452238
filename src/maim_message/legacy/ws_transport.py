"""Legacy WebSocket client transport on ``websockets`` (0.6.8 used aiohttp; same wire).

Handshake headers: ``platform: <platform>`` and, with a token, ``Authorization: <token>``
(raw, no ``Bearer``). ``wss://`` verifies the server certificate by default (0.6.8 turned
verification off when no CA file was given), through the client side's one TLS builder.
permessage-deflate is offered, as 0.6.8's server side (uvicorn) accepts it; servers that
do not negotiate it (ours) get plain frames.

A 0.7.x legacy server (Socket.IO) answers the plain upgrade with 404/400; the transport then
opens an Engine.IO session on ``<path>/?EIO=4&transport=websocket`` with the same headers
(``sio/client.py``) and keeps using that generation for its reconnects.
"""

from __future__ import annotations

import inspect
import ssl
from typing import Any, Dict, Optional, Union

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State

from ..client.tls import build_client_context
from ..core.codec import loads_compat
from ..core.defaults import MAX_MESSAGE_SIZE
from ..errors import AuthRejectedError
from ..runtime.reconnect import refusal_for_status
from ..sio.client import SocketIOClientSocket, socketio_url
from .logsupport import Log, encoded_or_logged
from .reconnect import Deliver, ReconnectingTransport

__all__ = ["SSLVerify", "WebSocketClientTransport", "client_ssl_context", "normalize_ws_url"]

SSLVerify = Union[None, str, bool, ssl.SSLContext]
Session = Union[ClientConnection, SocketIOClientSocket]
_SWITCH_ON = (400, 404)  # what a server of the other generation answers (wire-0.7.md §6)
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


class WebSocketClientTransport(ReconnectingTransport[Session]):
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
        self.socketio = False  # the server turned out to be a 0.7.x (Socket.IO) one
        if ssl_verify is False and self.url.startswith("wss://"):
            log.warning("TLS certificate verification disabled for %s", self.url)

    async def _open(self) -> Session:
        if not self.socketio:
            try:
                return await self._connect(self.url)
            except InvalidStatus as exc:
                if exc.response.status_code not in _SWITCH_ON:
                    raise self._refusal_or(exc) from None
            self.socketio = True  # remembered for the reconnects
            self._log.info("%s speaks Socket.IO (a 0.7.x server)", self.url)
        try:
            ws = await self._connect(socketio_url(self.url))
        except InvalidStatus as exc:
            if exc.response.status_code in _SWITCH_ON:
                self.socketio = False  # not (or no longer) a 0.7 server: detect again
            raise self._refusal_or(exc) from None
        return await SocketIOClientSocket.open(ws, 10.0)

    @staticmethod
    def _refusal_or(exc: InvalidStatus) -> Exception:
        refusal = refusal_for_status(exc.response.status_code)
        return refusal if refusal is not None else exc

    async def _connect(self, url: str) -> ClientConnection:
        ssl_ctx = client_ssl_context(self.url, self.ssl_verify)
        kwargs: Dict[str, Any] = dict(_NO_PROXY)
        if ssl_ctx is not None:
            kwargs["ssl"] = ssl_ctx
        ws = await connect(
            url,
            additional_headers=self.headers,
            max_size=self.max_message_size,
            ping_interval=self.heartbeat_interval,
            ping_timeout=self.heartbeat_timeout,
            open_timeout=10,
            compression="deflate",
            **kwargs,
        )
        self._log.info("connected to %s as platform %r", self.url, self.platform)
        return ws

    def _session_open(self, session: Session) -> bool:
        return session.state is State.OPEN

    def _refusal(self, session: Session) -> Optional[AuthRejectedError]:
        # 0.6.8 servers accept the upgrade, then close with 1008 on a bad token
        if session.close_code == 1008:
            return AuthRejectedError(None, session.close_reason or "", close_code=1008)
        return None

    async def _serve(self, ws: Session) -> None:
        deliver = self._deliver
        loads = loads_compat
        # Socket.IO sessions yield message bodies (bytes); plain WebSockets text as str
        text = (str, bytes) if isinstance(ws, SocketIOClientSocket) else str
        try:
            async for frame in ws:
                if isinstance(frame, text):
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
            if ws.close_code == 1008:  # a 0.6.8 server refusing the token after the upgrade
                self._log.warning("connection closed by the server (1008 %s): refused, "
                                  "check the token", ws.close_reason)
            else:
                self._log.info("connection closed (%s %s)", ws.close_code, ws.close_reason)

    async def _close_session(self, ws: Session) -> None:
        await ws.close()

    async def send(self, message: Any) -> bool:
        ws = self._session
        if ws is None or ws.state is not State.OPEN:
            self._log.warning("not connected; message not sent")
            return False
        data = encoded_or_logged(message, self._log)
        if data is None:
            return False
        try:
            await ws.send(data, text=True)
            return True
        except ConnectionClosed:
            self._log.warning("connection closed while sending")
            return False
