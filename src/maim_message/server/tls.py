"""Building the server's TLS context from ServerConfig's ssl_* fields."""

from __future__ import annotations

import ssl
from typing import Any, Dict, Optional

from ..errors import ConfigError


def server_ssl_context(
    certfile: Optional[str], keyfile: Optional[str], ca_certs: Optional[str] = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """TLS >= 1.2; with ``require_client_cert`` a client certificate is mandatory (mTLS)."""
    if not certfile or not keyfile:
        raise ConfigError("ssl_enabled needs ssl_certfile and ssl_keyfile")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(certfile, keyfile)
        if ca_certs:
            ctx.load_verify_locations(ca_certs)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files: {exc}") from exc
    if require_client_cert:
        if not ca_certs:
            raise ConfigError("ssl_verify (client certificates) needs ssl_ca_certs")
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif ca_certs:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def describe_peer_cert(cert: Optional[Dict[str, Any]]) -> str:
    """A readable subject string of a peer certificate ('' when there is none)."""
    if not cert:
        return ""
    parts = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            parts.append(f"{key}={value}")
    not_after = cert.get("notAfter")
    if not_after:
        parts.append(f"notAfter={not_after}")
    return ", ".join(parts)
