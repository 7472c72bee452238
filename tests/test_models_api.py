"""API-Server data classes: exact wire dicts, strict from_dict, round trips."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maim_message import message as message_module
from maim_message.api_message_base import APIMessageBase as ModuleAPIMessageBase
from maim_message.core.models import legacy
from maim_message.message import (
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

# --------------------------------------------------------------------------- strategies

text = st.text(max_size=12)
ident = st.one_of(text, st.integers(-(2**40), 2**40))  # values are not coerced
opt_text = st.none() | text
json_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | text
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_value = st.recursive(
    json_scalar,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(text, c, max_size=3),
    max_leaves=8,
)
json_object = st.dictionaries(text, json_value, max_size=4)

leaf_seg_types = st.sampled_from(["text", "image", "emoji", "at", "reply", "file", "forward"])
segs = st.recursive(
    st.builds(Seg, leaf_seg_types | text.filter(lambda t: t != "seglist"), json_value),
    lambda c: st.builds(Seg, st.just("seglist"), st.lists(c, max_size=4)),
    max_leaves=12,
)
groups = st.builds(GroupInfo, ident, ident, opt_text)
users = st.builds(UserInfo, ident, ident, opt_text, opt_text)
senders = st.builds(SenderInfo, st.none() | groups, st.none() | users)
receivers = st.builds(ReceiverInfo, st.none() | groups, st.none() | users)
formats = st.builds(
    FormatInfo, st.none() | st.lists(text, max_size=4), st.none() | st.lists(text, max_size=4)
)
templates = st.builds(
    TemplateInfo,
    st.none() | st.dictionaries(text, text, max_size=3),
    st.none() | st.dictionaries(text, text, max_size=3),
    st.booleans(),
)
times = st.floats(allow_nan=False, allow_infinity=False) | st.integers(0, 2**40)
infos = st.builds(
    BaseMessageInfo,
    ident,
    ident,
    times,
    st.none() | formats,
    st.none() | templates,
    st.none() | json_object,
    st.none() | senders,
    st.none() | receivers,
)
dims = st.builds(MessageDim, text, text)
messages = st.builds(APIMessageBase, infos, segs, dims)


# --------------------------------------------------------------------------- round trips


@settings(max_examples=300, deadline=None)
@given(messages)
def test_message_round_trip(msg: APIMessageBase) -> None:
    d = msg.to_dict()
    assert APIMessageBase.from_dict(d) == msg
    # the dict is plain JSON: it survives an encode/decode unchanged
    assert APIMessageBase.from_dict(json.loads(json.dumps(d))) == msg


@settings(max_examples=150, deadline=None)
@given(st.one_of(segs, groups, users, senders, receivers, formats, templates, dims, infos))
def test_part_round_trip(obj: Any) -> None:
    assert type(obj).from_dict(obj.to_dict()) == obj


@settings(max_examples=100, deadline=None)
@given(st.one_of(groups, users, senders, receivers, formats, templates, dims))
def test_none_never_emitted(obj: Any) -> None:
    def walk(v: Any) -> None:
        assert v is not None
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(obj.to_dict())


@settings(max_examples=100, deadline=None)
@given(segs)
def test_seg_nesting_round_trip(seg: Seg) -> None:
    d = seg.to_dict()
    back = Seg.from_dict(d)
    assert back == seg
    if seg.type == "seglist":
        assert all(type(s) is Seg for s in back.data)


# --------------------------------------------------------------------------- exact dicts


def test_spec_example_minimal() -> None:
    msg = APIMessageBase(
        BaseMessageInfo(
            "qq",
            "1",
            1.0,
            template_info=TemplateInfo(),
            format_info=FormatInfo(),
            sender_info=SenderInfo(),
            additional_config={},
        ),
        Seg("seglist", [Seg("text", "a")]),
        MessageDim("k", "qq"),
    )
    d = msg.to_dict()
    assert d == {
        "message_info": {
            "platform": "qq",
            "message_id": "1",
            "time": 1.0,
            "format_info": {},
            "template_info": {"template_default": True},
            "additional_config": {},
            "sender_info": {},
        },
        "message_segment": {"type": "seglist", "data": [{"type": "text", "data": "a"}]},
        "message_dim": {"api_key": "k", "platform": "qq"},
    }
    assert list(d) == ["message_info", "message_segment", "message_dim"]
    assert list(d["message_info"]) == [
        "platform",
        "message_id",
        "time",
        "format_info",
        "template_info",
        "additional_config",
        "sender_info",
    ]


def test_spec_example_full() -> None:
    msg = APIMessageBase(
        BaseMessageInfo(
            platform="wechat",
            message_id="msg_123456789",
            time=1732500000.0,
            format_info=FormatInfo(content_format=["text"], accept_format=["text", "emoji"]),
            sender_info=SenderInfo(
                group_info=GroupInfo("wechat", "group_001", "Group"),
                user_info=UserInfo("wechat", "user_001", "Nick", "Card"),
            ),
        ),
        Seg("text", "content"),
        MessageDim("receiver_api_key", "wechat"),
    )
    expected = {
        "message_info": {
            "platform": "wechat",
            "message_id": "msg_123456789",
            "time": 1732500000.0,
            "format_info": {"content_format": ["text"], "accept_format": ["text", "emoji"]},
            "sender_info": {
                "group_info": {
                    "platform": "wechat",
                    "group_id": "group_001",
                    "group_name": "Group",
                },
                "user_info": {
                    "platform": "wechat",
                    "user_id": "user_001",
                    "user_nickname": "Nick",
                    "user_cardname": "Card",
                },
            },
        },
        "message_segment": {"type": "text", "data": "content"},
        "message_dim": {"api_key": "receiver_api_key", "platform": "wechat"},
    }
    assert msg.to_dict() == expected
    assert json.dumps(msg.to_dict()) == json.dumps(expected)  # key order too
    assert APIMessageBase.from_dict(expected) == msg


def test_part_dicts_omit_none() -> None:
    assert GroupInfo("qq", "g").to_dict() == {"platform": "qq", "group_id": "g"}
    assert UserInfo("qq", "u", user_cardname="c").to_dict() == {
        "platform": "qq",
        "user_id": "u",
        "user_cardname": "c",
    }
    assert SenderInfo(user_info=UserInfo("qq", "u")).to_dict() == {
        "user_info": {"platform": "qq", "user_id": "u"}
    }
    assert list(ReceiverInfo(GroupInfo("a", "b"), UserInfo("c", "d")).to_dict()) == [
        "group_info",
        "user_info",
    ]
    assert FormatInfo(accept_format=["text"]).to_dict() == {"accept_format": ["text"]}
    assert TemplateInfo().to_dict() == {"template_default": True}
    assert TemplateInfo({"a": "b"}, template_default=False).to_dict() == {
        "template_items": {"a": "b"},
        "template_default": False,
    }
    assert MessageDim("k", "p").to_dict() == {"api_key": "k", "platform": "p"}
    assert BaseMessageInfo("p", "m", 2.5).to_dict() == {
        "platform": "p",
        "message_id": "m",
        "time": 2.5,
    }
    assert BaseMessageInfo("p", "m", 0, receiver_info=ReceiverInfo()).to_dict() == {
        "platform": "p",
        "message_id": "m",
        "time": 0,
        "receiver_info": {},
    }


def test_seg_data_passes_through() -> None:
    file_data = {"file": "f", "name": "n", "path": None, "url": "u", "thumb": None}
    assert Seg("file", file_data).to_dict() == {"type": "file", "data": file_data}
    forward = [{"message_info": {}, "message_segment": {"type": "text", "data": "x"}}]
    assert Seg("forward", forward).to_dict()["data"] is forward
    assert Seg.from_dict({"type": "forward", "data": forward}).data is forward
    assert Seg.from_dict({}) == Seg(None, None)  # type: ignore[arg-type]
    assert Seg.from_dict({"type": "at", "data": 123, "extra": 1}) == Seg("at", 123)


def test_values_not_coerced() -> None:
    info = BaseMessageInfo.from_dict({"platform": "qq", "message_id": 42, "time": 7})
    assert info.message_id == 42 and info.time == 7
    assert info.to_dict() == {"platform": "qq", "message_id": 42, "time": 7}


def test_unknown_keys_ignored() -> None:
    d = {
        "message_info": {"platform": "qq", "message_id": "1", "time": 1.0, "group_info": {}},
        "message_segment": {"type": "text", "data": "x", "zzz": 1},
        "message_dim": {"api_key": "k", "platform": "qq", "extra": True},
        "raw_message": "ignored",
    }
    msg = APIMessageBase.from_dict(d)
    assert msg == APIMessageBase(
        BaseMessageInfo("qq", "1", 1.0), Seg("text", "x"), MessageDim("k", "qq")
    )


def test_to_dict_copies_format_and_template_containers() -> None:
    # 0.6.8 builds these through dataclasses.asdict, so the output does not alias the object
    f = FormatInfo(["text"], ["text"])
    out = f.to_dict()
    out["content_format"].append("image")
    assert f.content_format == ["text"]
    t = TemplateInfo({"a": "b"})
    t.to_dict()["template_items"]["c"] = "d"
    assert t.template_items == {"a": "b"}


def test_plain_info_base_as_sender_serialises() -> None:
    info = BaseMessageInfo("qq", "1", 1.0, sender_info=InfoBase(user_info=UserInfo("qq", "u")))
    assert info.to_dict()["sender_info"] == {"user_info": {"platform": "qq", "user_id": "u"}}


# --------------------------------------------------------------------------- strictness


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (GroupInfo, {"platform": "qq"}, "GroupInfo requires platform and group_id"),
        (
            GroupInfo,
            {"group_id": "g", "platform": None},
            "GroupInfo requires platform and group_id",
        ),
        (UserInfo, {"platform": "qq", "user_id": None}, "UserInfo requires platform and user_id"),
        (UserInfo, {"user_id": "u"}, "UserInfo requires platform and user_id"),
        (MessageDim, {}, "MessageDim requires api_key"),
        (MessageDim, {"api_key": "k"}, "MessageDim requires platform"),
        (MessageDim, {"api_key": "k", "platform": None}, "MessageDim requires platform"),
        (BaseMessageInfo, {}, "BaseMessageInfo requires platform"),
        (BaseMessageInfo, {"platform": "p"}, "BaseMessageInfo requires message_id"),
        (
            BaseMessageInfo,
            {"platform": "p", "message_id": "m", "time": None},
            "BaseMessageInfo requires time",
        ),
        (
            BaseMessageInfo,
            {"platform": "p", "message_id": "m", "time": 1, "sender_info": {"user_info": {}}},
            "UserInfo requires platform and user_id",
        ),
        (
            SenderInfo,
            {"group_info": {"group_id": "g"}},
            "GroupInfo requires platform and group_id",
        ),
        (APIMessageBase, {}, "APIMessageBase requires message_info"),
        (
            APIMessageBase,
            {"message_info": None, "message_dim": None},
            "APIMessageBase requires message_segment",
        ),
        (
            APIMessageBase,
            {"message_info": {}, "message_segment": {}},
            "APIMessageBase requires message_dim",
        ),
        (
            APIMessageBase,
            {"message_info": {}, "message_segment": {}, "message_dim": {}},
            "BaseMessageInfo requires platform",
        ),
        (
            APIMessageBase,
            {
                "message_info": {"platform": "p", "message_id": "m", "time": 1},
                "message_segment": {"type": "text", "data": "x"},
                "message_dim": {"platform": "p"},
            },
            "MessageDim requires api_key",
        ),
    ],
)
def test_from_dict_value_errors(cls: Any, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as exc:
        cls.from_dict(data)
    assert str(exc.value) == message


def test_lenient_parts() -> None:
    assert FormatInfo.from_dict({}) == FormatInfo()
    assert TemplateInfo.from_dict({}) == TemplateInfo(None, None, True)
    assert TemplateInfo.from_dict({"template_default": None}).template_default is None
    assert SenderInfo.from_dict({}) == SenderInfo()
    assert SenderInfo.from_dict({"group_info": None, "user_info": None}) == SenderInfo()
    r = ReceiverInfo.from_dict({"group_info": {"platform": "p", "group_id": 1}})
    assert type(r) is ReceiverInfo and r.group_info == GroupInfo("p", 1)  # type: ignore[arg-type]


def test_required_constructor_arguments() -> None:
    with pytest.raises(TypeError):
        UserInfo(user_id="x")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        GroupInfo("qq")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        BaseMessageInfo("qq", "1")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        APIMessageBase(BaseMessageInfo("qq", "1", 1.0), Seg("text", "x"))  # type: ignore[call-arg]


# --------------------------------------------------------------------------- class shape


def test_field_order_and_defaults() -> None:
    def shape(cls: type) -> list[tuple[str, Any]]:
        return [
            (f.name, f.default if f.default is not dataclasses.MISSING else "REQUIRED")
            for f in dataclasses.fields(cls)
        ]

    assert shape(Seg) == [("type", "REQUIRED"), ("data", "REQUIRED")]
    assert shape(GroupInfo) == [
        ("platform", "REQUIRED"),
        ("group_id", "REQUIRED"),
        ("group_name", None),
    ]
    assert shape(UserInfo) == [
        ("platform", "REQUIRED"),
        ("user_id", "REQUIRED"),
        ("user_nickname", None),
        ("user_cardname", None),
    ]
    for cls in (InfoBase, SenderInfo, ReceiverInfo):
        assert shape(cls) == [("group_info", None), ("user_info", None)]
    assert shape(FormatInfo) == [("content_format", None), ("accept_format", None)]
    assert shape(TemplateInfo) == [
        ("template_items", None),
        ("template_name", None),
        ("template_default", True),
    ]
    assert shape(MessageDim) == [("api_key", "REQUIRED"), ("platform", "REQUIRED")]
    assert shape(BaseMessageInfo) == [
        ("platform", "REQUIRED"),
        ("message_id", "REQUIRED"),
        ("time", "REQUIRED"),
        ("format_info", None),
        ("template_info", None),
        ("additional_config", None),
        ("sender_info", None),
        ("receiver_info", None),
    ]
    assert shape(APIMessageBase) == [
        ("message_info", "REQUIRED"),
        ("message_segment", "REQUIRED"),
        ("message_dim", "REQUIRED"),
    ]
    assert issubclass(SenderInfo, InfoBase) and issubclass(ReceiverInfo, InfoBase)


def test_mutable_eq_and_distinct_families() -> None:
    u = UserInfo("qq", "1")
    u.user_nickname = "n"
    assert u == UserInfo("qq", "1", "n")
    assert u != legacy.UserInfo("qq", "1", "n")
    assert not isinstance(u, legacy.UserInfo)
    assert Seg("text", "a") != legacy.Seg("text", "a")
    assert SenderInfo() != ReceiverInfo()
    assert repr(Seg("text", "a")) == "Seg(type='text', data='a')"


def test_module_exports() -> None:
    assert sorted(message_module.__all__) == sorted(
        [
            "APIMessageBase",
            "MessageDim",
            "BaseMessageInfo",
            "Seg",
            "GroupInfo",
            "UserInfo",
            "InfoBase",
            "SenderInfo",
            "ReceiverInfo",
            "FormatInfo",
            "TemplateInfo",
        ]
    )
    assert ModuleAPIMessageBase is APIMessageBase


def test_helpers() -> None:
    msg = APIMessageBase(BaseMessageInfo("wx", "m1", 3.0), Seg("text", "x"), MessageDim("k", "qq"))
    dim = msg.message_dim
    assert msg.get_api_key() == "k"
    assert msg.get_platform() == "qq"
    assert msg.get_message_platform() == "wx"
    assert msg.get_message_id() == "m1"
    assert msg.get_message_time() == 3.0
    assert not msg.has_sender_info() and not msg.has_receiver_info()
    msg.set_message_dim("k2", "tg")
    assert msg.message_dim is dim and dim == MessageDim("k2", "tg")
    msg.message_info.sender_info = SenderInfo()
    msg.message_info.receiver_info = ReceiverInfo()
    assert msg.has_sender_info() and msg.has_receiver_info()
