"""0.6.8 module path ``maim_message.ws_config``: every configuration class and factory.

``config_manager`` is a module-level :class:`ConfigManager`; ``get_config_manager()``
returns it. ``ServerConfig`` and ``ClientConfig`` are registered as (virtual) subclasses
of :class:`ConfigValidator`, as they are real subclasses in 0.6.8.
"""

from __future__ import annotations

from .client.config import ClientConfig, create_client_config, create_ssl_client_config
from .client.multi_config import (
    ConfigValidator,
    ConnectionEntry,
    MultiClientConfig,
    create_multi_client_config,
    create_multi_client_config_with_connections,
)
from .server.config import (
    AuthResult,
    ConfigManager,
    ServerConfig,
    create_server_config,
    create_ssl_server_config,
)

ConfigValidator.register(ServerConfig)
ConfigValidator.register(ClientConfig)

config_manager = ConfigManager()


def get_config_manager() -> ConfigManager:
    """The module-level :class:`ConfigManager` instance."""
    return config_manager


__all__ = [
    "AuthResult",
    "ClientConfig",
    "ConfigManager",
    "ConfigValidator",
    "ConnectionEntry",
    "MultiClientConfig",
    "ServerConfig",
    "config_manager",
    "create_client_config",
    "create_multi_client_config",
    "create_multi_client_config_with_connections",
    "create_server_config",
    "create_ssl_client_config",
    "create_ssl_server_config",
    "get_config_manager",
]
