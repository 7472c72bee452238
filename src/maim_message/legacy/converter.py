"""``MessageConverter``: legacy ``MessageBase`` <-> API-Server ``APIMessageBase`` (wire §2.6).

Pure object conversion, no I/O. "receive" = a message from an external user (its
group/user go to / come from ``sender_info``); "send" = the bot replying (``receiver_info``).
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any, Dict, Optional, Tuple

from ..core.models import api as A
from ..core.models import legacy as L

__all__ = ["MessageConverter"]


def _pick(info: L.BaseMessageInfo) -> Tuple[Optional[L.GroupInfo], Optional[L.UserInfo]]:
    """Group and user: top-level field, else sender_info's, else receiver_info's."""
    group = info.group_info or None
    user = info.user_info or None
    for side in (info.sender_info, info.receiver_info):
        if side:
            if not group and side.group_info:
                group = side.group_info
            if not user and side.user_info:
                user = side.user_info
    return group, user


def _legacy_group(g: Optional[A.GroupInfo]) -> Optional[L.GroupInfo]:
    if not g:
        return None
    return L.GroupInfo(platform=g.platform, group_id=g.group_id, group_name=g.group_name)


def _legacy_user(u: Optional[A.UserInfo]) -> Optional[L.UserInfo]:
    if not u:
        return None
    return L.UserInfo(platform=u.platform, user_id=u.user_id, user_nickname=u.user_nickname,
                      user_cardname=u.user_cardname)


def _format_and_template(info: Any, family: ModuleType) -> Dict[str, Any]:
    """``format_info`` / ``template_info`` of ``info`` rebuilt in the other model family."""
    fmt, tpl = info.format_info, info.template_info
    return {
        "format_info": family.FormatInfo(content_format=fmt.content_format,
                                         accept_format=fmt.accept_format) if fmt else None,
        "template_info": family.TemplateInfo(
            template_items=tpl.template_items, template_name=tpl.template_name,
            template_default=tpl.template_default,
        ) if tpl else None,
    }


class MessageConverter:
    """Static conversions; use the scenario methods (``*_receive`` / ``*_send``)."""

    @staticmethod
    def to_api_receive(message: L.MessageBase, api_key: str,
                       platform: Optional[str] = None) -> A.APIMessageBase:
        """Legacy -> API for an incoming message: group/user into ``sender_info``."""
        return MessageConverter._to_api(message, api_key, platform, is_sender=True)

    @staticmethod
    def to_api_send(message: L.MessageBase, api_key: str,
                    platform: Optional[str] = None) -> A.APIMessageBase:
        """Legacy -> API for a bot reply: group/user into ``receiver_info``."""
        return MessageConverter._to_api(message, api_key, platform, is_sender=False)

    @staticmethod
    def from_api_receive(api_message: A.APIMessageBase) -> L.MessageBase:
        """API -> legacy; top-level group/user taken from ``sender_info``."""
        return MessageConverter._from_api(api_message, "sender")

    @staticmethod
    def from_api_send(api_message: A.APIMessageBase) -> L.MessageBase:
        """API -> legacy; top-level group/user taken from ``receiver_info``."""
        return MessageConverter._from_api(api_message, "receiver")

    # -- implementation ----------------------------------------------------------------
    @staticmethod
    def _to_api(message: L.MessageBase, api_key: str, platform: Optional[str],
                is_sender: bool) -> A.APIMessageBase:
        info = message.message_info
        seg = message.message_segment
        target = platform or info.platform or "unknown"
        group, user = _pick(info)
        api_group = (
            A.GroupInfo(
                platform=group.platform or target,
                group_id=str(group.group_id) if group.group_id else "",
                group_name=group.group_name,
            )
            if group
            else None
        )
        api_user = (
            A.UserInfo(
                platform=user.platform or target,
                user_id=str(user.user_id) if user.user_id else "",
                user_nickname=user.user_nickname,
                user_cardname=user.user_cardname,
            )
            if user
            else None
        )
        sender = receiver = None
        if api_group or api_user:
            if is_sender:
                sender = A.SenderInfo(group_info=api_group, user_info=api_user)
            else:
                receiver = A.ReceiverInfo(group_info=api_group, user_info=api_user)
        api_info = A.BaseMessageInfo(
            platform=target,
            message_id=str(info.message_id) if info.message_id else str(int(time.time() * 1000)),
            time=info.time or time.time(),
            **_format_and_template(info, A),
            additional_config=info.additional_config,
            sender_info=sender,
            receiver_info=receiver,
        )
        return A.APIMessageBase(
            message_info=api_info,
            message_segment=A.Seg(type=seg.type, data=seg.data),
            message_dim=A.MessageDim(api_key=api_key, platform=target),
        )

    @staticmethod
    def _from_api(api_message: A.APIMessageBase, source: str) -> L.MessageBase:
        info = api_message.message_info
        seg = api_message.message_segment
        side: Any = info.sender_info if source == "sender" else info.receiver_info
        group = side.group_info if side else None
        user = side.user_info if side else None
        si, ri = info.sender_info, info.receiver_info
        legacy_info = L.BaseMessageInfo(
            platform=info.platform,
            message_id=info.message_id,
            time=info.time,
            group_info=_legacy_group(group),
            user_info=_legacy_user(user),
            **_format_and_template(info, L),
            additional_config=info.additional_config,
            sender_info=L.SenderInfo(group_info=_legacy_group(si.group_info),
                                     user_info=_legacy_user(si.user_info)) if si else None,
            receiver_info=L.ReceiverInfo(group_info=_legacy_group(ri.group_info),
                                         user_info=_legacy_user(ri.user_info)) if ri else None,
        )
        return L.MessageBase(
            message_info=legacy_info,
            message_segment=L.Seg(type=seg.type, data=seg.data),
            raw_message=None,
        )
