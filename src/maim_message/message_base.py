"""0.6.8 module path ``maim_message.message_base``: the legacy data classes."""

from __future__ import annotations

from .core.models.legacy import (
    BaseMessageInfo,
    FormatInfo,
    GroupInfo,
    InfoBase,
    MessageBase,
    ReceiverInfo,
    Seg,
    SenderInfo,
    TemplateInfo,
    UserInfo,
)

__all__ = [
    "BaseMessageInfo",
    "FormatInfo",
    "GroupInfo",
    "InfoBase",
    "MessageBase",
    "ReceiverInfo",
    "Seg",
    "SenderInfo",
    "TemplateInfo",
    "UserInfo",
]
