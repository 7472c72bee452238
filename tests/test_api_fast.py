"""The one-pass message build of received sys_std payloads gives what the general path gives.

``message_from_payload`` must accept only what ``check_standard_payload`` +
``APIMessageBase.from_dict`` accept and build equal objects of the same classes; and
``standard_message`` (which tries it first) must answer every payload exactly as the
general path does: the same message, or an ``EnvelopeError`` with the same text and field.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maim_message.core.codec import has_standard_payload
from maim_message.core.models.api import APIMessageBase
from maim_message.core.models.api_fast import message_from_payload
from maim_message.core.payload_checks import check_standard_payload
from maim_message.errors import EnvelopeError
from maim_message.server.inbound import standard_message

# values a field may hold: the usual ones and the odd ones the tests and fuzzers send
ODD = st.one_of(
    st.none(), st.text(max_size=5), st.integers(-3, 3), st.floats(allow_nan=False),
    st.booleans(), st.just([]), st.just(["a", 1]), st.just({}), st.just({"x": 1}),
)
MISSING = object()


def _maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the well-formed value, sometimes odd (1 in 30), sometimes the key is left
    out (1 in 30): about a third of the payloads come out well-formed."""
    return st.tuples(st.integers(0, 29), value, ODD).map(
        lambda t: t[2] if t[0] == 0 else MISSING if t[0] == 1 else t[1])


def _obj(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Dict[str, Any]]:
    return st.fixed_dictionaries({k: _maybe(v) for k, v in fields.items()}).map(
        lambda d: {k: v for k, v in d.items() if v is not MISSING})


TEXT = st.text(max_size=8)
GROUP = _obj(platform=TEXT, group_id=TEXT, group_name=TEXT)
USER = _obj(platform=TEXT, user_id=TEXT, user_nickname=TEXT, user_cardname=TEXT)
INFO_BASE = _obj(group_info=GROUP, user_info=USER)
LEAF_SEG = _obj(type=st.sampled_from(["text", "image", "emoji"]), data=TEXT)
SEG = st.one_of(
    LEAF_SEG,
    _obj(type=st.just("seglist"), data=st.lists(st.one_of(LEAF_SEG, ODD), max_size=3)),
    _obj(type=st.just("seglist"),
         data=st.lists(_obj(type=st.just("seglist"), data=st.lists(LEAF_SEG, max_size=2)),
                       max_size=2)),
)
MESSAGE_INFO = _obj(
    platform=TEXT, message_id=st.one_of(TEXT, st.integers()), time=st.floats(allow_nan=False),
    sender_info=INFO_BASE, receiver_info=INFO_BASE,
    format_info=_obj(content_format=st.lists(TEXT, max_size=2),
                     accept_format=st.lists(TEXT, max_size=2)),
    template_info=_obj(template_items=st.dictionaries(TEXT, TEXT, max_size=2),
                       template_name=st.dictionaries(TEXT, TEXT, max_size=1),
                       template_default=st.booleans()),
    additional_config=st.dictionaries(TEXT, TEXT, max_size=2),
)
PAYLOAD = _obj(message_info=MESSAGE_INFO, message_segment=SEG,
               message_dim=_obj(api_key=TEXT, platform=TEXT))


def _same_objects(a: Any, b: Any) -> None:
    """Equal and of the same classes all the way down (``==`` alone allows a subclass
    of a field's value to compare equal)."""
    assert type(a) is type(b)
    if dataclasses.is_dataclass(a):
        assert list(vars(a)) == list(vars(b))  # the same attributes, in the same order
        for f in dataclasses.fields(a):
            _same_objects(getattr(a, f.name), getattr(b, f.name))
    elif type(a) is list:
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same_objects(x, y)
    else:
        assert a == b or (a != a and b != b)


def _general(payload: Any) -> Any:
    """The rules ``standard_message`` applies to a standard payload, the long way."""
    check_standard_payload(payload)
    return APIMessageBase.from_dict(payload)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(PAYLOAD)
def test_fast_build_accepts_a_subset_and_builds_the_same_objects(payload: Dict[str, Any]
                                                                 ) -> None:
    fast = message_from_payload(payload)
    if fast is None:
        return
    _same_objects(fast, _general(payload))  # the general path accepts it, same objects


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(PAYLOAD)
def test_standard_message_answers_every_payload_as_the_general_path(
        payload: Dict[str, Any]) -> None:
    env = {"type": "sys_std", "msg_id": "m1", "payload": payload}
    try:
        got: Any = standard_message(env, "plat", "key")
    except EnvelopeError as exc:
        got = ("error", str(exc), exc.field)
    if not has_standard_payload(payload):
        assert type(got) is APIMessageBase  # wrapped as text, as before
        assert got.message_segment.type == "text"
        return
    try:
        want: Any = _general(payload)
    except EnvelopeError as exc:
        want = ("error", str(exc), exc.field)
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        want = ("error", str(EnvelopeError(str(exc)[:200], "payload")), "payload")
    if type(want) is tuple:
        assert got == want
    else:
        _same_objects(got, want)


def test_the_common_shape_takes_the_fast_path() -> None:
    payload = {
        "message_info": {
            "platform": "qq", "message_id": "m1", "time": 1.5,
            "sender_info": {"group_info": {"platform": "qq", "group_id": "g"},
                            "user_info": {"platform": "qq", "user_id": "u",
                                          "user_nickname": "n"}},
            "format_info": {"content_format": ["text"]},
            "template_info": {"template_name": {"a": "b"}},
            "additional_config": {"k": 1},
        },
        "message_segment": {"type": "seglist", "data": [{"type": "text", "data": "hi"}]},
        "message_dim": {"api_key": "key", "platform": "qq"},
    }
    fast = message_from_payload(payload)
    assert fast is not None
    _same_objects(fast, APIMessageBase.from_dict(payload))
    assert fast.message_info.template_info is not None
    assert fast.message_info.template_info.template_default is True


def test_built_classes_have_no_post_init() -> None:
    """The one-pass build sets fields without calling ``__init__``: valid only while the
    classes' ``__init__`` does nothing more than set them."""
    from maim_message.core.models import api

    for cls in (api.Seg, api.GroupInfo, api.UserInfo, api.SenderInfo, api.ReceiverInfo,
                api.BaseMessageInfo, api.MessageDim, api.APIMessageBase):
        assert not hasattr(cls, "__post_init__"), cls
        assert dataclasses.is_dataclass(cls) and "__slots__" not in vars(cls), cls


def test_odd_shapes_fall_back_to_the_general_path() -> None:
    base = {"message_info": {"platform": "p", "message_id": "m", "time": 1},
            "message_segment": {"type": "text", "data": "x"},
            "message_dim": {"api_key": "k", "platform": "p"}}
    assert message_from_payload(base) is not None
    odd = [
        {**base, "message_dim": {"api_key": ["k"], "platform": "p"}},
        {**base, "message_dim": {"platform": "p"}},
        {**base, "message_info": {"platform": "p", "message_id": "m"}},
        {**base, "message_info": {"platform": None, "message_id": "m", "time": 1}},
        {**base, "message_segment": {"type": None, "data": "x"}},
        {**base, "message_segment": {"type": "seglist", "data": ["not a dict"]}},
        {**base, "message_segment": "text"},
        {**base, "message_info": {**base["message_info"], "sender_info": []}},
        {**base, "message_info": {**base["message_info"],
                                  "sender_info": {"user_info": {"platform": "p"}}}},
    ]
    for payload in odd:
        assert message_from_payload(payload) is None, payload
