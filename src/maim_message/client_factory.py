"""Factories for client configs (the spec imports them from here in its quick start)."""

from .client.config import create_client_config, create_ssl_client_config
from .client.factories import create_client, create_multi_client

__all__ = [
    "create_client",
    "create_client_config",
    "create_multi_client",
    "create_ssl_client_config",
]
