"""Cluster mode: a message its receiver keeps refusing as too big is given up there too
(deleted from the pair's stream, so a reconnect does not read it back)."""

from __future__ import annotations

import pytest

from .helpers_api import Inbox
from .test_client import check_too_big_given_up
from .test_cluster import node, redis_url  # noqa: F401  (the fixture)


async def test_a_message_refused_as_too_big_is_given_up_in_cluster_mode(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    inbox = Inbox()
    server = node(redis_url, "n1", on_message=inbox)
    await check_too_big_given_up(server, inbox, caplog)
