"""API-Server data classes (0.6.8 ``maim_message.api_message_base``, ``maim_message.message``).

Strict where 0.6.8 is strict: required fields are required constructor arguments and
``from_dict`` raises ``ValueError`` (0.6.8's messages) when they are missing or null.
``to_dict`` never emits ``None``. Values are neither type-checked nor coerced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Type, TypeVar

from ._shared import FormatInfoRules, TemplateInfoRules, seg_from_dict, seg_to_dict

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


@dataclass
class Seg:
    """A message segment; ``data`` is a list of ``Seg`` only when ``type == "seglist"``."""

    type: str
    data: Any

    to_dict = seg_to_dict

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Seg:
        return seg_from_dict(cls, Seg, data)


@dataclass
class GroupInfo:
    """A chat group; ``platform`` and ``group_id`` are required."""

    platform: str
    group_id: str
    group_name: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        r: Dict[str, Any] = {"platform": self.platform, "group_id": self.group_id}
        if self.group_name is not None:
            r["group_name"] = self.group_name
        return r

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> GroupInfo:
        platform = data.get("platform")
        group_id = data.get("group_id")
        if group_id is None or platform is None:
            raise ValueError("GroupInfo requires platform and group_id")
        return cls(platform, group_id, data.get("group_name"))


@dataclass
class UserInfo:
    """A chat user; ``platform`` and ``user_id`` are required."""

    platform: str
    user_id: str
    user_nickname: Optional[str] = None
    user_cardname: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        r: Dict[str, Any] = {"platform": self.platform, "user_id": self.user_id}
        if self.user_nickname is not None:
            r["user_nickname"] = self.user_nickname
        if self.user_cardname is not None:
            r["user_cardname"] = self.user_cardname
        return r

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> UserInfo:
        platform = data.get("platform")
        user_id = data.get("user_id")
        if user_id is None or platform is None:
            raise ValueError("UserInfo requires platform and user_id")
        return cls(platform, user_id, data.get("user_nickname"), data.get("user_cardname"))


_I = TypeVar("_I", bound="InfoBase")


@dataclass
class InfoBase:
    """Who sends / receives: an optional group and an optional user."""

    group_info: Optional[GroupInfo] = None
    user_info: Optional[UserInfo] = None

    def to_dict(self) -> Dict[str, Any]:
        r: Dict[str, Any] = {}
        if self.group_info is not None:
            r["group_info"] = self.group_info.to_dict()
        if self.user_info is not None:
            r["user_info"] = self.user_info.to_dict()
        return r

    @classmethod
    def from_dict(cls: Type[_I], data: Dict[str, Any]) -> _I:
        g = data.get("group_info")
        u = data.get("user_info")
        return cls(
            None if g is None else GroupInfo.from_dict(g),
            None if u is None else UserInfo.from_dict(u),
        )


@dataclass
class SenderInfo(InfoBase):
    """The sender of a message."""


@dataclass
class ReceiverInfo(InfoBase):
    """The receiver of a message."""


@dataclass
class FormatInfo(FormatInfoRules):
    """Segment types a message contains / its sender accepts."""


@dataclass
class TemplateInfo(TemplateInfoRules):
    """Prompt template selection (MaiBot); ``template_default`` defaults to True."""


@dataclass
class MessageDim:
    """Routing dimension: the API key and platform a message is addressed to / came from."""

    api_key: str
    platform: str

    def to_dict(self) -> Dict[str, Any]:
        return {"api_key": self.api_key, "platform": self.platform}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> MessageDim:
        # ``in`` then ``[]`` (not ``.get``) so non-dict input fails exactly as in 0.6.8
        if "api_key" not in data or data["api_key"] is None:
            raise ValueError("MessageDim requires api_key")
        if "platform" not in data or data["platform"] is None:
            raise ValueError("MessageDim requires platform")
        return cls(data["api_key"], data["platform"])


# nested values that BaseMessageInfo.to_dict serialises with their own to_dict(); anything
# else (additional_config, foreign objects) is emitted as is, like 0.6.8. InfoBase is
# included so a plain InfoBase used as sender/receiver serialises instead of leaking an
# object that JSON cannot encode.
_NESTED = (FormatInfo, TemplateInfo, InfoBase)


@dataclass
class BaseMessageInfo:
    """Message metadata; sender and receiver live in ``sender_info`` / ``receiver_info``."""

    platform: str
    message_id: str
    time: float
    format_info: Optional[FormatInfo] = None
    template_info: Optional[TemplateInfo] = None
    additional_config: Optional[Dict[str, Any]] = None
    sender_info: Optional[SenderInfo] = None
    receiver_info: Optional[ReceiverInfo] = None

    def to_dict(self) -> Dict[str, Any]:
        r: Dict[str, Any] = {
            "platform": self.platform,
            "message_id": self.message_id,
            "time": self.time,
        }
        v: Any = self.format_info
        if v is not None:
            r["format_info"] = v.to_dict() if isinstance(v, _NESTED) else v
        v = self.template_info
        if v is not None:
            r["template_info"] = v.to_dict() if isinstance(v, _NESTED) else v
        v = self.additional_config
        if v is not None:
            r["additional_config"] = v.to_dict() if isinstance(v, _NESTED) else v
        v = self.sender_info
        if v is not None:
            r["sender_info"] = v.to_dict() if isinstance(v, _NESTED) else v
        v = self.receiver_info
        if v is not None:
            r["receiver_info"] = v.to_dict() if isinstance(v, _NESTED) else v
        return r

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> BaseMessageInfo:
        # ``in`` then ``[]`` (not ``.get``) so non-dict input fails exactly as in 0.6.8
        if "platform" not in data or data["platform"] is None:
            raise ValueError("BaseMessageInfo requires platform")
        if "message_id" not in data or data["message_id"] is None:
            raise ValueError("BaseMessageInfo requires message_id")
        if "time" not in data or data["time"] is None:
            raise ValueError("BaseMessageInfo requires time")
        f = data.get("format_info")
        t = data.get("template_info")
        s = data.get("sender_info")
        rc = data.get("receiver_info")
        return cls(
            data["platform"],
            data["message_id"],
            data["time"],
            None if f is None else FormatInfo.from_dict(f),
            None if t is None else TemplateInfo.from_dict(t),
            data.get("additional_config"),
            None if s is None else SenderInfo.from_dict(s),
            None if rc is None else ReceiverInfo.from_dict(rc),
        )


@dataclass
class APIMessageBase:
    """An API-Server message: metadata, one root segment and its routing dimension."""

    message_info: BaseMessageInfo
    message_segment: Seg
    message_dim: MessageDim

    def to_dict(self) -> Dict[str, Any]:
        return {
            "message_info": self.message_info.to_dict(),
            "message_segment": self.message_segment.to_dict(),
            "message_dim": self.message_dim.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> APIMessageBase:
        """All three keys must be present (``ValueError`` otherwise); then each is parsed."""
        if "message_info" not in data:
            raise ValueError("APIMessageBase requires message_info")
        if "message_segment" not in data:
            raise ValueError("APIMessageBase requires message_segment")
        if "message_dim" not in data:
            raise ValueError("APIMessageBase requires message_dim")
        return cls(
            BaseMessageInfo.from_dict(data["message_info"]),
            Seg.from_dict(data["message_segment"]),
            MessageDim.from_dict(data["message_dim"]),
        )

    def get_api_key(self) -> str:
        return self.message_dim.api_key

    def get_platform(self) -> str:
        return self.message_dim.platform

    def get_message_platform(self) -> str:
        return self.message_info.platform

    def get_message_id(self) -> str:
        return self.message_info.message_id

    def get_message_time(self) -> float:
        return self.message_info.time

    def set_message_dim(self, api_key: str, platform: str) -> None:
        """Re-address the message in place (the existing ``MessageDim`` is mutated)."""
        self.message_dim.api_key = api_key
        self.message_dim.platform = platform

    def has_sender_info(self) -> bool:
        return self.message_info.sender_info is not None

    def has_receiver_info(self) -> bool:
        return self.message_info.receiver_info is not None
