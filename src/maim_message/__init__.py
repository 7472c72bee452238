"""maim_message: a WebSocket message hub for chat bots.

The root module exports the legacy API of maim-message 0.6.8 (``MessageServer``,
``MessageClient``, ``Router``, the legacy data classes, ``MessageConverter``). The
API-Server version lives in submodules: ``.message``, ``.server``, ``.client``,
``.client_factory``. Names are resolved lazily so that importing a submodule does not
load the legacy stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.7.6"

# name -> relative module that defines it
_LEGACY_EXPORTS = {
    "MessageClient": ".legacy.ws_client",
    "MessageServer": ".legacy.server",
    "Router": ".legacy.router",
    "RouteConfig": ".legacy.router",
    "TargetConfig": ".legacy.router",
    "MessageBase": ".core.models.legacy",
    "Seg": ".core.models.legacy",
    "GroupInfo": ".core.models.legacy",
    "UserInfo": ".core.models.legacy",
    "FormatInfo": ".core.models.legacy",
    "TemplateInfo": ".core.models.legacy",
    "BaseMessageInfo": ".core.models.legacy",
    "InfoBase": ".core.models.legacy",
    "SenderInfo": ".core.models.legacy",
    "ReceiverInfo": ".core.models.legacy",
    "MessageConverter": ".legacy.converter",
}

# API-Server names that users sometimes try to import from the root: say where they live.
_API_SERVER_HOMES = {
    "APIMessageBase": "message",
    "MessageDim": "message",
    "WebSocketServer": "server",
    "ServerConfig": "server",
    "AuthResult": "server",
    "ConfigManager": "server",
    "create_server_config": "server",
    "create_ssl_server_config": "server",
    "WebSocketClient": "client",
    "WebSocketMultiClient": "client",
    "ClientConfig": "client",
    "create_client_config": "client",
    "create_ssl_client_config": "client",
}

__all__ = [*_LEGACY_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module_name = _LEGACY_EXPORTS.get(name)
    if module_name is not None:
        value = getattr(importlib.import_module(module_name, __name__), name)
        globals()[name] = value
        return value
    home = _API_SERVER_HOMES.get(name)
    if home is not None:
        raise ImportError(
            f"cannot import name {name!r} from {__name__!r}: the root module exports only the "
            f"legacy API; import it from the submodule instead: "
            f"'from {__name__}.{home} import {name}'",
            name=__name__,
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LEGACY_EXPORTS])


if TYPE_CHECKING:  # pragma: no cover - static names for type checkers
    # ruff: noqa: F401
    from .core.models.legacy import (
        BaseMessageInfo,
        FormatInfo,
        GroupInfo,
        InfoBase,
        MessageBase,
        ReceiverInfo,
        Seg,
        SenderInfo,
        TemplateInfo,
        UserInfo,
    )
    from .legacy.converter import MessageConverter
    from .legacy.router import RouteConfig, Router, TargetConfig
    from .legacy.server import MessageServer
    from .legacy.ws_client import MessageClient
