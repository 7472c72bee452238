"""0.6.8 module path ``maim_message.router``."""

from __future__ import annotations

from .legacy.router import RouteConfig, Router, TargetConfig

__all__ = ["RouteConfig", "Router", "TargetConfig"]
