"""Keeping secrets out of log output that we do not format ourselves.

Our own log calls only ever show :func:`~.identity.fingerprint` labels. Third-party
loggers are different: at DEBUG, ``websockets`` logs every request header (``x-apikey``)
and the request path (``?api_key=...``) and the first bytes of every frame. The client
hands ``websockets`` a :class:`RedactingLogger` that rewrites each record before it is
emitted, replacing every known secret (raw or URL-encoded) by its fingerprint.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any, Iterable, List, MutableMapping, Optional, Tuple
from urllib.parse import quote, quote_plus, unquote

from .identity import fingerprint

MIN_SECRET_LENGTH = 4  # shorter "secrets" are not secret, and replacing them garbles logs

# Line breaks and other control characters (C0, DEL, C1, Unicode line/paragraph separators)
# in a request-derived value would let a client forge log lines.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
LOG_FIELD_LIMIT = 200


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def log_safe(value: Any, limit: int = LOG_FIELD_LIMIT) -> str:
    """A request-derived value (platform, uuid, user id, path...) made safe for one log line:
    control characters escaped (no forged lines), truncated to ``limit`` characters."""
    text = value if type(value) is str else str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    if _UNSAFE.search(text) is not None:
        text = _UNSAFE.sub(_escape, text)
    return text


def _forms(secret: str) -> List[str]:
    forms = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}
    return sorted((f for f in forms if f), key=len, reverse=True)


class Redactor:
    """Replaces each secret (and its URL-encoded forms) in a text by the secret's label."""

    __slots__ = ("_pairs",)

    def __init__(self, secrets: Iterable[Optional[str]] = ()) -> None:
        self._pairs: List[Tuple[str, str]] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: Optional[str]) -> None:
        if not secret or len(secret) < MIN_SECRET_LENGTH:
            return
        label = fingerprint(secret)
        for form in _forms(secret):
            if all(form != known for known, _ in self._pairs):
                self._pairs.append((form, label))
        self._pairs.sort(key=lambda pair: len(pair[0]), reverse=True)

    def __call__(self, text: str) -> str:
        for secret, label in self._pairs:
            if secret in text:
                text = text.replace(secret, label)
        return text

    def __bool__(self) -> bool:
        return bool(self._pairs)


class RedactingLogger(logging.LoggerAdapter):
    """A logger adapter that formats each record itself and redacts it before emitting.

    Tracebacks are formatted and redacted too (an exception message may quote a URL).
    Nothing is formatted when the level is disabled.
    """

    def __init__(self, logger: logging.Logger, redactor: Redactor) -> None:
        super().__init__(logger, {})
        self.redactor = redactor

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> Tuple[Any, Any]:
        return msg, kwargs

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = " ".join(str(part) for part in (msg, *args))
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            if exc_info is True:
                import sys

                exc_info = sys.exc_info()
            elif isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            if exc_info[0] is not None:
                text += "\n" + "".join(traceback.format_exception(*exc_info)).rstrip()
        kwargs.pop("stack_info", None)
        kwargs.setdefault("stacklevel", 2)
        self.logger.log(level, "%s", self.redactor(text), **kwargs)


def redacting_logger(name: str, secrets: Iterable[Optional[str]]) -> RedactingLogger:
    """``logging.getLogger(name)`` wrapped so that ``secrets`` never reach a handler."""
    return RedactingLogger(logging.getLogger(name), Redactor(secrets))


def pair_label(pair: Tuple[str, str]) -> str:
    """A (user id, platform) pair for a log line: the user id is the API key in the
    usual setup, so only its fingerprint (the label connection logs show) appears."""
    user, platform = pair
    return f"{fingerprint(user)}/{log_safe(platform, 40)}"


_SECRET_PARAMS = ("password", "username", "user", "ssl_password")


def safe_url(url: str) -> str:
    """The URL as logs may show it: query parameters naming a secret (``?password=``,
    which redis-py also reads, percent-encoded or not) left out, then everything before
    the last ``@`` masked (a user and password, even one with an unencoded ``/``, ``?``
    or ``#`` in it). Works on strings that are not URLs too (no ``scheme://``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest, _q, query = rest.partition("?")
    query, _h, fragment = query.partition("#")
    kept = "&".join(p for p in query.split("&")
                    if p and unquote(p.split("=", 1)[0]).lower() not in _SECRET_PARAMS)
    rest = rest + (f"?{kept}" if kept else "") + (f"#{fragment}" if fragment else "")
    if "@" in rest:  # (a "?" or "#" in a password split the URL above: masked here)
        rest = "***@" + rest.rpartition("@")[2]
    return (scheme + "://" if sep else "") + rest
