"""Helpers for API-Server tests: messages, envelopes, a server fixture factory."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Optional, Tuple

import orjson

from maim_message.message import APIMessageBase, BaseMessageInfo, MessageDim, Seg


def make_message(text: str, api_key: str, platform: str, message_id: str = "m") -> APIMessageBase:
    return APIMessageBase(
        message_info=BaseMessageInfo(platform=platform, message_id=message_id, time=1.0),
        message_segment=Seg(type="text", data=text),
        message_dim=MessageDim(api_key=api_key, platform=platform),
    )


def envelope(msg_id: Optional[str], payload: Any, kind: str = "sys_std") -> str:
    env: Dict[str, Any] = {"ver": 1, "type": kind, "meta": {}, "payload": payload}
    if msg_id is not None:
        env["msg_id"] = msg_id
    return orjson.dumps(env).decode()


class Inbox:
    """Collects (message, metadata) pairs from on_message; await ``next()`` with a bound."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Tuple[Any, Dict[str, Any]]] = asyncio.Queue()
        self.items: List[Tuple[Any, Dict[str, Any]]] = []

    async def __call__(self, message: Any, metadata: Dict[str, Any]) -> None:
        self.items.append((message, metadata))
        self.queue.put_nowait((message, metadata))

    async def next(self, timeout: float = 5.0) -> Tuple[Any, Dict[str, Any]]:
        return await asyncio.wait_for(self.queue.get(), timeout)


async def recv_json(ws: Any, timeout: float = 5.0) -> Dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws: Any, kind: str, timeout: float = 5.0) -> Dict[str, Any]:
    """Next frame of type ``kind`` (skipping others, e.g. acks)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await recv_json(ws, max(0.01, deadline - loop.time()))
        if frame.get("type") == kind:
            return frame
