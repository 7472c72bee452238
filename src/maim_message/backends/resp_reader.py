"""A sans-I/O RESP2 reply parser for the cluster's command queue.

redis-py reads one reply per await (an async timeout context, its parser, a readline each):
~10 us of node CPU per reply, paid for every ``+QUEUED`` of a transaction. This parser takes
bytes as they arrive, in any split, and hands out every complete reply in one call, parsing
from one bytes buffer with ``find`` and slices (no per-byte loop, no generator per reply).

Replies come out as redis-py gives them with ``decode_responses`` off on RESP2: bulk and
simple strings as bytes, integers as int, nil as None, arrays as lists, and error replies as
exception *instances* (redis-py's classes, so ``NoScriptError`` still marks a flushed script
cache), also inside arrays (an EXEC reply keeps each command's error in its slot).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Type

from redis import exceptions as _rx

from ..errors import ClusterError

__all__ = ["RespProtocolError", "RespReader", "error_from", "reply_text"]


class RespProtocolError(ClusterError):
    """The byte stream is not RESP2: the connection is out of step and must be dropped."""


# Error codes redis-py turns into its own classes (their message loses the code, as there).
# LOADING (a restarted Redis still reading its AOF) is a ConnectionError there, not a
# ResponseError: the command did not run and is to be retried, as redis-py's reader made
# the queue do.
_ERROR_CLASSES: Dict[str, Type[_rx.RedisError]] = {"ERR": _rx.ResponseError}
for _code, _name in (("NOSCRIPT", "NoScriptError"), ("EXECABORT", "ExecAbortError"),
                     ("OOM", "OutOfMemoryError"), ("LOADING", "BusyLoadingError"),
                     ("READONLY", "ReadOnlyError"), ("NOPERM", "NoPermissionError")):
    _cls = getattr(_rx, _name, None)
    if isinstance(_cls, type) and issubclass(_cls, (_rx.ResponseError,
                                                    _rx.ConnectionError)):
        _ERROR_CLASSES[_code] = _cls


def reply_text(value: Any) -> str:
    """A bulk or simple string reply (bytes) as text; anything else as ``str()`` gives it."""
    return value.decode() if isinstance(value, bytes) else str(value)


def error_from(line: bytes) -> _rx.RedisError:
    """The exception for an error reply's text (without the leading ``-``)."""
    text = line.decode("utf-8", "replace")
    code, _, rest = text.partition(" ")
    cls = _ERROR_CLASSES.get(code)
    if cls is None:
        return _rx.ResponseError(text)
    exc = cls(rest)
    exc.status_code = code  # as redis-py 8 sets it (older versions have no such field)
    return exc


_CRLF = b"\r\n"
_PLUS, _DOLLAR, _COLON, _STAR, _MINUS = 43, 36, 58, 42, 45  # b"+$:*-"


class RespReader:
    """Feed bytes with :meth:`feed`; take complete replies with :meth:`take`.

    Consumed bytes are dropped only when new data is appended (one copy of the unread
    tail per feed); while a reply is known to need more bytes than arrived (a large bulk),
    chunks wait in a list and are joined once, so a 1 MiB bulk costs no quadratic copying.
    """

    __slots__ = ("_buf", "_chunks", "_have", "_need", "_pos", "_short", "errors")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0  # first unread byte in _buf
        self._chunks: List[bytes] = []  # fed, not yet joined into _buf
        self._have = 0  # unread bytes in _buf and _chunks
        self._need = 0  # unread bytes the next reply needs at least (0: unknown)
        self._short = 0  # where an incomplete parse ran out: the buffer must reach it
        self.errors = 0  # error replies parsed so far (a caller skips scanning when unchanged)

    def clear(self) -> None:
        """Forget everything fed (the connection was dropped: partial replies are void)."""
        self._buf = b""
        self._pos = 0
        self._chunks.clear()
        self._have = self._need = 0

    @property
    def has_unread(self) -> bool:
        """Bytes fed and not yet taken as replies are held."""
        return self._have > 0

    def feed(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._have += len(data)

    def _join(self) -> bool:
        """Bring fed chunks into the parse buffer; False while the next reply can't fit."""
        if not self._chunks:
            return True
        if self._have < self._need:
            return False
        pos = self._pos
        if pos == len(self._buf) and len(self._chunks) == 1:
            self._buf = self._chunks[0]
        else:
            self._buf = b"".join([self._buf[pos:], *self._chunks] if pos else
                                 [self._buf, *self._chunks])
        self._chunks.clear()
        self._pos = 0
        return True

    def take(self, limit: int = -1) -> List[Any]:
        """Every complete reply fed so far (at most ``limit`` if >= 0), in order."""
        out: List[Any] = []
        if not self._join():
            return out
        buf, pos = self._buf, self._pos
        parse = self._parse
        size = len(buf)
        while pos < size and limit != len(out):
            # the common replies inline; nested and partial ones go through _parse
            end = buf.find(_CRLF, pos)
            if end < 0:
                self._short = size + 1
                break
            kind = buf[pos]
            if kind == _PLUS:
                out.append(buf[pos + 1:end])  # OK, QUEUED: one small slice each
                pos = end + 2
                continue
            if kind == _COLON:
                out.append(_int(buf, pos, end))
                pos = end + 2
                continue
            got = parse(buf, pos)
            if got is None:
                break
            out.append(got[0])
            pos = got[1]
        self._have -= pos - self._pos
        self._pos = pos
        self._need = self._short - pos if pos < size and limit != len(out) else 0
        return out

    def _parse(self, buf: bytes, pos: int) -> Optional[Tuple[Any, int]]:
        """The reply at ``pos`` and where the next starts; None if it is incomplete."""
        end = buf.find(_CRLF, pos)
        if end < 0:
            self._short = len(buf) + 1
            return None
        kind = buf[pos]
        if kind == _DOLLAR:
            length = _int(buf, pos, end)
            if length < 0:
                if length != -1:
                    raise RespProtocolError(f"bad bulk length {length}")
                return None, end + 2
            stop = end + 2 + length
            if len(buf) < stop + 2:
                self._short = stop + 2
                return None
            if buf[stop:stop + 2] != _CRLF:
                raise RespProtocolError("bulk string not followed by CRLF")
            return buf[end + 2:stop], stop + 2
        if kind == _PLUS:
            return buf[pos + 1:end], end + 2
        if kind == _COLON:
            return _int(buf, pos, end), end + 2
        if kind == _STAR:
            count = _int(buf, pos, end)
            if count < 0:
                if count != -1:
                    raise RespProtocolError(f"bad array length {count}")
                return None, end + 2
            items: List[Any] = []
            pos = end + 2
            parse = self._parse
            for _ in range(count):  # integers and bulks inline (an EXEC's, an XRANGE's)
                end = buf.find(_CRLF, pos)
                kind = buf[pos] if end >= 0 else 0
                if kind == _COLON:
                    items.append(_int(buf, pos, end))
                    pos = end + 2
                    continue
                if kind == _DOLLAR:
                    length = _int(buf, pos, end)
                    if length >= 0:
                        stop = end + 2 + length
                        if len(buf) >= stop + 2 and buf[stop:stop + 2] == _CRLF:
                            items.append(buf[end + 2:stop])
                            pos = stop + 2
                            continue
                got = parse(buf, pos)  # the rest, nil, short or broken: the general path
                if got is None:
                    return None
                items.append(got[0])
                pos = got[1]
            return items, pos
        if kind == _MINUS:
            self.errors += 1
            return error_from(buf[pos + 1:end]), end + 2
        raise RespProtocolError(f"unexpected reply type byte {bytes([kind])!r} "
                                f"in {buf[pos:pos + 32]!r}")


def _int(buf: bytes, pos: int, end: int) -> int:
    try:
        return int(buf[pos + 1:end])
    except ValueError:
        raise RespProtocolError(f"bad number in {buf[pos:end]!r}") from None
