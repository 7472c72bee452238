"""The channel connection's sans-I/O part (``redis_channel.Subscription``): RESP bytes in,
channel payloads and subscribe confirmations out, in any split; no sockets."""

from __future__ import annotations

from typing import List

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from maim_message.backends.redis_channel import Subscription
from maim_message.backends.resp_reader import RespProtocolError


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def message(channel: bytes, payload: bytes) -> bytes:
    return b"*3\r\n" + bulk(b"message") + bulk(channel) + bulk(payload)


def confirmation(channel: bytes, count: int) -> bytes:
    return b"*3\r\n" + bulk(b"subscribe") + bulk(channel) + b":%d\r\n" % count


def subscribed(*channels: str) -> Subscription:
    sub = Subscription(channels)
    sub.request()
    sub.feed(b"".join(confirmation(c.encode(), n + 1) for n, c in enumerate(channels)))
    assert sub.subscribed
    return sub


def test_the_request_subscribes_to_every_channel_in_resp() -> None:
    sub = Subscription(["p:n:a", "p:all"])
    assert sub.request() == (b"*3\r\n" + bulk(b"SUBSCRIBE") + bulk(b"p:n:a") + bulk(b"p:all"))
    with pytest.raises(ValueError):
        Subscription([])


def test_subscribed_once_every_channel_is_confirmed() -> None:
    sub = Subscription(["p:n:a", "p:all"])
    sub.request()
    assert not sub.subscribed
    assert sub.feed(confirmation(b"p:n:a", 1)) == []
    assert not sub.subscribed and sub.confirmed == 1
    assert sub.feed(confirmation(b"p:all", 2)) == []
    assert sub.subscribed


def test_payloads_come_out_in_order_with_what_arrived_with_the_confirmations() -> None:
    sub = Subscription(["p:n:a"])
    sub.request()
    data = (confirmation(b"p:n:a", 1) + message(b"p:n:a", b"one")
            + message(b"p:n:a", b"") + message(b"p:n:a", b"three\r\nlines"))
    assert sub.feed(data) == [b"one", b"", b"three\r\nlines"]
    assert sub.subscribed


@pytest.mark.parametrize("size", [1, 2, 7, 64])
def test_any_split_of_the_bytes_gives_the_same_payloads(size: int) -> None:
    sub = Subscription(["c"])
    sub.request()
    payloads = [b"x" * n for n in (0, 1, 5, 300, 70_000)]
    data = confirmation(b"c", 1) + b"".join(message(b"c", p) for p in payloads)
    got: List[bytes] = []
    for at in range(0, len(data), size):
        got += sub.feed(data[at:at + size])
    assert got == payloads and sub.subscribed


def test_replies_that_are_not_messages_are_ignored() -> None:
    sub = subscribed("c")
    other = (b"*3\r\n" + bulk(b"unsubscribe") + bulk(b"c") + b":0\r\n"  # not ours to act on
             + b"*2\r\n" + bulk(b"pong") + bulk(b"")
             + b"*4\r\n" + bulk(b"pmessage") + bulk(b"c*") + bulk(b"c1") + bulk(b"p")
             + b"+OK\r\n")
    assert sub.feed(other + message(b"c", b"after")) == [b"after"]


def test_an_error_reply_means_the_subscription_failed() -> None:
    sub = Subscription(["c"])
    sub.request()
    with pytest.raises(RedisConnectionError, match="NoPermissionError: this user"):
        sub.feed(b"-NOPERM this user has no permissions to access the 'c' channel\r\n")


def test_bytes_that_are_not_resp_drop_the_connection() -> None:
    sub = subscribed("c")
    with pytest.raises(RespProtocolError):
        sub.feed(b"!garbage\r\n")


def test_a_new_request_forgets_a_half_read_reply_and_the_confirmations() -> None:
    sub = subscribed("a", "b")
    assert sub.feed(message(b"a", b"whole")[:-5]) == []  # the connection broke here
    sub.request()  # reconnected: a fresh stream of replies
    assert not sub.subscribed and sub.confirmed == 0
    assert sub.feed(confirmation(b"a", 1) + confirmation(b"b", 2)
                    + message(b"b", b"new")) == [b"new"]
    assert sub.subscribed
