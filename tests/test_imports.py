"""Module paths and names of 0.6.8 (api-surface §1, §2) and the troubleshooting promise."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PACKAGE_DIR, vendor_package

EXPORTS = {
    "maim_message.ws_config": [
        "ServerConfig", "ClientConfig", "AuthResult", "ConfigManager", "config_manager",
        "get_config_manager", "create_server_config", "create_client_config",
        "create_ssl_server_config", "create_ssl_client_config", "ConnectionEntry",
        "MultiClientConfig", "create_multi_client_config",
        "create_multi_client_config_with_connections", "ConfigValidator",
    ],
    "maim_message.websocket": [
        "WebSocketServer", "ServerNetworkDriver", "WebSocketClient", "ClientNetworkDriver",
        "APIMessageBase", "MessageDim", "Seg", "BaseMessageInfo", "GroupInfo", "UserInfo",
        "InfoBase", "SenderInfo", "ReceiverInfo", "FormatInfo", "TemplateInfo", "ServerConfig",
        "ClientConfig", "AuthResult", "ConfigManager", "create_server_config",
        "create_client_config",
    ],
    "maim_message.client": [
        "WebSocketClient", "WebSocketMultiClient", "ClientConfig", "create_client_config",
        "create_ssl_client_config", "APIMessageBase", "MessageDim", "Seg", "BaseMessageInfo",
        "create_client", "create_multi_client",
    ],
    "maim_message.server": [
        "WebSocketServer", "ServerConfig", "AuthResult", "ConfigManager", "create_server_config",
        "create_ssl_server_config", "APIMessageBase", "WebSocketASGI",
    ],
    "maim_message.client_factory": [
        "create_client_config", "create_ssl_client_config", "create_client",
        "create_multi_client",
    ],
    "maim_message.client_ws_api": ["WebSocketClient"],
    "maim_message.server_ws_api": ["WebSocketServer"],
    "maim_message.multi_client": ["WebSocketMultiClient", "MultiClientConfig"],
}


@pytest.mark.parametrize("module", sorted(EXPORTS))
def test_module_paths_export_their_names(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [name for name in EXPORTS[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lacks {missing}"


def test_same_objects_behind_every_path() -> None:
    from maim_message import (
        client,
        client_ws_api,
        multi_client,
        server,
        server_ws_api,
        websocket,
        ws_config,
    )

    assert client_ws_api.WebSocketClient is client.WebSocketClient is websocket.WebSocketClient
    assert server_ws_api.WebSocketServer is server.WebSocketServer is websocket.WebSocketServer
    assert multi_client.WebSocketMultiClient is client.WebSocketMultiClient
    assert ws_config.ServerConfig is server.ServerConfig
    assert ws_config.ClientConfig is client.ClientConfig


def test_ws_config_manager_and_validator() -> None:
    from maim_message import ws_config

    assert isinstance(ws_config.config_manager, ws_config.ConfigManager)
    assert ws_config.get_config_manager() is ws_config.config_manager
    with pytest.raises(TypeError):
        ws_config.ConfigValidator()  # type: ignore[abstract]
    for config in (ws_config.ServerConfig(), ws_config.ClientConfig("ws://h/ws", "k"),
                   ws_config.MultiClientConfig()):
        assert isinstance(config, ws_config.ConfigValidator)
        assert config.validate() is True
    manager = ws_config.ConfigManager()
    manager.set_client_config(ws_config.create_client_config("wss://h/ws", "k"))
    client_config = manager.get_client_config()
    assert client_config is not None and client_config.ssl_enabled is True
    with pytest.raises(ValueError):
        manager.set_client_config(ws_config.ClientConfig("http://h", "k"))


def test_root_import_error_names_the_submodule() -> None:
    with pytest.raises(ImportError) as info:
        from maim_message import APIMessageBase  # noqa: F401
    assert "from maim_message.message import APIMessageBase" in str(info.value)
    with pytest.raises(ImportError, match=r"from maim_message\.client import WebSocketMultiClient"):
        from maim_message import WebSocketMultiClient  # noqa: F401


def test_root_import_error_from_the_vendored_path(tmp_path: Path) -> None:
    vendor_package(tmp_path)
    code = (
        "import sys\n"
        "try:\n"
        "    from astrbot.core.maibot.maim_message import APIMessageBase\n"
        "except ImportError as e:\n"
        "    print('ERR', e)\n"
        "from astrbot.core.maibot.maim_message.message import APIMessageBase\n"
        "from astrbot.core.maibot.maim_message.client import WebSocketMultiClient\n"
        "from astrbot.core.maibot.maim_message.ws_config import MultiClientConfig\n"
        "from astrbot.core.maibot.maim_message.server import WebSocketASGI\n"
        "import astrbot.core.maibot.maim_message.websocket\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'maim_message'], 'leak'\n"
        "print('OK')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert ("ERR cannot import name 'APIMessageBase'" in out.stdout
            and "from astrbot.core.maibot.maim_message.message import APIMessageBase"
            in out.stdout)
    assert out.stdout.rstrip().endswith("OK")


OWN_FILES = [
    "client/multi_client.py", "client/multi_config.py", "client/factories.py",
    "ws_config.py", "client_ws_api.py", "server_ws_api.py", "multi_client.py",
    "websocket/__init__.py", "server/asgi.py", "transport/asgi.py",
]


@pytest.mark.parametrize("path", OWN_FILES)
def test_relative_imports_no_print(path: str) -> None:
    text = (PACKAGE_DIR / path).read_text(encoding="utf-8")
    assert not re.search(r"^\s*(from|import) maim_message\b", text, re.M)
    assert not re.search(r"^\s*print\(", text, re.M)
