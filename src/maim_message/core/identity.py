"""Who is connecting: api_key, platform and connection uuid from the upgrade request.

Rules (wire-protocol.md §1.2): query ``api_key``/``platform`` win over the ``x-apikey`` /
``x-platform`` headers; ``x-uuid`` names the connection (else a fresh one); header names
are case-insensitive, query names are not.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class ConnectionIdentity:
    api_key: str
    platform: str
    uuid: str
    uuid_given: bool


def split_path(target: str) -> Tuple[str, Dict[str, str]]:
    """Request target -> (path, first value of each query parameter)."""
    parts = urlsplit(target)
    query: Dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(key, value)
    return parts.path, query


def identify(query: Dict[str, str], headers: Dict[str, str]) -> ConnectionIdentity:
    """``headers`` must have lower-case names."""
    api_key = query.get("api_key") or headers.get("x-apikey") or ""
    platform = query.get("platform") or headers.get("x-platform") or "unknown"
    given = headers.get("x-uuid") or ""
    return ConnectionIdentity(
        api_key=api_key,
        platform=platform,
        uuid=given or str(uuid.uuid4()),
        uuid_given=bool(given),
    )


def lower_headers(raw: Iterable[Tuple[str, str]]) -> Dict[str, str]:
    """Lower-cased header dict without ``authorization`` (0.6.8 drops it from metadata)."""
    out: Dict[str, str] = {}
    for name, value in raw:
        key = name.lower()
        if key == "authorization":
            continue
        out.setdefault(key, value)
    return out


def fingerprint(secret: Optional[str]) -> str:
    """A short, stable, non-reversible label for a secret, safe to log."""
    if not secret:
        return "<none>"
    return "key#" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def connection_metadata(
    identity: ConnectionIdentity, headers: Dict[str, str], client_ip: str, connected_at: float
) -> Dict[str, Any]:
    """The metadata dict handed to on_auth / on_auth_extract_user / on_message. Its
    ``headers`` leave out ``authorization`` (as 0.6.8's do): handlers log metadata."""
    return {
        "uuid": identity.uuid,
        "api_key": identity.api_key,
        "platform": identity.platform,
        "headers": {k: v for k, v in headers.items() if k != "authorization"},
        "client_ip": client_ip,
        "connected_at": connected_at,
        "user_agent": headers.get("user-agent", ""),
    }
