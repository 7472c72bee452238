"""Run 0.6.8's MessageConverter over cases read as JSON from stdin; print JSON results.

Input: {"legacy": [MessageBase dicts], "api": [APIMessageBase dicts]}
Output: {"to_api_receive": [...], "to_api_send": [...], "to_api_platform": [...],
         "from_api_receive": [...], "from_api_send": [...]}
"""

import json
import sys

from maim_message import MessageBase, MessageConverter
from maim_message.message import APIMessageBase

cases = json.load(sys.stdin)
legacy = [MessageBase.from_dict(d) for d in cases["legacy"]]
api = [APIMessageBase.from_dict(d) for d in cases["api"]]
out = {
    "to_api_receive": [MessageConverter.to_api_receive(m, "key").to_dict() for m in legacy],
    "to_api_send": [MessageConverter.to_api_send(m, "key").to_dict() for m in legacy],
    "to_api_platform": [MessageConverter.to_api_receive(m, "k2", "tg").to_dict() for m in legacy],
    "from_api_receive": [MessageConverter.from_api_receive(m).to_dict() for m in api],
    "from_api_send": [MessageConverter.from_api_send(m).to_dict() for m in api],
}
sys.stdout.write(json.dumps(out))
