"""Who may use the admin plane: a bearer token checked in constant time.

Accepted as ``Authorization: Bearer <token>`` (curl, Prometheus ``authorization``, the
live page) or as the password of ``Authorization: Basic`` (any user name; Prometheus
``basic_auth``, ``curl -u admin:<token>``). Only SHA-256 digests are kept, so a token
configured as ``token_sha256`` works the same.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from typing import Iterable, List, Mapping, Optional

from .settings import AdminSettings, key_digest

REALM = 'Bearer realm="maim_message hub"'


def generate_token() -> str:
    """A fresh random admin token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def presented_token(headers: Mapping[str, str]) -> Optional[str]:
    """The token of an ``Authorization`` header (Bearer, or Basic's password)."""
    value = headers.get("authorization", "")
    scheme, _, credentials = value.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


class TokenCheck:
    """Accepts any of a few tokens, given as plain text or as SHA-256 hex digests."""

    def __init__(self, tokens: Iterable[Optional[str]] = (),
                 digests_hex: Iterable[Optional[str]] = ()) -> None:
        self._digests: List[bytes] = [key_digest(t) for t in tokens if t]
        self._digests += [bytes.fromhex(h) for h in digests_hex if h]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def allows(self, headers: Mapping[str, str]) -> bool:
        token = presented_token(headers)
        if not token:
            return False
        digest = key_digest(token)
        ok = False
        for expected in self._digests:  # every one compared: no early exit
            ok |= hmac.compare_digest(expected, digest)
        return ok


def admin_check(settings: AdminSettings, generated: Optional[str] = None) -> TokenCheck:
    return TokenCheck([settings.token, generated], [settings.token_sha256])


def metrics_check(settings: AdminSettings, generated: Optional[str] = None) -> TokenCheck:
    """The admin token or the metrics-only token opens ``/metrics``."""
    return TokenCheck([settings.token, generated, settings.metrics_token],
                      [settings.token_sha256, settings.metrics_token_sha256])
