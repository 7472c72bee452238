"""0.6.8 module path ``maim_message.api_message_base``: the API-Server data classes."""

from __future__ import annotations

from .core.models.api import (
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
