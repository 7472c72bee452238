"""API-Server data classes (the ``maim_message.message`` module of 0.6.8)."""

from __future__ import annotations

from ..core.models.api import (
    APIMessageBase,
    BaseMessageInfo,
    FormatInfo,
    GroupInfo,
    InfoBase,
    MessageDim,
    ReceiverInfo,
    Seg,
    SenderInfo,
    TemplateInfo,
    UserInfo,
)

__all__ = [
    "APIMessageBase",
    "BaseMessageInfo",
    "FormatInfo",
    "GroupInfo",
    "InfoBase",
    "MessageDim",
    "ReceiverInfo",
    "Seg",
    "SenderInfo",
    "TemplateInfo",
    "UserInfo",
]
