"""The RESP2 reply parsers the cluster's command queue reads with (no sockets): the
pure-Python one and the hiredis-backed one give the same replies for every split of the
same bytes."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Any, List

import pytest
from redis.exceptions import ExecAbortError, NoScriptError, ResponseError

from maim_message.backends import resp_codec
from maim_message.backends.resp_reader import RespProtocolError, RespReader

try:
    import hiredis  # noqa: F401  (the C reader; the cluster extra installs it)
except ImportError:
    HIREDIS = False
else:
    HIREDIS = True

READERS = [
    pytest.param(RespReader, id="python"),
    pytest.param(resp_codec.NativeRespReader, id="hiredis", marks=pytest.mark.skipif(
        not HIREDIS, reason="hiredis is not installed (pip install hiredis)")),
]


@pytest.fixture(params=READERS)
def reader_class(request: pytest.FixtureRequest) -> Any:
    return request.param

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


def feed_in(reader_class: Any, chunks: List[bytes]) -> List[Any]:
    reader = reader_class()
    out: List[Any] = []
    for chunk in chunks:
        reader.feed(chunk)
        out += reader.take()
    assert not reader.has_unread
    return out


def test_every_reply_type_in_one_feed(reader_class: Any) -> None:
    reader = reader_class()
    reader.feed(STREAM)
    replies = reader.take()
    check_stream(replies)
    assert reader.errors == 5
    assert reader.take() == [] and not reader.has_unread


def test_every_split_point_of_a_stream(reader_class: Any) -> None:
    for cut in range(1, len(STREAM)):
        check_stream(feed_in(reader_class, [STREAM[:cut], STREAM[cut:]]))


def test_byte_by_byte_and_random_chunks(reader_class: Any) -> None:
    check_stream(feed_in(reader_class, [STREAM[i:i + 1] for i in range(len(STREAM))]))
    rng = random.Random(7)
    for _ in range(200):
        chunks, at = [], 0
        while at < len(STREAM):
            step = rng.randint(1, 40)
            chunks.append(STREAM[at:at + step])
            at += step
        check_stream(feed_in(reader_class, chunks))


def test_take_stops_at_the_limit_and_keeps_the_rest(reader_class: Any) -> None:
    reader = reader_class()
    reader.feed(b"+QUEUED\r\n+QUEUED\r\n*1\r\n:7\r\n+OK\r\n")
    assert reader.take(2) == [b"QUEUED", b"QUEUED"]
    assert reader.take(1) == [[7]]
    assert reader.has_unread
    assert reader.take() == [b"OK"]


def test_partial_reply_is_not_handed_out(reader_class: Any) -> None:
    reader = reader_class()
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


def test_a_one_mebibyte_bulk_in_small_chunks(reader_class: Any) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, CRLF pairs inside
    data = b"*2\r\n$%d\r\n%s\r\n:1\r\n$%d\r\n%s\r\n" % (len(payload), payload,
                                                       len(payload), payload)
    reader = reader_class()
    out: List[Any] = []
    for at in range(0, len(data), 65536):
        reader.feed(data[at:at + 65536])
        out += reader.take()
    assert out == [[payload, 1], payload]


def test_clear_forgets_a_partial_reply(reader_class: Any) -> None:
    reader = reader_class()
    reader.feed(b"*3\r\n+QUEUED\r\n$10\r\nabc")
    assert reader.take() == []
    reader.clear()
    assert not reader.has_unread
    reader.feed(b"+PONG\r\n")
    assert reader.take() == [b"PONG"]


@pytest.mark.parametrize("garbage", [
    b"hello\r\n", b":12x\r\n", b"$abc\r\n", b"$-2\r\n", b"*-5\r\n",
    b"$3\r\nabcde\r\n", b"*1\r\n!oops\r\n",
])
def test_protocol_garbage_raises_a_clear_error(reader_class: Any, garbage: bytes) -> None:
    reader = reader_class()
    reader.feed(b"+OK\r\n")
    assert reader.take() == [b"OK"]
    reader.feed(garbage)
    with pytest.raises(RespProtocolError):
        reader.take()


def test_resp3_types_are_garbage_to_the_pure_reader() -> None:
    """A RESP2 connection never carries them; hiredis parses them (resp_codec's note)."""
    for data in (b"%1\r\n", b"_\r\n", b"#t\r\n", b",1.5\r\n"):
        reader = RespReader()
        reader.feed(data)
        with pytest.raises(RespProtocolError):
            reader.take()


def _reader_choice(pure: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MAIM_MESSAGE_PURE_RESP"}
    if pure:
        env["MAIM_MESSAGE_PURE_RESP"] = pure
    probe = ("from maim_message.backends import redis_link;"
             "print(redis_link.RespLink.__init__.__globals__['RespReader'].__name__)")
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, timeout=60, check=True).stdout.strip()


@pytest.mark.skipif(not HIREDIS, reason="hiredis is not installed (pip install hiredis)")
def test_the_cluster_reads_with_hiredis_unless_told_not_to() -> None:
    assert _reader_choice("") == "NativeRespReader"
    assert _reader_choice("1") == "RespReader"
