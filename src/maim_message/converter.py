"""0.6.8 module path ``maim_message.converter``."""

from __future__ import annotations

from .legacy.converter import MessageConverter

__all__ = ["MessageConverter"]
