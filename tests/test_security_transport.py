"""TLS defaults: clients verify certificates unless told not to, and neither side speaks
anything older than TLS 1.2."""

from __future__ import annotations

import asyncio
import ssl
import warnings
from pathlib import Path
from typing import Any, Optional, Tuple

import pytest
import trustme

from maim_message.client import ClientConfig, WebSocketClient
from maim_message.client.tls import client_ssl_context
from maim_message.server import ServerConfig, WebSocketServer
from maim_message.server.tls import server_ssl_context

KEY = "tls-Key-1b2c3d4e5f6a7b8c"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Tuple[str, str, str]:
    d: Path = tmp_path_factory.mktemp("sec-pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.crt"))
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(d / "server.crt"))
    leaf.private_key_pem.write_to_path(str(d / "server.key"))
    return str(d / "ca.crt"), str(d / "server.crt"), str(d / "server.key")


def legacy_client_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


async def tls_handshake(port: int, ctx: ssl.SSLContext) -> Optional[str]:
    """The negotiated TLS version, or None when the handshake failed."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 5)
    except (ssl.SSLError, ConnectionError):
        return None
    version = writer.get_extra_info("ssl_object").version()
    writer.close()
    return str(version)


async def serve_tls(ctx: ssl.SSLContext) -> Tuple[Any, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    return server, int(server.sockets[0].getsockname()[1])


def test_contexts_default_to_tls12_and_verification(certs: Tuple[str, str, str]) -> None:
    _ca, crt, key = certs
    server_ctx = server_ssl_context(crt, key)
    assert server_ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    cfg = ClientConfig(url="wss://localhost:1/ws", api_key=KEY)
    assert cfg.ssl_verify is True and cfg.ssl_check_hostname is True
    client_ctx = client_ssl_context(cfg)
    assert client_ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert client_ctx.verify_mode == ssl.CERT_REQUIRED and client_ctx.check_hostname


async def test_hub_refuses_tls_older_than_12(certs: Tuple[str, str, str]) -> None:
    _ca, crt, key = certs
    server = WebSocketServer(ServerConfig(
        host="127.0.0.1", port=0, ssl_enabled=True, ssl_certfile=crt, ssl_keyfile=key))
    await server.start()
    assert server.port is not None
    # Control: the same certificate on a server that allows TLS 1.0/1.1 tells whether this
    # machine's OpenSSL can speak them at all.
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.load_cert_chain(crt, key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    control, control_port = await serve_tls(permissive)
    try:
        for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            assert await tls_handshake(server.port, legacy_client_context(old)) is None
            # Where the old version works against a permissive server, the refusal above
            # is the hub's own minimum, not the client's inability.
            ok = await tls_handshake(control_port, legacy_client_context(old))
            assert ok in (None, "TLSv1", "TLSv1.1")
        modern = await tls_handshake(server.port, legacy_client_context(ssl.TLSVersion.TLSv1_2))
        assert modern == "TLSv1.2"
    finally:
        control.close()
        await control.wait_closed()
        await server.stop()


async def test_client_verifies_the_server_certificate_by_default(
    certs: Tuple[str, str, str],
) -> None:
    ca, crt, key = certs
    server = WebSocketServer(ServerConfig(
        host="127.0.0.1", port=0, ssl_enabled=True, ssl_certfile=crt, ssl_keyfile=key))
    await server.start()
    url = f"wss://localhost:{server.port}/ws"
    try:
        untrusting = WebSocketClient(ClientConfig(url=url, api_key=KEY, connect_timeout=3,
                                                  max_reconnect_attempts=1,
                                                  reconnect_delay=0.05))
        assert not await untrusting.connect()
        assert "CERTIFICATE_VERIFY_FAILED" in str(untrusting.get_last_error())
        await untrusting.stop()
        trusting = WebSocketClient(ClientConfig(url=url, api_key=KEY, ssl_ca_certs=ca,
                                                connect_timeout=3))
        assert await trusting.connect()
        await trusting.stop()
    finally:
        await server.stop()
