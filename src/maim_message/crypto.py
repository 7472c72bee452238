"""0.6.8 module path ``maim_message.crypto`` (legacy TCP encryption helpers)."""

from __future__ import annotations

from .legacy.crypto import CryptoManager, CryptoSession
from .legacy.tcp_framing import FrameType

__all__ = ["CryptoManager", "CryptoSession", "FrameType"]
