"""The command queue's RESP writer (no sockets): byte for byte what a plain packer writes,
for random arguments of every kind it accepts and every length around its header table."""

from __future__ import annotations

import random
from typing import Any, List, Tuple

import pytest
from redis.asyncio import Redis

from maim_message.backends import redis_pipeline
from maim_message.backends.redis_pipeline import CommandQueue, Script, pack, pack_into
from maim_message.backends.resp_pack import Packed, PackedArgs
from maim_message.backends.resp_reader import RespReader


def as_bytes(arg: Any) -> bytes:
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if isinstance(arg, int):
        return str(int(arg)).encode()
    return bytes(arg)


def reference(args: Tuple[Any, ...]) -> bytes:
    """RESP as the protocol spells it, one argument at a time."""
    out = b"*" + str(len(args)).encode() + b"\r\n"
    for arg in args:
        data = as_bytes(arg)
        out += b"$" + str(len(data)).encode() + b"\r\n" + data + b"\r\n"
    return out


class Key(bytes):
    """A bytes subclass (not the fast path's exact type)."""


class Name(str):
    pass


LENGTHS = [0, 1, 2, 9, 10, 99, 100, 1022, 1023, 1024, 1025, 5000]


def random_arg(rng: random.Random) -> Any:
    size = rng.choice([*LENGTHS, rng.randrange(0, 2100)])
    kind = rng.randrange(9)
    if kind == 0:
        return "".join(rng.choice("aé€😀\r\n") for _ in range(size // 4))
    if kind == 1:
        return rng.choice([0, 1, -1, 7, 10 ** 30, -(2 ** 63), rng.randrange(-10 ** 9, 10 ** 9)])
    if kind == 2:
        return rng.choice([True, False])
    if kind == 3:
        return Key(rng.randbytes(size))
    if kind == 4:
        return Name("k" * (size % 50))
    if kind == 5:
        return bytearray(rng.randbytes(size))
    if kind == 6:
        return memoryview(rng.randbytes(size))
    return rng.randbytes(size)


def random_args(rng: random.Random) -> Tuple[Any, ...]:
    count = rng.choice([1, 2, 3, 8, rng.randrange(1, 40), 1023, 1024, 1100])
    return ("SET", *(random_arg(rng) for _ in range(count - 1)))


def test_pack_writes_what_the_plain_packer_writes() -> None:
    rng = random.Random(15)
    for _ in range(400):
        args = random_args(rng)
        assert pack(args) == reference(args)


def test_pack_into_appends_pieces_that_join_to_the_commands() -> None:
    rng = random.Random(16)
    commands = [random_args(rng) for _ in range(30)]
    out: List[bytes] = [b"prefix"]
    for args in commands:
        pack_into(out, args)
    assert b"".join(out) == b"prefix" + b"".join(reference(a) for a in commands)


def test_packed_commands_parse_back_to_their_arguments() -> None:
    rng = random.Random(17)
    commands = [("XADD", b"s", "*", "f", 12, Key(b"v"), rng.randbytes(rng.randrange(3000)))
                for _ in range(20)]
    reader = RespReader()  # a command is an array of bulk strings
    reader.feed(b"".join(pack(a) for a in commands))
    parsed = reader.take()
    assert parsed == [[as_bytes(a) for a in args] for args in commands]


def test_a_batch_packs_transactions_and_script_calls_in_order() -> None:
    redis = Redis.from_url("redis://127.0.0.1:1/0", protocol=2)
    queue = CommandQueue(redis, {"echo": Script("return 1")})
    queue._scripts["echo"].sha = "a" * 40
    rng = random.Random(18)
    plain = random_args(rng)
    tx = ("MULTI", random_args(rng), ("INCR", "n"))
    call = ("EVALSHA", "echo", 1, b"k", rng.randbytes(2000))
    batch: List[Any] = [(plain, None), (tx, None), (call, None)]
    expected = (reference(plain) + reference(("MULTI",)) + reference(tx[1])
                + reference(("INCR", "n")) + reference(("EXEC",))
                + reference(("EVALSHA", "a" * 40, 1, b"k", call[4])))
    assert queue._pack_batch(batch) == expected
    assert redis_pipeline._size(tx) == 4 and redis_pipeline._size(plain) == 1


def test_packed_trailing_arguments_are_written_as_the_arguments_themselves() -> None:
    rng = random.Random(19)
    for _ in range(100):
        head = random_args(rng)[:rng.randrange(1, 6)]
        tail = [as_bytes(random_arg(rng)) for _ in range(rng.randrange(0, 1100))]
        assert pack((*head, PackedArgs(tail))) == reference((*head, *tail))


def test_a_packed_transaction_body_counts_its_commands() -> None:
    redis = Redis.from_url("redis://127.0.0.1:1/0", protocol=2)
    queue = CommandQueue(redis, {"echo": Script("return 1")})
    rng = random.Random(20)
    body = [random_args(rng) for _ in range(3)]
    tx = ("MULTI", Packed(b"".join(reference(c) for c in body), 3), ("INCR", "n"))
    assert redis_pipeline._size(tx) == 6  # MULTI, 3 packed, INCR, EXEC
    assert queue._pack_batch([(tx, None)]) == (
        reference(("MULTI",)) + b"".join(reference(c) for c in body)
        + reference(("INCR", "n")) + reference(("EXEC",)))
    # its replies: MULTI's, one QUEUED each, EXEC's (the transaction's result)
    replies: List[Any] = [b"OK", b"QUEUED", b"QUEUED", b"QUEUED", b"QUEUED", [1, 2, 3, 4], 7]
    assert CommandQueue._results([(tx, None), (("GET", "k"), None)], replies) == [[1, 2, 3, 4], 7]


def test_an_aborted_packed_transaction_says_why() -> None:
    from redis.exceptions import ExecAbortError, ResponseError
    tx = ("MULTI", Packed(reference(("SET", "a", "1")) * 2, 2))
    oom = ResponseError("OOM command not allowed")
    replies: List[Any] = [b"OK", b"QUEUED", oom, ExecAbortError("EXECABORT")]
    assert CommandQueue._results([(tx, None)], replies) == [oom]


async def test_a_transaction_refuses_a_script_call_but_takes_a_packed_body() -> None:
    redis = Redis.from_url("redis://127.0.0.1:1/0", protocol=2)
    queue = CommandQueue(redis, {})
    with pytest.raises(ValueError):
        queue.push(("MULTI", ("EVALSHA", "echo", 0)))
    queue.push(("MULTI", Packed(reference(("INCR", "n")), 1)))
    assert queue._pending_cmds == 3  # MULTI, INCR, EXEC
