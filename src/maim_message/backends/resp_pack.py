"""RESP2 command encoding for the cluster's command queue (no I/O).

An argument is written as a bulk string: ``bytes`` as they are, ``str`` as UTF-8, ``int``
in decimal, any other bytes-like object as it is. Headers for lengths below ``_HEADERS``
are made once, and exact ``bytes``/``str`` skip the ``isinstance`` tests: the queue packs
every argument of every command it sends, so this is per-message work.

What a batch repeats per message (a send's id and payload, a frame's token) is cheaper
encoded by the code that knows its shape, in one formatting step per message instead of a
loop step per argument: :class:`Packed` is a run of whole commands already in RESP, and
:class:`PackedArgs` a command's last arguments already in RESP (the frame tokens every
shard's check carries: encoded once, written to each shard).
"""

from __future__ import annotations

from typing import Any, Iterable, List, Tuple

__all__ = ["Packed", "PackedArgs", "bulk", "command_head", "pack", "pack_into"]

_HEADERS = 1024  # lengths whose ``$<n>\r\n`` / ``*<n>\r\n`` headers are made once
_BULK_HEADERS = tuple(b"$%d\r\n" % n for n in range(_HEADERS))
_ARRAY_HEADERS = tuple(b"*%d\r\n" % n for n in range(_HEADERS))
_CRLF = b"\r\n"


class Packed:
    """``commands`` whole commands already encoded (``data``): a transaction's body that
    its builder wrote itself. It must not call a script (see ``CommandQueue.push``)."""

    __slots__ = ("commands", "data")

    def __init__(self, data: bytes, commands: int) -> None:
        self.data = data
        self.commands = commands

    def __repr__(self) -> str:
        return f"Packed({self.commands} commands, {len(self.data)} bytes)"


class PackedArgs:
    """``count`` arguments already encoded as bulk strings (``data``); only as a command's
    last argument, standing for all of them."""

    __slots__ = ("count", "data")

    def __init__(self, args: Iterable[bytes]) -> None:
        pieces = [b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in args]
        self.data = b"".join(pieces)
        self.count = len(pieces)

    def __repr__(self) -> str:
        return f"PackedArgs({self.count} arguments)"


def bulk(data: bytes) -> bytes:
    """One bulk string."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def command_head(count: int, name: bytes) -> bytes:
    """A command's array header and its name (``count`` arguments, the name included)."""
    return (_ARRAY_HEADERS[count] if count < _HEADERS else b"*%d\r\n" % count) + bulk(name)


def _encoded(arg: Any) -> Any:
    """An argument that is neither exactly ``bytes`` nor ``str``: a str subclass as UTF-8,
    an int in decimal, any other bytes-like as it is."""
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, int):
        return b"%d" % arg
    return arg


def pack_into(out: List[bytes], args: Tuple[Any, ...]) -> None:
    """Append one command's RESP pieces to ``out`` (a batch joins its pieces once)."""
    count = len(args)
    tail = args[-1]
    if tail.__class__ is PackedArgs:
        args = args[:-1]
        count += tail.count - 1
    else:
        tail = None
    append = out.append
    append(_ARRAY_HEADERS[count] if count < _HEADERS else b"*%d\r\n" % count)
    for arg in args:
        cls = arg.__class__
        if cls is not bytes:  # bytes and str, the usual arguments, without isinstance
            arg = arg.encode() if cls is str else _encoded(arg)
        size = len(arg)
        append(_BULK_HEADERS[size] if size < _HEADERS else b"$%d\r\n" % size)
        append(arg)
        append(_CRLF)
    if tail is not None:
        append(tail.data)


def pack(args: Tuple[Any, ...]) -> bytes:
    """One command in RESP (arguments: bytes, str or int)."""
    out: List[bytes] = []
    pack_into(out, args)
    return b"".join(out)
