"""One pass over a received ``sys_std`` payload: the routing-field checks and the build.

The general path (``check_standard_payload`` then ``APIMessageBase.from_dict``) walks the
payload twice and goes through one ``from_dict`` call per nested class; it runs for every
message a server receives. :func:`message_from_payload` does both in one pass for the
shapes clients send (every part a dict, required fields present, routing fields strings)
and builds the very objects ``from_dict`` would. For anything else it returns ``None``
and the caller takes the general path, which raises the error naming the field: one set
of rules, this module only accepts a subset of what they accept.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .api import (
    APIMessageBase,
    BaseMessageInfo,
    FormatInfo,
    GroupInfo,
    MessageDim,
    ReceiverInfo,
    Seg,
    SenderInfo,
    TemplateInfo,
    UserInfo,
)

__all__ = ["message_from_payload"]

# Objects are made with ``object.__new__`` and their fields set in declaration order,
# which is what the dataclasses' generated ``__init__`` does (they have no
# ``__post_init__``), without its call: a third less per object, seven objects a message.
# tests/test_api_fast.py compares every field with ``from_dict``'s objects.
_new = object.__new__


def message_from_payload(payload: Dict[str, Any]) -> Optional[APIMessageBase]:
    """The message of a ``sys_std`` payload whose shape is the common one, else ``None``.

    When it returns a message, ``check_standard_payload(payload)`` passes and
    ``APIMessageBase.from_dict(payload)`` returns an equal object (same classes, same
    field values, the same value objects). ``None`` says nothing about validity.
    """
    info = payload.get("message_info")
    seg = payload.get("message_segment")
    dim = payload.get("message_dim")
    if type(info) is not dict or type(seg) is not dict or type(dim) is not dict:
        return None
    api_key = dim.get("api_key")
    dim_platform = dim.get("platform")
    seg_type = seg.get("type")
    platform = info.get("platform")
    message_id = info.get("message_id")
    stamp = info.get("time")
    if (type(api_key) is not str or type(dim_platform) is not str
            or type(seg_type) is not str or type(platform) is not str
            or message_id is None or stamp is None):
        return None
    if seg_type == "seglist":
        try:
            segment = Seg.from_dict(seg)
        except Exception:  # the general path raises it again, as its own error
            return None
    else:
        segment = _new(Seg)
        segment.type = seg_type
        segment.data = seg.get("data")
    sender: Optional[SenderInfo] = None
    value = info.get("sender_info")
    if value is not None:
        sender = _info(SenderInfo, value)
        if sender is None:
            return None
    receiver: Optional[ReceiverInfo] = None
    value = info.get("receiver_info")
    if value is not None:
        receiver = _info(ReceiverInfo, value)
        if receiver is None:
            return None
    format_info: Optional[FormatInfo] = None
    value = info.get("format_info")
    if value is not None:
        if type(value) is not dict:
            return None
        format_info = FormatInfo(value.get("content_format"), value.get("accept_format"))
    template_info: Optional[TemplateInfo] = None
    value = info.get("template_info")
    if value is not None:
        if type(value) is not dict:
            return None
        template_info = TemplateInfo(value.get("template_items"), value.get("template_name"),
                                     value.get("template_default", True))
    message_info = _new(BaseMessageInfo)
    message_info.platform = platform
    message_info.message_id = message_id
    message_info.time = stamp
    message_info.format_info = format_info
    message_info.template_info = template_info
    message_info.additional_config = info.get("additional_config")
    message_info.sender_info = sender
    message_info.receiver_info = receiver
    message_dim = _new(MessageDim)
    message_dim.api_key = api_key
    message_dim.platform = dim_platform
    message = _new(APIMessageBase)
    message.message_info = message_info
    message.message_segment = segment
    message.message_dim = message_dim
    return message


def _info(cls: Any, data: Any) -> Any:
    """``cls.from_dict(data)`` (SenderInfo / ReceiverInfo) for a well-formed ``data``,
    else ``None``."""
    if type(data) is not dict:
        return None
    group = data.get("group_info")
    user = data.get("user_info")
    if group is not None:
        if type(group) is not dict:
            return None
        group_platform = group.get("platform")
        group_id = group.get("group_id")
        if group_platform is None or group_id is None:
            return None
        group_info = _new(GroupInfo)
        group_info.platform = group_platform
        group_info.group_id = group_id
        group_info.group_name = group.get("group_name")
        group = group_info
    if user is not None:
        if type(user) is not dict:
            return None
        user_platform = user.get("platform")
        user_id = user.get("user_id")
        if user_platform is None or user_id is None:
            return None
        user_info = _new(UserInfo)
        user_info.platform = user_platform
        user_info.user_id = user_id
        user_info.user_nickname = user.get("user_nickname")
        user_info.user_cardname = user.get("user_cardname")
        user = user_info
    result = _new(cls)
    result.group_info = group
    result.user_info = user
    return result
