"""``MessageServer``: the legacy hub endpoint (wire §2.1, §2.4; api-surface §10.1).

``mode="ws"`` serves the legacy WebSocket app (``ws_app``) on the project's own asyncio
transport (no FastAPI/uvicorn), or, with ``app=<FastAPI/Starlette app>``, adds its route to
that application and lets the host serve it through the ASGI shell. ``mode="tcp"`` serves
the encrypted TCP protocol. All three route by platform through ``platforms``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Dict, List, Optional, Union

from ..runtime.callbacks import call_maybe_async
from .dispatch import HandlerRegistry, build_custom_message
from .platforms import TokenAuth
from .tcp_server import TcpServerTransport
from .ws_server import LegacyWebSocketServer, MountedLegacyServer

__all__ = ["MessageServer"]

SendHandler = Callable[[Any], Any]


class MessageServer(HandlerRegistry):
    """Legacy server. Constructor arguments and defaults are those of 0.6.8."""

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 18000,
        enable_token: bool = False,
        app: Optional[Any] = None,
        path: str = "/ws",
        ssl_certfile: Optional[str] = None,
        ssl_keyfile: Optional[str] = None,
        mode: str = "ws",
        custom_logger: Optional[logging.Logger] = None,
        enable_custom_uvicorn_logger: Optional[bool] = False,
    ) -> None:
        super().__init__(custom_logger, __name__)
        if mode not in ("ws", "tcp"):
            raise ValueError(f"mode must be 'ws' or 'tcp', not {mode!r}")
        self.host = host
        self.port = port
        self.mode = mode
        self.path = path
        self.app = app
        self.enable_custom_uvicorn_logger = enable_custom_uvicorn_logger  # no uvicorn: unused
        self._auth = TokenAuth(enable_token)
        self._running = False
        self._stopped: Optional[asyncio.Event] = None
        self.send_message_handlers: List[SendHandler] = []
        self.connection: Union[LegacyWebSocketServer, MountedLegacyServer, TcpServerTransport]
        if mode == "tcp":
            self.connection = TcpServerTransport(self._deliver, self._auth, self._log,
                                                 host=host, port=port)
        elif app is not None:
            self.connection = MountedLegacyServer(
                self._deliver, self._auth, self._log, app=app, path=path, host=host, port=port
            )
        else:
            self.connection = LegacyWebSocketServer(
                self._deliver, self._auth, self._log, host=host, port=port, path=path,
                ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
            )

    # -- tokens ------------------------------------------------------------------------
    @property
    def enable_token(self) -> bool:
        return self._auth.enabled

    async def verify_token(self, token: str) -> bool:
        """True when ``token`` is accepted (always True with token auth off)."""
        return self._auth.verify(token)

    def add_valid_token(self, token: str) -> None:
        self._auth.add(token)

    def remove_valid_token(self, token: str) -> None:
        self._auth.remove(token)

    # -- AstrBot extension ---------------------------------------------------------------
    def register_send_message_handler(self, handler: SendHandler) -> None:
        """``handler(message) -> bool`` (sync or async) runs before ``send_message``; when
        one returns True the message counts as sent and is not written to the socket."""
        if handler not in self.send_message_handlers:
            self.send_message_handlers.append(handler)

    async def _intercepted(self, message: Any) -> bool:
        for handler in tuple(self.send_message_handlers):
            try:
                result = await call_maybe_async(handler, message)
            except Exception:
                self._log.exception("send message handler %r raised", handler)
                continue
            if result is True:
                return True
        return False

    # -- sending -----------------------------------------------------------------------
    async def send_message(self, message: Any) -> bool:
        """Send a ``MessageBase`` to the connection of ``message.message_info.platform``."""
        if self.send_message_handlers and await self._intercepted(message):
            return True
        if isinstance(message, dict):
            info = message.get("message_info") or {}
            platform: Any = info.get("platform") if isinstance(info, dict) else None
            payload = message
        else:
            platform = message.message_info.platform
            payload = message.to_dict()
        return await self.connection.send_message(platform, payload)

    async def send_custom_message(
        self, platform: str, message_type_name: str, message: Dict[str, Any]
    ) -> bool:
        frame = build_custom_message(platform, message_type_name, message)
        return await self.connection.send_message(platform, frame)

    async def broadcast_message(self, message: Dict[str, Any]) -> None:
        """Send to every connection (``unknown`` platforms included)."""
        await self.connection.broadcast_message(message)

    async def broadcast_to_platform(self, platform: str, message: Dict[str, Any]) -> bool:
        """Send a raw dict to the connection of ``platform``."""
        return await self.connection.send_message(platform, message)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Start listening and return (not in 0.6.8); raises ``ServerStartError``
        (a ``RuntimeError``) when the port cannot be bound."""
        await self.connection.start()
        self._running = True

    async def run(self) -> None:
        """Serve until ``stop()``. Mounted on a host app: registers and returns at once."""
        self._stopped = asyncio.Event()
        try:
            await self.start()
        except Exception as exc:
            await self.stop()
            if isinstance(exc, RuntimeError):
                raise
            raise RuntimeError(f"server failed to start: {exc}") from exc
        if self.app is not None and self.mode == "ws":
            return
        stopped = self._stopped
        if stopped is not None and self._running:
            await stopped.wait()

    async def start_server(self) -> None:
        if not self._running:
            await self.run()

    def run_sync(self) -> None:
        """Blocking ``run()`` in a new event loop (ws mode only, as in 0.6.8)."""
        if self.mode != "ws":
            raise RuntimeError("run_sync() is only available in ws mode; use await run()")
        asyncio.run(self.run())

    async def stop(self) -> None:
        """Close connections, stop listening, cancel handler tasks (handlers stay)."""
        self._running = False
        try:
            await self.connection.stop()
        finally:
            await self._cancel_background()
            if self._stopped is not None:
                self._stopped.set()

    @property
    def bound_port(self) -> Optional[int]:
        """Port actually listened on (useful with ``port=0``); None when not listening."""
        return getattr(self.connection, "bound_port", None)

    def connected_platforms(self) -> List[str]:
        return self.connection.connected_platforms()
