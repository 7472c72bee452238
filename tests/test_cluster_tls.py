"""Cluster nodes on a Redis that only speaks TLS (``rediss://``; real redis-server).

The command queue and the channel reader take over redis-py's connection after its
handshake (``redis_link.adopt``): over TLS that is an SSL transport, whose protocol is
swapped the same way. Messages between nodes, a broadcast, and a channel connection cut
and re-established over TLS all work as over plain TCP.
"""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, List
from urllib.parse import quote

import pytest

from .helpers_api import make_message
from .test_cluster import RedisServer
from .test_cluster_resubscribe import fanout_scene

trustme = pytest.importorskip("trustme", reason="trustme (a test extra) makes the certificates")

pytestmark = pytest.mark.timeout(60)


class TlsRedis(RedisServer):
    """A throwaway redis-server listening with TLS only (certificates from a test CA)."""

    def __init__(self, directory: Path) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        self.ca_path = directory / "ca.pem"
        self.cert_path, self.key_path = directory / "cert.pem", directory / "key.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        cert.private_key_pem.write_to_path(str(self.key_path))
        cert.cert_chain_pems[0].write_to_path(str(self.cert_path))
        super().__init__()

    def url_for(self, port: int) -> str:
        return f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={quote(str(self.ca_path))}"

    def listen_args(self, port: int) -> List[str]:
        return ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(self.cert_path),
                "--tls-key-file", str(self.key_path), "--tls-ca-cert-file", str(self.ca_path),
                "--tls-auth-clients", "no"]


@pytest.fixture
async def tls_redis(tmp_path: Path) -> AsyncIterator[TlsRedis]:
    server = TlsRedis(tmp_path)
    try:
        await server.ready()
        yield server
    finally:
        server.stop()


async def test_nodes_relay_and_recover_over_a_tls_redis(tls_redis: TlsRedis) -> None:
    async with fanout_scene(tls_redis.url) as scene:
        await scene.sender.send_message(make_message("over tls", "u1", "qq"))
        await scene.receiver.wait(lambda: "over tls" in scene.receiver.texts)
        await scene.broadcast("broadcast")
        before = scene.cluster.stats()["resyncs"]
        await scene.cut_channels()  # reconnected over TLS: the pair re-read, the log read
        await scene.sender.send_message(make_message("while away", "u1", "qq"))
        await scene.broadcast("broadcast while away")
        await scene.receiver.wait(lambda: "while away" in scene.receiver.texts)
        assert scene.cluster.stats()["resyncs"] > before
        await scene.sender.send_message(make_message("after", "u1", "qq"))
        await scene.receiver.wait(lambda: "after" in scene.receiver.texts)
        assert sorted(scene.receiver.texts) == sorted([
            "over tls", "broadcast", "while away", "broadcast while away", "after"])
