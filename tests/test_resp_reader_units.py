"""The RESP2 reply parser the cluster's command queue reads with (no sockets)."""

from __future__ import annotations

import random
from typing import Any, List

import pytest
from redis.exceptions import ExecAbortError, NoScriptError, ResponseError

from maim_message.backends.resp_reader import RespProtocolError, RespReader

STREAM = (b"+OK\r\n+QUEUED\r\n:0\r\n:-42\r\n:9007199254740993\r\n$0\r\n\r\n$5\r\nhe\r\nl\r\n"
          b"$-1\r\n*-1\r\n*0\r\n-ERR unknown command 'NOPE'\r\n"
          b"-NOSCRIPT No matching script. Please use EVAL.\r\n"
          b"-EXECABORT Transaction discarded because of previous errors.\r\n"
          b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
          b"*3\r\n:1\r\n-WRONGTYPE bad\r\n*2\r\n$1\r\na\r\n*1\r\n$-1\r\n"
          b"*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nk\r\n$1\r\nv\r\n*0\r\n")


def check_stream(replies: List[Any]) -> None:
    assert replies[:10] == [b"OK", b"QUEUED", 0, -42, 9007199254740993, b"", b"he\r\nl",
                            None, None, []]
    assert all(type(r) is bytes for r in (replies[0], replies[1], replies[5], replies[6]))
    err, noscript, abort, wrongtype = replies[10:14]
    assert type(err) is ResponseError and str(err) == "unknown command 'NOPE'"
    assert isinstance(noscript, NoScriptError) and str(noscript).startswith("No matching")
    assert isinstance(abort, ExecAbortError)
    assert type(wrongtype) is ResponseError and str(wrongtype).startswith("WRONGTYPE ")
    exec_reply = replies[14]
    assert exec_reply[0] == 1 and exec_reply[2] == [b"a", [None]]
    assert type(exec_reply[1]) is ResponseError and str(exec_reply[1]) == "WRONGTYPE bad"
    assert replies[15] == [[b"1-0", [b"k", b"v"]], []]
    assert len(replies) == 16


def feed_in(chunks: List[bytes]) -> List[Any]:
    reader = RespReader()
    out: List[Any] = []
    for chunk in chunks:
        reader.feed(chunk)
        out += reader.take()
    assert reader.buffered == 0
    return out


def test_every_reply_type_in_one_feed() -> None:
    reader = RespReader()
    reader.feed(STREAM)
    replies = reader.take()
    check_stream(replies)
    assert reader.errors == 5
    assert reader.take() == [] and reader.buffered == 0


def test_every_split_point_of_a_stream() -> None:
    for cut in range(1, len(STREAM)):
        check_stream(feed_in([STREAM[:cut], STREAM[cut:]]))


def test_byte_by_byte_and_random_chunks() -> None:
    check_stream(feed_in([STREAM[i:i + 1] for i in range(len(STREAM))]))
    rng = random.Random(7)
    for _ in range(200):
        chunks, at = [], 0
        while at < len(STREAM):
            step = rng.randint(1, 40)
            chunks.append(STREAM[at:at + step])
            at += step
        check_stream(feed_in(chunks))


def test_take_stops_at_the_limit_and_keeps_the_rest() -> None:
    reader = RespReader()
    reader.feed(b"+QUEUED\r\n+QUEUED\r\n*1\r\n:7\r\n+OK\r\n")
    assert reader.take(2) == [b"QUEUED", b"QUEUED"]
    assert reader.take(1) == [[7]]
    assert reader.buffered == len(b"+OK\r\n")
    assert reader.take() == [b"OK"]


def test_partial_reply_is_not_handed_out() -> None:
    reader = RespReader()
    reader.feed(b"*2\r\n:1\r\n")
    assert reader.take() == []
    reader.feed(b"$3\r\nab")
    assert reader.take() == []
    reader.feed(b"c\r")
    assert reader.take() == []
    reader.feed(b"\n:5")
    assert reader.take() == [[1, b"abc"]]
    reader.feed(b"\r\n")
    assert reader.take() == [5]


def test_a_one_mebibyte_bulk_in_small_chunks() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, CRLF pairs inside
    data = b"*2\r\n$%d\r\n%s\r\n:1\r\n$%d\r\n%s\r\n" % (len(payload), payload,
                                                       len(payload), payload)
    reader = RespReader()
    out: List[Any] = []
    for at in range(0, len(data), 65536):
        reader.feed(data[at:at + 65536])
        out += reader.take()
    assert out == [[payload, 1], payload]


def test_clear_forgets_a_partial_reply() -> None:
    reader = RespReader()
    reader.feed(b"*3\r\n+QUEUED\r\n$10\r\nabc")
    assert reader.take() == []
    reader.clear()
    assert reader.buffered == 0
    reader.feed(b"+PONG\r\n")
    assert reader.take() == [b"PONG"]


@pytest.mark.parametrize("garbage", [
    b"hello\r\n", b"%1\r\n", b":12x\r\n", b"$abc\r\n", b"$-2\r\n", b"*-5\r\n",
    b"$3\r\nabcde\r\n", b"*1\r\n!oops\r\n",
])
def test_protocol_garbage_raises_a_clear_error(garbage: bytes) -> None:
    reader = RespReader()
    reader.feed(b"+OK\r\n")
    assert reader.take() == [b"OK"]
    reader.feed(garbage)
    with pytest.raises(RespProtocolError):
        reader.take()
