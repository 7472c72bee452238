"""The standalone hub: ``python -m maim_message serve``.

A :class:`~maim_message.server.WebSocketServer` configured from a TOML file / environment /
command line (API keys -> users), with health endpoints, Prometheus metrics and a live page.
``Hub`` and ``serve`` need the ``hub`` extra (prometheus-client); they load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .auth import HubAuth, KeyTable
from .config import HubConfig, HubConfigError, KeyEntry, load_config

if TYPE_CHECKING:
    from .runner import Hub, serve

__all__ = [
    "Hub",
    "HubAuth",
    "HubConfig",
    "HubConfigError",
    "KeyEntry",
    "KeyTable",
    "load_config",
    "serve",
]


def __getattr__(name: str) -> Any:
    if name in ("Hub", "serve"):
        return getattr(importlib.import_module(".runner", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
