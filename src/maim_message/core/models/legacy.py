"""Legacy data classes (0.6.8 ``maim_message.message_base``), served from the package root.

Every field is optional and ``from_dict`` never raises for a missing key. Two 0.6.8 quirks
are part of the wire contract and are kept on purpose: ``GroupInfo.from_dict`` returns
``None`` without a ``group_id``, and ``BaseMessageInfo.to_dict`` serialises nested objects in
``dataclasses.asdict`` form (every field present, ``None`` as ``null``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Type, TypeVar

from ._shared import ASDICT, FormatInfoRules, TemplateInfoRules, plain, seg_from_dict, seg_to_dict

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
    """A chat group; serialised without its ``None`` fields."""

    platform: Optional[str] = None
    group_id: Optional[str] = None
    group_name: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        r: Dict[str, Any] = {}
        v = self.platform
        if v is not None:
            r["platform"] = plain(v)
        v = self.group_id
        if v is not None:
            r["group_id"] = plain(v)
        v = self.group_name
        if v is not None:
            r["group_name"] = plain(v)
        return r

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Optional[GroupInfo]:
        """``None`` when ``group_id`` is missing or null (0.6.8 drops such groups)."""
        group_id = data.get("group_id")
        if group_id is None:
            return None
        return cls(data.get("platform"), group_id, data.get("group_name"))


@dataclass
class UserInfo:
    """A chat user; serialised without its ``None`` fields."""

    platform: Optional[str] = None
    user_id: Optional[str] = None
    user_nickname: Optional[str] = None
    user_cardname: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        r: Dict[str, Any] = {}
        v = self.platform
        if v is not None:
            r["platform"] = plain(v)
        v = self.user_id
        if v is not None:
            r["user_id"] = plain(v)
        v = self.user_nickname
        if v is not None:
            r["user_nickname"] = plain(v)
        v = self.user_cardname
        if v is not None:
            r["user_cardname"] = plain(v)
        return r

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> UserInfo:
        return cls(
            data.get("platform"),
            data.get("user_id"),
            data.get("user_nickname"),
            data.get("user_cardname"),
        )


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
        """A missing ``user_info`` key yields an all-``None`` ``UserInfo`` (0.6.8 quirk)."""
        g = data.get("group_info", _EMPTY)
        u = data.get("user_info", _EMPTY)
        return cls(
            None if g is None else GroupInfo.from_dict(g),
            None if u is None else UserInfo.from_dict(u),
        )


_EMPTY: Dict[str, Any] = {}


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
class BaseMessageInfo:
    """Message metadata; nested objects go on the wire in ``asdict`` form (nulls kept)."""

    platform: Optional[str] = None
    message_id: Optional[str] = None
    time: Optional[float] = None
    group_info: Optional[GroupInfo] = None
    user_info: Optional[UserInfo] = None
    format_info: Optional[FormatInfo] = None
    template_info: Optional[TemplateInfo] = None
    additional_config: Optional[Dict[str, Any]] = None
    sender_info: Optional[SenderInfo] = None
    receiver_info: Optional[ReceiverInfo] = None

    def to_dict(self) -> Dict[str, Any]:
        r: Dict[str, Any] = {}
        v: Any = self.platform
        if v is not None:
            r["platform"] = plain(v)
        v = self.message_id
        if v is not None:
            r["message_id"] = plain(v)
        v = self.time
        if v is not None:
            r["time"] = plain(v)
        v = self.group_info
        if v is not None:
            r["group_info"] = plain(v)
        v = self.user_info
        if v is not None:
            r["user_info"] = plain(v)
        v = self.format_info
        if v is not None:
            r["format_info"] = plain(v)
        v = self.template_info
        if v is not None:
            r["template_info"] = plain(v)
        v = self.additional_config
        if v is not None:
            r["additional_config"] = plain(v)
        v = self.sender_info
        if v is not None:
            r["sender_info"] = plain(v)
        v = self.receiver_info
        if v is not None:
            r["receiver_info"] = plain(v)
        return r

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> BaseMessageInfo:
        """Nested infos are parsed only when their value is a dict; never raises."""
        g = data.get("group_info")
        u = data.get("user_info")
        f = data.get("format_info")
        t = data.get("template_info")
        s = data.get("sender_info")
        rc = data.get("receiver_info")
        return cls(
            data.get("platform"),
            data.get("message_id"),
            data.get("time"),
            GroupInfo.from_dict(g) if isinstance(g, dict) else None,
            UserInfo.from_dict(u) if isinstance(u, dict) else None,
            FormatInfo.from_dict(f) if isinstance(f, dict) else None,
            TemplateInfo.from_dict(t) if isinstance(t, dict) else None,
            data.get("additional_config"),
            SenderInfo.from_dict(s) if isinstance(s, dict) else None,
            ReceiverInfo.from_dict(rc) if isinstance(rc, dict) else None,
        )


@dataclass
class MessageBase:
    """A legacy message: metadata, one root segment, and an optional raw text."""

    message_info: BaseMessageInfo
    message_segment: Seg
    raw_message: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        r: Dict[str, Any] = {
            "message_info": self.message_info.to_dict(),
            "message_segment": self.message_segment.to_dict(),
        }
        if self.raw_message is not None:
            r["raw_message"] = self.raw_message
        return r

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> MessageBase:
        """Missing ``message_info`` / ``message_segment`` are read as empty dicts."""
        return cls(
            BaseMessageInfo.from_dict(data.get("message_info", _EMPTY)),
            Seg.from_dict(data.get("message_segment", _EMPTY)),
            data.get("raw_message"),
        )


# --- dataclasses.asdict forms of the classes nested in BaseMessageInfo (hot path) ---------


def _group_asdict(g: GroupInfo) -> Dict[str, Any]:
    return {
        "platform": plain(g.platform),
        "group_id": plain(g.group_id),
        "group_name": plain(g.group_name),
    }


def _user_asdict(u: UserInfo) -> Dict[str, Any]:
    return {
        "platform": plain(u.platform),
        "user_id": plain(u.user_id),
        "user_nickname": plain(u.user_nickname),
        "user_cardname": plain(u.user_cardname),
    }


def _info_asdict(i: InfoBase) -> Dict[str, Any]:
    return {"group_info": plain(i.group_info), "user_info": plain(i.user_info)}


def _format_asdict(f: FormatInfo) -> Dict[str, Any]:
    return {"content_format": plain(f.content_format), "accept_format": plain(f.accept_format)}


def _template_asdict(t: TemplateInfo) -> Dict[str, Any]:
    return {
        "template_items": plain(t.template_items),
        "template_name": plain(t.template_name),
        "template_default": plain(t.template_default),
    }


ASDICT[GroupInfo] = _group_asdict
ASDICT[UserInfo] = _user_asdict
ASDICT[InfoBase] = _info_asdict
ASDICT[SenderInfo] = _info_asdict
ASDICT[ReceiverInfo] = _info_asdict
ASDICT[FormatInfo] = _format_asdict
ASDICT[TemplateInfo] = _template_asdict
