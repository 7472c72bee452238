"""Factories for client configs (the spec imports them from here in its quick start)."""

from .client.config import create_client_config, create_ssl_client_config

__all__ = ["create_client_config", "create_ssl_client_config"]
