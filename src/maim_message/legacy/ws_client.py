"""``MessageClient``: the legacy client, ws or tcp chosen by the URL scheme (wire §2.1, §2.4).

``connect()`` only configures; ``run()`` connects and keeps reconnecting until ``stop()``.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Union

from .dispatch import HandlerRegistry, build_custom_message
from .reconnect import ReconnectingTransport
from .tcp_client import TcpClientTransport
from .ws_transport import SSLVerify, WebSocketClientTransport

__all__ = ["MessageClient"]

ClientTransport = Union[WebSocketClientTransport, TcpClientTransport]


class MessageClient(HandlerRegistry):
    """Legacy client. ``mode`` is accepted for compatibility; the URL scheme decides."""

    connection: ClientTransport

    def __init__(self, mode: str = "ws", custom_logger: Optional[logging.Logger] = None) -> None:
        super().__init__(custom_logger, __name__)
        self.mode = mode
        self.platform: Optional[str] = None
        self._running = False
        self._connection_configured = False

    async def connect(
        self,
        url: str,
        platform: str,
        token: Optional[str] = None,
        ssl_verify: SSLVerify = None,
    ) -> None:
        """Configure the target; no network I/O happens until ``run()``.

        ``ssl_verify``: CA file for ``wss://`` (``None`` = system CAs, ``False`` = no
        verification, or a ready ``ssl.SSLContext``).
        """
        old = getattr(self, "connection", None)
        if old is not None and old.is_connected():
            await old.stop()
        self.platform = platform
        self._running = True
        if url.startswith(("tcp://", "tcps://")):
            self.connection = TcpClientTransport(self._deliver, self._log, url=url,
                                                 platform=platform, token=token)
        else:
            self.connection = WebSocketClientTransport(
                self._deliver, self._log, url=url, platform=platform, token=token,
                ssl_verify=ssl_verify,
            )
        self._connection_configured = True

    def _transport(self) -> ReconnectingTransport[Any]:
        conn = getattr(self, "connection", None)
        if conn is None:
            raise RuntimeError("call connect() before run() / send_message()")
        return conn

    async def run(self) -> None:
        """Connect and keep the connection (reconnecting) until ``stop()``."""
        conn = self._transport()
        self._running = True
        try:
            await conn.run()
        finally:
            self._running = False

    async def stop(self) -> None:
        self._running = False
        conn = getattr(self, "connection", None)
        if conn is not None:
            await conn.stop()
        await self._cancel_background()

    async def send_message(self, message: Dict[str, Any]) -> bool:
        """Send a dict as is (callers pass ``MessageBase.to_dict()``); False if offline."""
        conn = self._transport()
        if hasattr(message, "to_dict") and not isinstance(message, dict):
            message = message.to_dict()
        return await conn.send(message)

    async def send_custom_message(self, message_type_name: str, message: Dict[str, Any]) -> bool:
        conn = self._transport()
        frame = build_custom_message(self.platform, message_type_name, message)
        return await conn.send(frame)

    def is_connected(self) -> bool:
        conn = getattr(self, "connection", None)
        return bool(self._connection_configured and conn is not None and conn.is_connected())

    async def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Wait until connected (not in 0.6.8); False on timeout."""
        return await self._transport().wait_connected(timeout)
