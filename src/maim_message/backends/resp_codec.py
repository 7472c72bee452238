"""The RESP2 reply reader the cluster reads with: hiredis's C parser when it is installed.

Parsing every reply of the command queue and every channel message is per-message work on
a cluster node (~0.25 us per relayed message in pure Python, in a sharded run's profile).
hiredis (redis-py's own optional accelerator; the ``cluster`` extra installs it) parses in
C, about four times as fast on a batch's replies. Without it the project's pure-Python
parser (``resp_reader``) is used, with the same results: bytes, int, None, lists, and
redis-py's exception classes for error replies, also inside arrays.

Packing stays in Python (``resp_pack``): hiredis's ``pack_command`` is faster on short
arguments but copies each payload twice, and over a relayed message it measured no faster.

``MAIM_MESSAGE_PURE_RESP=1`` in the environment picks the pure-Python reader even when
hiredis is installed (to compare them, or to rule the C code out).

Two differences, both on input Redis never sends on a RESP2 connection: hiredis also
parses RESP3 types, and it does not check the CRLF after a bulk string (it skips two
bytes), so a stream out of step there may be read on, where the pure-Python reader
raises. The queue still drops a connection whose replies outnumber its commands.
"""

from __future__ import annotations

import os
from typing import Any, Callable, List, Type, Union

from redis import exceptions as _rx

from . import resp_reader
from .resp_reader import RespProtocolError, error_from

__all__ = ["NATIVE", "NativeRespReader", "RespReader"]

_Reader: Any = None
if os.environ.get("MAIM_MESSAGE_PURE_RESP", "") in ("", "0"):
    try:
        import hiredis
    except ImportError:  # the pure-Python codec, as without the extra
        pass
    else:
        _Reader = getattr(hiredis, "Reader", None)

NATIVE = _Reader is not None
"""True when hiredis parses the replies."""


class NativeRespReader:
    """:class:`resp_reader.RespReader`'s interface on hiredis's reader."""

    __slots__ = ("_gets", "_reader", "errors")

    def __init__(self) -> None:
        self.errors = 0  # error replies parsed so far (a caller skips scanning when unchanged)
        self._reader: Any = None
        self._gets: Callable[[], Any] = _no_reply
        self.clear()

    def _error(self, text: str) -> _rx.RedisError:
        self.errors += 1
        return error_from(text.encode("utf-8", "replace"))

    def clear(self) -> None:
        """Forget everything fed (the connection was dropped: partial replies are void)."""
        assert _Reader is not None
        self._reader = _Reader(protocolError=RespProtocolError, replyError=self._error,
                               notEnoughData=_MORE)
        self._gets = self._reader.gets

    @property
    def has_unread(self) -> bool:
        """Bytes fed and not yet looked at are held (hiredis keeps the start of a partly
        parsed reply to itself: a caller asks after taking the replies it expects)."""
        return bool(self._reader.has_data())

    def feed(self, data: bytes) -> None:
        if data:
            self._reader.feed(data)

    def take(self, limit: int = -1) -> List[Any]:
        """Every complete reply fed so far (at most ``limit`` if >= 0), in order."""
        out: List[Any] = []
        gets = self._gets
        while limit != len(out):
            reply = gets()
            if reply is _MORE:
                break
            out.append(reply)
        return out


_MORE = object()  # hiredis's answer while a reply is incomplete


def _no_reply() -> Any:
    return _MORE


ReaderType = Union[Type[NativeRespReader], Type[resp_reader.RespReader]]
RespReader: ReaderType = NativeRespReader if NATIVE else resp_reader.RespReader
