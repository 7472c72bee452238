"""The hub's key table: API key -> user id and allowed platforms, checked in constant time.

Lookups hash the candidate (SHA-256) to find the entry, then confirm it with
``hmac.compare_digest``; the time taken does not depend on how much of a key matched.
The table holds only digests, so a key configured as ``key_sha256`` works the same.
Keys are never logged: only :func:`~maim_message.core.identity.fingerprint` labels.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import AbstractSet, Any, Callable, Dict, Iterable, List, Optional, Tuple

from ..core.identity import fingerprint
from ..core.redact import log_safe
from .config import KeyEntry
from .settings import key_digest

logger = logging.getLogger(__name__)

# Reasons a handshake is refused (label values of maim_hub_handshakes_rejected_total).
MISSING_KEY = "missing_key"
UNKNOWN_KEY = "unknown_key"
PLATFORM_NOT_ALLOWED = "platform_not_allowed"
REVOKED_KEY = "revoked_key"
SHUTTING_DOWN = "shutting_down"
REJECT_REASONS = (MISSING_KEY, UNKNOWN_KEY, PLATFORM_NOT_ALLOWED, REVOKED_KEY, SHUTTING_DOWN)

GENERATED_USER = "default"


def generate_key() -> str:
    """A fresh random API key (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


_digest = key_digest


class KeyTable:
    """The configured keys; ``lookup`` is constant-time in the key's content.

    ``revoked``: digests refused although configured (revoked at run time; a reload
    keeps them refused).
    """

    def __init__(
        self, entries: Iterable[KeyEntry], revoked: AbstractSet[bytes] = frozenset()
    ) -> None:
        self._entries: List[KeyEntry] = list(entries)
        self._by_digest: Dict[bytes, KeyEntry] = {e.digest: e for e in self._entries}
        # user -> (entry, its digest): KeyEntry.digest hashes the key on every call
        self._by_user: Dict[str, List[Tuple[KeyEntry, bytes]]] = {}
        for digest, entry in self._by_digest.items():
            self._by_user.setdefault(entry.user, []).append((entry, digest))
        self._decoy = _digest(generate_key())
        self.revoked = revoked

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> List[KeyEntry]:
        return list(self._entries)

    def lookup(self, candidate: Optional[str]) -> Optional[KeyEntry]:
        if not candidate:
            return None
        digest = _digest(candidate)
        entry = self._by_digest.get(digest)
        expected = entry.digest if entry is not None else self._decoy
        if hmac.compare_digest(expected, digest) and entry is not None:
            return None if digest in self.revoked else entry
        return None

    def is_revoked(self, candidate: Optional[str]) -> bool:
        return bool(candidate) and _digest(candidate or "") in self.revoked

    def by_label(self, label: str) -> List[KeyEntry]:
        """The entries whose fingerprint is ``label`` (``key#1a2b3c4d``)."""
        return [e for e in self._entries if e.label == label]

    def users(self) -> List[str]:
        return sorted({e.user for e in self._entries})

    def may_connect(self, user: str, platform: str) -> bool:
        """Some key of ``user`` that is not revoked may connect on ``platform``: a message
        for (user, platform) can be delivered some day."""
        revoked = self.revoked
        return any(entry.allows(platform) and (not revoked or digest not in revoked)
                   for entry, digest in self._by_user.get(user, ()))


class HubAuth:
    """``on_auth`` / ``on_auth_extract_user`` for a :class:`WebSocketServer` from a key table.

    ``on_reject(reason)`` is called once per refused handshake (for metrics).
    """

    def __init__(
        self, table: KeyTable, on_reject: Optional[Callable[[str], None]] = None
    ) -> None:
        self.table = table
        self.accepting = True
        self._on_reject = on_reject

    def _reject(self, reason: str, metadata: Dict[str, Any]) -> bool:
        if self._on_reject is not None:
            self._on_reject(reason)
        logger.info("handshake refused (%s): key=%s platform=%s ip=%s", reason,
                    fingerprint(metadata.get("api_key")), log_safe(metadata.get("platform")),
                    metadata.get("client_ip"))
        return False

    def on_auth(self, metadata: Dict[str, Any]) -> bool:
        if not self.accepting:
            return self._reject(SHUTTING_DOWN, metadata)
        api_key = metadata.get("api_key") or ""
        if not api_key:
            return self._reject(MISSING_KEY, metadata)
        entry = self.table.lookup(api_key)
        if entry is None:
            if self.table.is_revoked(api_key):
                return self._reject(REVOKED_KEY, metadata)
            return self._reject(UNKNOWN_KEY, metadata)
        if not entry.allows(str(metadata.get("platform", ""))):
            return self._reject(PLATFORM_NOT_ALLOWED, metadata)
        return True

    def on_auth_extract_user(self, metadata: Dict[str, Any]) -> Optional[str]:
        """The user id of ``metadata["api_key"]`` (at connect time and for outgoing dims)."""
        entry = self.table.lookup(metadata.get("api_key"))
        return entry.user if entry is not None else None
