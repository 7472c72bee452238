"""Legacy data classes: 0.6.8 quirks (asdict nulls, GroupInfo None, InfoBase), round trips."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maim_message
from maim_message import message_base
from maim_message.core.models import api
from maim_message.message_base import (
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

# --------------------------------------------------------------------------- strategies

text = st.text(max_size=12)
ident = st.one_of(text, st.integers(-(2**40), 2**40))
opt = st.none() | ident
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
segs = st.recursive(
    st.builds(Seg, st.sampled_from(["text", "image", "face", "notify"]) | st.none(), json_value),
    lambda c: st.builds(Seg, st.just("seglist"), st.lists(c, max_size=4)),
    max_leaves=12,
)
# a GroupInfo without group_id does not survive from_dict (it becomes None), by design
groups = st.builds(GroupInfo, opt, ident, opt)
users = st.builds(UserInfo, opt, opt, opt, opt)
senders = st.builds(SenderInfo, st.none() | groups, st.none() | users)
receivers = st.builds(ReceiverInfo, st.none() | groups, st.none() | users)
formats = st.builds(
    FormatInfo, st.none() | st.lists(text, max_size=3), st.none() | st.lists(text, max_size=3)
)


def templates(default: st.SearchStrategy[Any]) -> st.SearchStrategy[TemplateInfo]:
    return st.builds(
        TemplateInfo,
        st.none() | st.dictionaries(text, text, max_size=3),
        st.none() | st.dictionaries(text, text, max_size=3),
        default,
    )


infos = st.builds(
    BaseMessageInfo,
    opt,
    opt,
    st.none() | st.floats(allow_nan=False, allow_infinity=False) | st.integers(0, 2**40),
    st.none() | groups,
    st.none() | users,
    st.none() | formats,
    # nested TemplateInfo keeps its nulls, so even template_default=None survives
    st.none() | templates(st.none() | st.booleans()),
    st.none() | st.dictionaries(text, json_value, max_size=3),
    st.none() | senders,
    st.none() | receivers,
)
messages = st.builds(MessageBase, infos, segs, st.none() | text)


# --------------------------------------------------------------------------- round trips


@settings(max_examples=300, deadline=None)
@given(messages)
def test_message_round_trip(msg: MessageBase) -> None:
    d = msg.to_dict()
    assert MessageBase.from_dict(d) == msg
    assert MessageBase.from_dict(json.loads(json.dumps(d))) == msg


@settings(max_examples=150, deadline=None)
@given(st.one_of(segs, groups, users, formats, templates(st.booleans()), infos, senders, receivers))
def test_part_round_trip(obj: Any) -> None:
    if isinstance(obj, InfoBase) and obj.user_info is None:
        # quirk: a missing user_info key parses as an all-None UserInfo
        assert type(obj).from_dict(obj.to_dict()) == type(obj)(obj.group_info, UserInfo())
    else:
        assert type(obj).from_dict(obj.to_dict()) == obj


@settings(max_examples=100, deadline=None)
@given(infos)
def test_info_nested_in_asdict_form(info: BaseMessageInfo) -> None:
    d = info.to_dict()
    assert d == {k: v for k, v in dataclasses.asdict(info).items() if v is not None}


# --------------------------------------------------------------------------- exact dicts


def test_spec_example() -> None:
    msg = MessageBase(
        BaseMessageInfo(
            platform="qq",
            message_id="1",
            time=1.0,
            user_info=UserInfo("qq", "u1"),
            group_info=GroupInfo("qq", "g1"),
            format_info=FormatInfo(["text"], ["text", "image"]),
            template_info=TemplateInfo(),
            sender_info=SenderInfo(user_info=UserInfo("qq", "u1")),
        ),
        Seg("seglist", [Seg("text", "a ü"), Seg("image", "aGk=")]),
        raw_message="raw",
    )
    user = {"platform": "qq", "user_id": "u1", "user_nickname": None, "user_cardname": None}
    expected = {
        "message_info": {
            "platform": "qq",
            "message_id": "1",
            "time": 1.0,
            "group_info": {"platform": "qq", "group_id": "g1", "group_name": None},
            "user_info": user,
            "format_info": {"content_format": ["text"], "accept_format": ["text", "image"]},
            "template_info": {
                "template_items": None,
                "template_name": None,
                "template_default": True,
            },
            "sender_info": {"group_info": None, "user_info": user},
        },
        "message_segment": {
            "type": "seglist",
            "data": [{"type": "text", "data": "a ü"}, {"type": "image", "data": "aGk="}],
        },
        "raw_message": "raw",
    }
    assert json.dumps(msg.to_dict(), ensure_ascii=False) == json.dumps(expected, ensure_ascii=False)
    assert MessageBase.from_dict(expected) == msg


def test_empty_forms() -> None:
    assert BaseMessageInfo().to_dict() == {}
    assert MessageBase.from_dict({}).to_dict() == {
        "message_info": {},
        "message_segment": {"type": None, "data": None},
    }
    assert MessageBase.from_dict({}) == MessageBase(BaseMessageInfo(), Seg(None, None))  # type: ignore[arg-type]


def test_direct_to_dict_omits_none() -> None:
    assert GroupInfo(group_id="g").to_dict() == {"group_id": "g"}
    assert UserInfo("qq").to_dict() == {"platform": "qq"}
    assert FormatInfo().to_dict() == {}
    assert TemplateInfo().to_dict() == {"template_default": True}
    assert TemplateInfo(template_default=None).to_dict() == {}  # type: ignore[arg-type]
    assert SenderInfo(GroupInfo("qq", "g")).to_dict() == {
        "group_info": {"platform": "qq", "group_id": "g"}
    }
    assert ReceiverInfo().to_dict() == {}
    assert MessageBase(BaseMessageInfo(), Seg("text", "x")).to_dict() == {
        "message_info": {},
        "message_segment": {"type": "text", "data": "x"},
    }


def test_asdict_copies_and_converts_additional_config() -> None:
    cfg: dict[str, Any] = {"a": [1, {"b": 2}], "seg": Seg("text", "x")}
    info = BaseMessageInfo(additional_config=cfg)
    out = info.to_dict()["additional_config"]
    assert out == {"a": [1, {"b": 2}], "seg": {"type": "text", "data": "x"}}
    assert out == dataclasses.asdict(info)["additional_config"]
    out["a"][1]["b"] = 3
    assert cfg["a"][1]["b"] == 2


def test_asdict_form_of_foreign_and_subclassed_nested_objects() -> None:
    @dataclasses.dataclass
    class MyUser(UserInfo):
        level: int = 0

    info = BaseMessageInfo(
        user_info=MyUser("qq", "u", level=3), group_info=api.GroupInfo("qq", "g")
    )  # type: ignore[arg-type]
    assert info.to_dict() == {k: v for k, v in dataclasses.asdict(info).items() if v is not None}
    assert info.to_dict()["user_info"]["level"] == 3


# --------------------------------------------------------------------------- from_dict quirks


def test_group_info_from_dict_returns_none_without_group_id() -> None:
    assert GroupInfo.from_dict({"group_name": "x", "platform": "qq"}) is None
    assert GroupInfo.from_dict({"group_id": None}) is None
    assert GroupInfo.from_dict({"group_id": 0}) == GroupInfo(None, 0)  # type: ignore[arg-type]
    info = BaseMessageInfo.from_dict({"group_info": {"group_name": "x"}})
    assert info.group_info is None


def test_info_base_missing_user_info_quirk() -> None:
    s = SenderInfo.from_dict({"group_info": {"platform": "qq", "group_id": "g"}})
    assert type(s) is SenderInfo
    assert s.user_info == UserInfo()
    assert s.to_dict() == {"group_info": {"platform": "qq", "group_id": "g"}, "user_info": {}}
    nested = BaseMessageInfo(sender_info=s).to_dict()["sender_info"]
    assert nested["user_info"] == {
        "platform": None,
        "user_id": None,
        "user_nickname": None,
        "user_cardname": None,
    }
    assert InfoBase.from_dict({"user_info": None}) == InfoBase(None, None)
    assert ReceiverInfo.from_dict({}) == ReceiverInfo(None, UserInfo())


def test_base_message_info_ignores_non_dict_nested() -> None:
    info = BaseMessageInfo.from_dict(
        {
            "platform": "qq",
            "message_id": 5,
            "group_info": "g",
            "user_info": ["u"],
            "format_info": None,
            "template_info": 1,
            "sender_info": "s",
            "receiver_info": [],
            "additional_config": {"x": 1},
            "unknown": True,
        }
    )
    assert info == BaseMessageInfo("qq", 5, additional_config={"x": 1})  # type: ignore[arg-type]


def test_lenient_parts() -> None:
    assert UserInfo.from_dict({}) == UserInfo()
    assert FormatInfo.from_dict({"content_format": ["text"]}) == FormatInfo(["text"])
    assert TemplateInfo.from_dict({}) == TemplateInfo()
    assert TemplateInfo.from_dict({"template_default": False}).template_default is False
    assert MessageBase.from_dict({"raw_message": "r"}).raw_message == "r"


def test_seglist_items_are_legacy_segs() -> None:
    seg = Seg.from_dict({"type": "seglist", "data": [{"type": "seglist", "data": []}]})
    assert seg == Seg("seglist", [Seg("seglist", [])])
    assert type(seg.data[0]) is Seg
    with pytest.raises(TypeError):
        Seg.from_dict({"type": "seglist"})  # 0.6.8 iterates the missing data too


# --------------------------------------------------------------------------- class shape


def test_field_order_and_defaults() -> None:
    def shape(cls: type) -> list[tuple[str, Any]]:
        return [
            (f.name, f.default if f.default is not dataclasses.MISSING else "REQUIRED")
            for f in dataclasses.fields(cls)
        ]

    assert shape(Seg) == [("type", "REQUIRED"), ("data", "REQUIRED")]
    assert shape(GroupInfo) == [("platform", None), ("group_id", None), ("group_name", None)]
    assert [n for n, _ in shape(UserInfo)] == [
        "platform",
        "user_id",
        "user_nickname",
        "user_cardname",
    ]
    assert shape(SenderInfo) == shape(ReceiverInfo) == [("group_info", None), ("user_info", None)]
    assert shape(TemplateInfo)[-1] == ("template_default", True)
    assert shape(BaseMessageInfo) == [
        (n, None)
        for n in (
            "platform",
            "message_id",
            "time",
            "group_info",
            "user_info",
            "format_info",
            "template_info",
            "additional_config",
            "sender_info",
            "receiver_info",
        )
    ]
    assert shape(MessageBase) == [
        ("message_info", "REQUIRED"),
        ("message_segment", "REQUIRED"),
        ("raw_message", None),
    ]


def test_root_and_module_exports() -> None:
    names = [
        "MessageBase",
        "Seg",
        "GroupInfo",
        "UserInfo",
        "FormatInfo",
        "TemplateInfo",
        "BaseMessageInfo",
        "InfoBase",
        "SenderInfo",
        "ReceiverInfo",
    ]
    for name in names:
        assert getattr(maim_message, name) is getattr(message_base, name)
        assert getattr(message_base, name) is not getattr(api, name, None)
    assert BaseMessageInfo(platform="qq") != api.BaseMessageInfo("qq", None, None)  # type: ignore[arg-type]
