"""TLS with trustme certificates: server-only TLS, mutual TLS, refusals, hostname checks,
``wss://`` detection and the spec's TLS factory calls (api_server_usage_guide "SSL/TLS")."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional

import pytest
import trustme

from maim_message.client import (
    ClientConfig,
    WebSocketClient,
    WebSocketMultiClient,
    create_client_config,
    create_ssl_client_config,
)
from maim_message.client_factory import create_client_config as factory_client_config
from maim_message.server import (
    ServerConfig,
    WebSocketServer,
    create_server_config,
    create_ssl_server_config,
)

from .helpers_api import Inbox, make_message


@dataclass
class Pki:
    ca: str
    server_crt: str
    server_key: str
    client_crt: str
    client_key: str
    other_crt: str  # a server cert for another host name
    other_key: str
    foreign_ca: str  # a CA that signed nothing we use


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d: Path = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.crt"))
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(d / "server.crt"))
    server.private_key_pem.write_to_path(str(d / "server.key"))
    client = ca.issue_cert("maim-client.example", common_name="maim-client")
    client.cert_chain_pems[0].write_to_path(str(d / "client.crt"))
    client.private_key_pem.write_to_path(str(d / "client.key"))
    other = ca.issue_cert("other.example")
    other.cert_chain_pems[0].write_to_path(str(d / "other.crt"))
    other.private_key_pem.write_to_path(str(d / "other.key"))
    trustme.CA().cert_pem.write_to_path(str(d / "foreign.crt"))
    return Pki(*(str(d / n) for n in ("ca.crt", "server.crt", "server.key", "client.crt",
                                      "client.key", "other.crt", "other.key", "foreign.crt")))


class TlsHub:
    def __init__(self, server: WebSocketServer, inbox: Inbox, seen: List[Dict[str, Any]]) -> None:
        self.server = server
        self.inbox = inbox
        self.seen = seen

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port


async def start_hub(config: ServerConfig) -> TlsHub:
    inbox = Inbox()
    seen: List[Dict[str, Any]] = []

    def auth(meta: Dict[str, Any]) -> bool:
        seen.append(meta)
        return bool(meta["api_key"])

    config.on_auth = auth
    config.on_auth_extract_user = lambda meta: "u_" + meta["api_key"]
    config.on_message = inbox
    server = WebSocketServer(config)
    await server.start()
    return TlsHub(server, inbox, seen)


@pytest.fixture
async def tls_hub(pki: Pki) -> AsyncIterator[TlsHub]:
    hub = await start_hub(create_ssl_server_config(
        host="127.0.0.1", port=0, ssl_certfile=pki.server_crt, ssl_keyfile=pki.server_key))
    try:
        yield hub
    finally:
        await hub.server.stop()


@pytest.fixture
async def mtls_hub(pki: Pki) -> AsyncIterator[TlsHub]:
    hub = await start_hub(create_ssl_server_config(
        host="127.0.0.1", port=0, ssl_certfile=pki.server_crt, ssl_keyfile=pki.server_key,
        ssl_ca_certs=pki.ca, ssl_verify=True))
    try:
        yield hub
    finally:
        await hub.server.stop()


async def round_trip(config: ClientConfig, hub: TlsHub) -> Optional[str]:
    """Connect, send one message; the text the server got, or None if connect failed."""
    client = WebSocketClient(config)
    await client.start()
    try:
        if not await client.connect():
            return None
        assert await client.send_message(make_message("secure", config.api_key, "qq"))
        message, _ = await hub.inbox.next()
        return str(message.message_segment.data)
    finally:
        await client.stop()


def fast_fail(**kwargs: Any) -> Dict[str, Any]:
    return {"max_reconnect_attempts": 1, "reconnect_delay": 0.01, "connect_timeout": 3.0,
            **kwargs}


async def test_server_tls_with_ca_and_wss_detection(tls_hub: TlsHub, pki: Pki) -> None:
    url = f"wss://localhost:{tls_hub.port}/ws"
    # the factory sees wss:// and turns TLS on
    config = create_client_config(url, "k", platform="qq", ssl_ca_certs=pki.ca)
    assert config.ssl_enabled is True
    assert await round_trip(config, tls_hub) == "secure"
    config = factory_client_config(url, "k", platform="qq", ssl_ca_certs=pki.ca)
    assert config.ssl_enabled is True
    # a plain ClientConfig with a wss:// URL uses its ssl_* fields too
    config = ClientConfig(url=url, api_key="k", platform="qq", ssl_ca_certs=pki.ca)
    assert await round_trip(config, tls_hub) == "secure"
    assert config.ssl_enabled is True
    assert tls_hub.seen[-1]["client_cert"] == ""  # no client certificate presented


async def test_client_without_the_ca_is_refused(tls_hub: TlsHub, pki: Pki) -> None:
    url = f"wss://localhost:{tls_hub.port}/ws"
    config = create_client_config(url, "k", **fast_fail())
    client = WebSocketClient(config)
    try:
        assert await client.connect() is False
        assert "CERTIFICATE_VERIFY_FAILED" in (client.get_last_error() or "")
    finally:
        await client.stop()
    config = create_client_config(url, "k", ssl_ca_certs=pki.foreign_ca, **fast_fail())
    assert await round_trip(config, tls_hub) is None
    # ssl_verify=False accepts anything
    config = create_client_config(url, "k", ssl_verify=False)
    assert await round_trip(config, tls_hub) == "secure"
    assert tls_hub.seen and all(m["api_key"] == "k" for m in tls_hub.seen)


async def test_hostname_mismatch_refused_unless_check_disabled(pki: Pki) -> None:
    hub = await start_hub(create_ssl_server_config(
        host="127.0.0.1", port=0, ssl_certfile=pki.other_crt, ssl_keyfile=pki.other_key))
    try:
        url = f"wss://127.0.0.1:{hub.port}/ws"
        client = WebSocketClient(create_client_config(url, "k", ssl_ca_certs=pki.ca,
                                                      **fast_fail()))
        try:
            assert await client.connect() is False
            assert "match" in (client.get_last_error() or "").lower()
        finally:
            await client.stop()
        config = create_client_config(url, "k", ssl_ca_certs=pki.ca, ssl_check_hostname=False)
        assert await round_trip(config, hub) == "secure"
    finally:
        await hub.server.stop()


async def test_mutual_tls_requires_client_certificate(mtls_hub: TlsHub, pki: Pki) -> None:
    url = f"wss://localhost:{mtls_hub.port}/ws"
    without = create_client_config(url, "k", ssl_ca_certs=pki.ca, **fast_fail())
    assert await round_trip(without, mtls_hub) is None
    assert mtls_hub.seen == []  # refused during the TLS handshake, before auth
    with_cert = create_client_config(url, "k", ssl_ca_certs=pki.ca,
                                     ssl_certfile=pki.client_crt, ssl_keyfile=pki.client_key)
    assert await round_trip(with_cert, mtls_hub) == "secure"
    assert "commonName=maim-client" in mtls_hub.seen[-1]["client_cert"]


async def test_multi_client_over_mutual_tls(mtls_hub: TlsHub, pki: Pki) -> None:
    client = WebSocketMultiClient()
    url = f"wss://localhost:{mtls_hub.port}/ws"
    client.register_connection("secure", url, "k1", "qq", ssl_ca_certs=pki.ca,
                               ssl_certfile=pki.client_crt, ssl_keyfile=pki.client_key)
    client.register_connection("nocert", url, "k2", "qq", ssl_ca_certs=pki.ca,
                               **fast_fail())
    async with client:
        assert await client.connect() == {"secure": True, "nocert": False}
        assert await client.send_message("secure", make_message("m", "k1", "qq"))
        message, meta = await mtls_hub.inbox.next()
        assert message.message_segment.data == "m" and meta["user_id"] == "u_k1"


async def test_spec_tls_factory_calls_as_written(pki: Pki) -> None:
    """The spec's create_ssl_server_config / create_ssl_client_config / ClientConfig calls,
    with real files and a free port instead of the spec's placeholders."""
    messages: asyncio.Queue[Any] = asyncio.Queue()

    async def ssl_auth_handler(metadata: dict) -> bool:
        return metadata.get("api_key", "") in ["secure_key_001", "secure_key_002"]

    async def ssl_extract_user_handler(metadata: dict) -> str:
        return f"secure_user_{metadata.get('api_key', '').split('_')[-1]}"

    async def ssl_message_handler(message: Any, metadata: dict) -> None:
        messages.put_nowait((message.message_segment.data, metadata.get("user_id")))

    config = create_ssl_server_config(
        host="0.0.0.0", port=0, ssl_certfile=pki.server_crt, ssl_keyfile=pki.server_key,
        ssl_ca_certs=pki.ca, ssl_verify=True,
        on_auth=ssl_auth_handler, on_auth_extract_user=ssl_extract_user_handler,
        on_message=ssl_message_handler,
        log_level="INFO", enable_connection_log=True, enable_message_log=True,
    )
    assert config.ssl_enabled and config.ssl_verify and config.path == "/ws"
    assert create_ssl_server_config().port == 18044
    plain = ServerConfig(host="0.0.0.0", port=18044, path="/ws", ssl_enabled=True,
                         ssl_certfile=pki.server_crt, ssl_keyfile=pki.server_key,
                         ssl_ca_certs=pki.ca, ssl_verify=False,
                         on_auth_extract_user=lambda metadata: metadata["api_key"])
    assert plain.validate()
    server = WebSocketServer(config)
    await server.start()
    port = server.port
    try:
        by_url = create_ssl_client_config(
            url=f"wss://localhost:{port}/ws", api_key="secure_key_001",
            ssl_ca_certs=pki.ca, ssl_verify=True, ssl_check_hostname=True,
            ssl_certfile=pki.client_crt, ssl_keyfile=pki.client_key,
        )
        by_host = create_ssl_client_config(
            host="localhost", port=port, api_key="secure_key_002",
            ssl_ca_certs=pki.ca, ssl_certfile=pki.client_crt, ssl_keyfile=pki.client_key,
            ssl_verify=True, ssl_check_hostname=False,
        )
        assert by_host.url == f"wss://localhost:{port}/ws" and by_host.ssl_enabled
        standard = ClientConfig(url=f"wss://localhost:{port}/ws", api_key="secure_key_001",
                                ssl_enabled=True, ssl_verify=True, ssl_ca_certs=pki.ca,
                                ssl_check_hostname=True, ssl_certfile=pki.client_crt,
                                ssl_keyfile=pki.client_key)
        for cfg, user in ((by_url, "secure_user_001"), (by_host, "secure_user_002"),
                          (standard, "secure_user_001")):
            client = WebSocketClient(cfg)
            try:
                assert await client.connect()
                assert await client.send_message(make_message("hi", cfg.api_key, "default"))
                assert await asyncio.wait_for(messages.get(), 5) == ("hi", user)
            finally:
                await client.stop()
        with pytest.raises(ValueError):
            create_ssl_client_config(url=f"wss://localhost:{port}/ws")
    finally:
        await server.stop()


def test_server_tls_without_files_fails_to_start() -> None:
    server = WebSocketServer(create_server_config(host="127.0.0.1", port=0, ssl_enabled=True))

    async def go() -> None:
        await server.start()

    with pytest.raises(ValueError, match="ssl_certfile"):
        asyncio.run(go())
    assert not server.is_running()
