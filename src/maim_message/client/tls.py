"""Building the client's TLS context from ClientConfig's ssl_* fields (verify on by default)."""

from __future__ import annotations

import ssl
from typing import Any

from ..errors import ConfigError


def client_ssl_context(config: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if config.ssl_ca_certs:
            ctx.load_verify_locations(config.ssl_ca_certs)
        if config.ssl_certfile:
            ctx.load_cert_chain(config.ssl_certfile, config.ssl_keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files: {exc}") from exc
    if not config.ssl_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif not config.ssl_check_hostname:
        ctx.check_hostname = False
    return ctx
