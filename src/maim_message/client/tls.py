"""The client side's one TLS builder (TLS >= 1.2, verification on by default).

``client_ssl_context`` maps ClientConfig's ssl_* fields; the legacy ``MessageClient``
maps its ``ssl_verify`` argument onto the same :func:`build_client_context`.
"""

from __future__ import annotations

import ssl
from typing import Any, Optional

from ..errors import ConfigError


def build_client_context(
    *, verify: bool = True, ca_certs: Optional[str] = None, certfile: Optional[str] = None,
    keyfile: Optional[str] = None, check_hostname: bool = True,
) -> ssl.SSLContext:
    """System CAs plus ``ca_certs``; ``certfile``/``keyfile`` for mutual TLS."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca_certs:
            ctx.load_verify_locations(ca_certs)
        if certfile:
            ctx.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files: {exc}") from exc
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif not check_hostname:
        ctx.check_hostname = False
    return ctx


def client_ssl_context(config: Any) -> ssl.SSLContext:
    return build_client_context(
        verify=bool(config.ssl_verify), ca_certs=config.ssl_ca_certs,
        certfile=config.ssl_certfile, keyfile=config.ssl_keyfile,
        check_hostname=bool(config.ssl_check_hostname),
    )
