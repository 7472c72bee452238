"""The hub's settings as plain data classes (what :mod:`.config` builds and validates)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from ..core.defaults import DEFAULT_LIMITS, DEFAULT_OUTBOX
from ..core.identity import fingerprint
from ..errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 18040
DEFAULT_PATH = "/ws"
ENV_PREFIX = "MAIM_HUB_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class HubConfigError(ConfigError):
    """One or more configuration problems; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid hub configuration:\n  " + "\n  ".join(self.problems))


# -- settings ---------------------------------------------------------------------------


def key_digest(key: str) -> bytes:
    """SHA-256 of a key: what the key table stores and what ``key_sha256`` holds (hex)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@dataclass
class KeyEntry:
    """One API key: the secret (or only its SHA-256), the user id it maps to, the
    platforms it may declare."""

    key: str = field(repr=False)  # "" when only the hash is configured
    user: str
    platforms: Tuple[str, ...] = ()  # empty: any platform
    source: str = ""
    forward_to: Optional[str] = None  # messages from this key go to this user
    key_sha256: Optional[str] = field(default=None, repr=False)  # hex, instead of ``key``

    @property
    def digest(self) -> bytes:
        return bytes.fromhex(self.key_sha256) if self.key_sha256 else key_digest(self.key)

    @property
    def label(self) -> str:
        """Safe to log or show: a fingerprint, never the key (the same for a hashed key)."""
        if self.key_sha256:
            return "key#" + self.key_sha256.lower()[:8]
        return fingerprint(self.key)

    def allows(self, platform: str) -> bool:
        return not self.platforms or platform in self.platforms


@dataclass
class TLSSettings:
    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    ca_certs: Optional[str] = None
    verify_client: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.certfile)


@dataclass
class LimitSettings:
    max_message_size: int = DEFAULT_LIMITS.max_message_size
    ping_interval: float = DEFAULT_LIMITS.ping_interval or 0.0  # 0 disables keepalive pings
    ping_timeout: float = DEFAULT_LIMITS.ping_timeout or 0.0
    handshake_timeout: float = DEFAULT_LIMITS.handshake_timeout
    close_timeout: float = DEFAULT_LIMITS.close_timeout
    max_write_buffer: int = DEFAULT_LIMITS.max_write_buffer
    send_buffer_high: int = DEFAULT_LIMITS.send_buffer_high
    slow_consumer_timeout: float = DEFAULT_LIMITS.slow_consumer_timeout
    idle_timeout: float = DEFAULT_LIMITS.idle_timeout or 0.0  # 0 = off
    rate_limit_per_second: float = 5000.0  # per connection; 0 = off
    rate_limit_burst: int = 100_000
    max_connections_per_key: int = 100  # 0 = off
    allowed_origins: Tuple[str, ...] = ()  # browser Origin allowlist; empty = no check
    shutdown_grace: float = 5.0


@dataclass
class OutboxSettings:
    backend: str = "memory"  # memory | sqlite | none (fire-and-forget)
    path: Optional[str] = None  # sqlite file
    max_per_pair: int = DEFAULT_OUTBOX.max_per_pair  # unacked messages per (user, platform)
    max_bytes: int = DEFAULT_OUTBOX.max_bytes  # all outboxes together
    ttl: float = DEFAULT_OUTBOX.ttl  # seconds an undelivered message is kept


@dataclass
class ClusterSettings:
    backend: str = "local"  # local | redis
    redis_url: Optional[str] = None
    channel_prefix: str = "maim_hub"
    frame_claims: bool = False  # cluster_frame_claims (docs/cluster.md)


@dataclass
class HttpSettings:
    dashboard: bool = True  # "/" and "/api/stats"
    metrics: bool = True  # "/metrics"


@dataclass
class AdminSettings:
    """Who may use the admin plane (``/api/*``, the live page's data) and ``/metrics``."""

    token: Optional[str] = field(default=None, repr=False)
    token_sha256: Optional[str] = field(default=None, repr=False)
    metrics_token: Optional[str] = field(default=None, repr=False)
    metrics_token_sha256: Optional[str] = field(default=None, repr=False)
    protect_metrics: bool = False  # True: /metrics needs the admin or the metrics token
    revoked_file: Optional[str] = None  # revoked keys kept here (SHA-256 a line)

    @property
    def configured(self) -> bool:
        return bool(self.token or self.token_sha256)

    @property
    def metrics_protected(self) -> bool:
        return self.protect_metrics or bool(self.metrics_token or self.metrics_token_sha256)


@dataclass
class HubConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    path: str = DEFAULT_PATH
    log_level: str = "INFO"
    log_format: str = "text"  # text | json (one object per line)
    status_interval: float = 60.0  # seconds between status log lines; 0 = off
    keys_file: Optional[str] = None  # more [[keys]] in their own file (reloaded on SIGHUP)
    keys: List[KeyEntry] = field(default_factory=list)
    tls: TLSSettings = field(default_factory=TLSSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    source: Optional[str] = None  # the config file, if any

    @property
    def url(self) -> str:
        scheme = "wss" if self.tls.enabled else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{self.path}"
