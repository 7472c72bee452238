"""MessageConverter: mapping rules (wire §2.6), round trips, and equality with 0.6.8's
converter run for real on the same inputs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List

from maim_message import MessageBase, MessageConverter
from maim_message.message import APIMessageBase

SCRIPT = Path(__file__).resolve().parent / "upstream_scripts" / "legacy_converter.py"

LEGACY: List[Dict[str, Any]] = [
    {  # top-level group/user with int ids, everything set
        "message_info": {
            "platform": "qq", "message_id": 123, "time": 1.5,
            "group_info": {"platform": "qq", "group_id": 987, "group_name": "g"},
            "user_info": {"platform": "qq", "user_id": 10001, "user_nickname": "A",
                          "user_cardname": "c"},
            "format_info": {"content_format": ["text"], "accept_format": ["text", "image"]},
            "template_info": {"template_items": {"a": "b"}, "template_name": {"n": 1},
                              "template_default": False},
            "additional_config": {"allow_tts": True},
        },
        "message_segment": {"type": "seglist", "data": [
            {"type": "text", "data": "ü"}, {"type": "image", "data": "aGk="}]},
        "raw_message": "raw",
    },
    {  # info only in sender_info / receiver_info, missing platforms, falsy ids
        "message_info": {
            "platform": "tg", "message_id": "m2", "time": 2.0,
            "sender_info": {"user_info": {"user_id": 0, "user_nickname": "z"}},
            "receiver_info": {"group_info": {"group_id": "g9"},
                              "user_info": {"platform": "x", "user_id": "u9"}},
        },
        "message_segment": {"type": "text", "data": "hello"},
    },
    {  # nothing but a platform
        "message_info": {"platform": None, "message_id": "m3", "time": 3.0},
        "message_segment": {"type": "text", "data": "x"},
    },
]

API: List[Dict[str, Any]] = [
    {
        "message_info": {
            "platform": "qq", "message_id": "1", "time": 1.0,
            "format_info": {"content_format": ["text"], "accept_format": ["text"]},
            "template_info": {"template_default": True},
            "additional_config": {"k": 1},
            "sender_info": {"user_info": {"platform": "qq", "user_id": "u1"},
                            "group_info": {"platform": "qq", "group_id": "g1"}},
            "receiver_info": {"user_info": {"platform": "qq", "user_id": "bot",
                                            "user_nickname": "B"}},
        },
        "message_segment": {"type": "seglist", "data": [{"type": "text", "data": "a"}]},
        "message_dim": {"api_key": "k", "platform": "qq"},
    },
    {
        "message_info": {"platform": "tg", "message_id": "2", "time": 2.0},
        "message_segment": {"type": "text", "data": "b"},
        "message_dim": {"api_key": "k", "platform": "tg"},
    },
]


def ours() -> Dict[str, Any]:
    legacy = [MessageBase.from_dict(d) for d in LEGACY]
    api = [APIMessageBase.from_dict(d) for d in API]
    C = MessageConverter
    out = {
        "to_api_receive": [C.to_api_receive(m, "key").to_dict() for m in legacy],
        "to_api_send": [C.to_api_send(m, "key").to_dict() for m in legacy],
        "to_api_platform": [C.to_api_receive(m, "k2", "tg").to_dict() for m in legacy],
        "from_api_receive": [C.from_api_receive(m).to_dict() for m in api],
        "from_api_send": [C.from_api_send(m).to_dict() for m in api],
    }
    return json.loads(json.dumps(out))


def test_mapping_rules() -> None:
    m = MessageBase.from_dict(LEGACY[1])
    api = MessageConverter.to_api_receive(m, "key").to_dict()
    sender = api["message_info"]["sender_info"]
    # user from sender_info (falsy id -> ""), group from receiver_info, platform filled in
    assert sender["user_info"] == {"platform": "tg", "user_id": "", "user_nickname": "z"}
    assert sender["group_info"] == {"platform": "tg", "group_id": "g9"}
    assert "receiver_info" not in api["message_info"]
    assert api["message_dim"] == {"api_key": "key", "platform": "tg"}
    send = MessageConverter.to_api_send(m, "key").to_dict()["message_info"]
    assert "sender_info" not in send and send["receiver_info"] == sender
    bare = MessageConverter.to_api_receive(MessageBase.from_dict(LEGACY[2]), "k").to_dict()
    assert bare["message_info"]["platform"] == "unknown"
    assert "sender_info" not in bare["message_info"]


def test_missing_id_and_time_are_generated() -> None:
    m = MessageBase.from_dict({"message_info": {"platform": "qq"},
                               "message_segment": {"type": "text", "data": "x"}})
    info = MessageConverter.to_api_receive(m, "k").message_info
    assert info.message_id.isdigit() and isinstance(info.time, float)


def test_round_trips() -> None:
    for d in LEGACY[:1]:
        m = MessageBase.from_dict(d)
        back = MessageConverter.from_api_receive(MessageConverter.to_api_receive(m, "k"))
        assert back.message_info.group_info.group_id == "987"  # ids become strings
        assert back.message_info.user_info.user_nickname == "A"
        assert back.message_segment.to_dict() == m.message_segment.to_dict()
        assert back.message_info.format_info == m.message_info.format_info
        assert back.message_info.template_info == m.message_info.template_info
        assert back.raw_message is None
        sent = MessageConverter.from_api_send(MessageConverter.to_api_send(m, "k"))
        assert sent.message_info.receiver_info.user_info.user_id == "10001"
        assert sent.message_info.sender_info is None
    for d in API:
        a = APIMessageBase.from_dict(d)
        again = MessageConverter.to_api_receive(MessageConverter.from_api_receive(a), "k")
        assert again.message_segment.to_dict() == a.message_segment.to_dict()
        assert again.message_info.sender_info == a.message_info.sender_info or \
            a.message_info.sender_info is None


def test_same_output_as_068(upstream_python: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [upstream_python, str(SCRIPT)], input=json.dumps({"legacy": LEGACY, "api": API}),
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=True,
    )
    assert json.loads(proc.stdout) == ours()
