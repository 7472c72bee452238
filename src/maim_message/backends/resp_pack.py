"""RESP2 command encoding for the cluster's command queue (no I/O).

An argument is written as a bulk string: ``bytes`` as they are, ``str`` as UTF-8, ``int``
in decimal, any other bytes-like object as it is. Headers for lengths below ``_HEADERS``
are made once, and exact ``bytes``/``str`` skip the ``isinstance`` tests: the queue packs
every argument of every command it sends, so this is per-message work.
"""

from __future__ import annotations

from typing import Any, List, Tuple

__all__ = ["pack", "pack_into"]

_HEADERS = 1024  # lengths whose ``$<n>\r\n`` / ``*<n>\r\n`` headers are made once
_BULK_HEADERS = tuple(b"$%d\r\n" % n for n in range(_HEADERS))
_ARRAY_HEADERS = tuple(b"*%d\r\n" % n for n in range(_HEADERS))
_CRLF = b"\r\n"


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


def pack(args: Tuple[Any, ...]) -> bytes:
    """One command in RESP (arguments: bytes, str or int)."""
    out: List[bytes] = []
    pack_into(out, args)
    return b"".join(out)
