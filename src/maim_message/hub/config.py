"""Hub configuration: embedded defaults, a TOML file, environment variables, command line.

Precedence (later wins): defaults < file < environment (``MAIM_HUB_*``) < command line.
Every problem is collected and reported together, each naming where the value came from
(``hub.toml:7``, ``env MAIM_HUB_PORT``, ``--port``) and the dotted key (``hub.port``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..core.redact import safe_url
from .key_config import check_keys, is_sha256_hex, keys_from_spec, keys_from_tables
from .key_config import parse_keys_spec as parse_keys_spec
from .settings import (
    DEFAULT_HOST,
    DEFAULT_PATH,
    DEFAULT_PORT,
    ENV_PREFIX,
    LOG_LEVELS,
    AdminSettings,
    ClusterSettings,
    HttpSettings,
    HubConfig,
    HubConfigError,
    KeyEntry,
    LimitSettings,
    OutboxSettings,
    TLSSettings,
)
from .toml_source import Origins, line_index, read_file

__all__ = [
    "DEFAULT_HOST", "DEFAULT_PATH", "DEFAULT_PORT", "ENV_KEYS", "ENV_PREFIX", "LOG_LEVELS",
    "AdminSettings", "ClusterSettings", "HttpSettings", "HubConfig", "HubConfigError", "KeyEntry",
    "LimitSettings", "OutboxSettings", "TLSSettings", "env_name", "line_index",
    "load_config", "parse_keys_spec",
]


# -- value kinds ---------------------------------------------------------------------------

Parser = Callable[[Any, bool], Any]  # (value, came_from_a_string) -> value; ValueError


def _str(value: Any, from_text: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {_show(value)})")
    return value


def _nonempty(value: Any, from_text: bool) -> str:
    text = _str(value, from_text)
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _opt_path(value: Any, from_text: bool) -> Optional[str]:
    text = _str(value, from_text)
    return text or None


def _bool(value: Any, from_text: bool) -> bool:
    if from_text and isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"must be true or false (got {_show(value)})")
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false (got {_show(value)})")
    return value


def _int(lo: int, hi: Optional[int] = None) -> Parser:
    def parse(value: Any, from_text: bool) -> int:
        if from_text and isinstance(value, str):
            try:
                value = int(value.strip().replace("_", ""))
            except ValueError:
                raise ValueError(f"must be an integer (got {_show(value)})") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer (got {_show(value)})")
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise ValueError(f"must be {bound} (got {value})")
        return value

    return parse


def _float(lo: float, *, strict: bool = False) -> Parser:
    def parse(value: Any, from_text: bool) -> float:
        if from_text and isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"must be a number (got {_show(value)})") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number (got {_show(value)})")
        if value < lo or (strict and value == lo):
            raise ValueError(f"must be {'>' if strict else '>='} {lo:g} (got {value})")
        return float(value)

    return parse


def _choice(*options: str) -> Parser:
    def parse(value: Any, from_text: bool) -> str:
        text = _str(value, from_text).strip().lower()
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)} (got {_show(value)})")
        return text

    return parse


def _str_list(value: Any, from_text: bool) -> Tuple[str, ...]:
    if from_text and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"must be a list of strings (got {_show(value)})")
    return tuple(value)


def _level(value: Any, from_text: bool) -> str:
    text = _str(value, from_text).strip().upper()
    if text not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)} (got {_show(value)})")
    return text


def _ws_path(value: Any, from_text: bool) -> str:
    text = _str(value, from_text)
    if not text.startswith("/") or any(c in text for c in "?# "):
        raise ValueError(f"must start with '/' and have no query or spaces (got {_show(value)})")
    if text in RESERVED_PATHS or text.startswith(RESERVED_PREFIXES):
        raise ValueError(f"{text} is used by the hub's HTTP endpoints; pick another path")
    return text


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f'"{value}"'


RESERVED_PATHS = ("/", "/healthz", "/readyz", "/metrics", "/api/stats")
RESERVED_PREFIXES = ("/api/", "/static/")


def _secret(value: Any, from_text: bool) -> Optional[str]:
    text = _str(value, from_text).strip()
    if text and len(text) < 16:
        raise ValueError("must be at least 16 characters (python -m maim_message keygen)")
    return text or None


def _sha256(value: Any, from_text: bool) -> Optional[str]:
    text = _str(value, from_text).strip()
    if text and not is_sha256_hex(text):
        raise ValueError("must be 64 hex digits (python -m maim_message keygen --hash)")
    return text.lower() or None

# section -> field -> parser. "hub" fields live on HubConfig itself.
SCHEMA: Dict[str, Dict[str, Parser]] = {
    "hub": {
        "host": _nonempty, "port": _int(0, 65535), "path": _ws_path, "log_level": _level,
        "status_interval": _float(0.0), "keys_file": _opt_path,
        "log_format": _choice("text", "json"),
    },
    "tls": {
        "certfile": _opt_path, "keyfile": _opt_path, "ca_certs": _opt_path,
        "verify_client": _bool,
    },
    "limits": {
        "max_message_size": _int(1024), "ping_interval": _float(0.0),
        "ping_timeout": _float(0.0), "handshake_timeout": _float(0.0, strict=True),
        "close_timeout": _float(0.0, strict=True), "max_write_buffer": _int(65536),
        "send_buffer_high": _int(1024), "slow_consumer_timeout": _float(0.0, strict=True),
        "idle_timeout": _float(0.0), "rate_limit_per_second": _float(0.0),
        "rate_limit_burst": _int(1), "max_connections_per_key": _int(0),
        "allowed_origins": _str_list, "shutdown_grace": _float(0.0),
    },
    "outbox": {
        "backend": _choice("memory", "sqlite", "none"), "path": _opt_path,
        "max_per_pair": _int(1), "max_bytes": _int(1024), "ttl": _float(0.0, strict=True),
    },
    "cluster": {
        "backend": _choice("local", "redis"), "redis_url": _opt_path,
        "channel_prefix": _nonempty, "frame_claims": _bool,
    },
    "http": {"dashboard": _bool, "metrics": _bool},
    "admin": {
        "token": _secret, "token_sha256": _sha256, "metrics_token": _secret,
        "metrics_token_sha256": _sha256, "protect_metrics": _bool,
        "revoked_file": _opt_path,
    },
}


def env_name(section: str, name: str) -> str:
    """The environment variable that overrides ``section.name``."""
    if section == "hub":
        return ENV_PREFIX + name.upper()
    return f"{ENV_PREFIX}{section.upper()}_{name.upper()}"


ENV_KEYS = ENV_PREFIX + "KEYS"


# -- loading --------------------------------------------------------------------------------


def load_config(
    path: Optional[str] = None,
    *,
    env: Optional[Mapping[str, str]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    check_files: bool = True,
) -> HubConfig:
    """Build the hub configuration; raises :class:`HubConfigError` listing every problem.

    ``overrides``: command-line values as ``{"hub.port": 18041, "keys": "k=u"}`` (each named
    ``--<field>`` in messages). ``env`` defaults to ``os.environ``.
    """
    env = os.environ if env is None else env
    problems: List[str] = []
    data: Dict[str, Any] = {}
    origins = Origins(None, {})
    if path is not None:
        data, origins = read_file(path, problems)
        if problems:
            raise HubConfigError(problems)

    values: Dict[str, Dict[str, Any]] = {section: {} for section in SCHEMA}
    from_text: Dict[str, bool] = {}
    # File values, with unknown keys reported.
    for name, value in data.items():
        if name == "keys":
            continue
        if name not in SCHEMA:
            problems.append(f"{origins.where(name)}: unknown section or key '{name}' "
                            f"(known: {', '.join([*SCHEMA, 'keys'])})")
            continue
        if not isinstance(value, dict):
            problems.append(f"{origins.where(name)}: '{name}' must be a table ([{name}])")
            continue
        for key, item in value.items():
            dotted = f"{name}.{key}"
            if key not in SCHEMA[name]:
                problems.append(f"{origins.where(dotted)}: unknown key '{dotted}' "
                                f"(known in [{name}]: {', '.join(SCHEMA[name])})")
                continue
            values[name][key] = item
    # Environment, then command line.
    for section, fields_ in SCHEMA.items():
        for key in fields_:
            var = env_name(section, key)
            if var in env:
                values[section][key] = env[var]
                from_text[f"{section}.{key}"] = True
                origins.override[f"{section}.{key}"] = f"env {var}"
    keys_source: Tuple[str, Any] = ("file", data.get("keys"))
    if ENV_KEYS in env:
        keys_source = (f"env {ENV_KEYS}", env[ENV_KEYS])
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        if dotted == "keys":
            keys_source = ("--keys", value)
            continue
        section, _, key = dotted.partition(".")
        values[section][key] = value
        from_text[dotted] = isinstance(value, str)
        origins.override[dotted] = f"--{key.replace('_', '-')}"

    parsed: Dict[str, Dict[str, Any]] = {section: {} for section in SCHEMA}
    for section, items in values.items():
        for key, value in items.items():
            dotted = f"{section}.{key}"
            try:
                parsed[section][key] = SCHEMA[section][key](value, from_text.get(dotted, False))
            except ValueError as exc:
                problems.append(f"{origins.where(dotted)}: {dotted}: {exc}")

    config = HubConfig(
        tls=TLSSettings(**parsed["tls"]),
        limits=LimitSettings(**parsed["limits"]),
        outbox=OutboxSettings(**parsed["outbox"]),
        cluster=ClusterSettings(**parsed["cluster"]),
        http=HttpSettings(**parsed["http"]),
        admin=AdminSettings(**parsed["admin"]),
        source=path,
    )
    for key, value in parsed["hub"].items():
        setattr(config, key, value)
    if config.keys_file and path is not None:  # relative to the config file
        config.keys_file = str(Path(path).parent / Path(config.keys_file).expanduser())
    config.keys = _load_keys(keys_source, origins, env, problems, config.keys_file)
    _check(config, origins, problems, check_files)
    if problems:
        raise HubConfigError(problems)
    return config


def _load_keys(
    source: Tuple[str, Any], origins: Origins, env: Mapping[str, str], problems: List[str],
    keys_file: Optional[str],
) -> List[KeyEntry]:
    """The file's ``[[keys]]`` plus the keys file's, or the env/command-line spec alone."""
    where, raw = source
    if isinstance(raw, str) and where != "file":  # env/command line: replaces the files' keys
        entries = keys_from_spec(where, raw, problems)
    else:
        entries = [] if raw is None else keys_from_tables(raw, origins, env, problems)
        if keys_file:
            entries += _keys_file(keys_file, env, problems)
    check_keys(entries, problems)
    return entries


def _keys_file(path: str, env: Mapping[str, str], problems: List[str]) -> List[KeyEntry]:
    data, origins = read_file(path, problems)
    if not data:
        return []
    for name in data:
        if name != "keys":
            problems.append(f"{origins.where(name)}: unknown key '{name}' in a keys file "
                            "(it holds only [[keys]] tables)")
    return keys_from_tables(data.get("keys", []), origins, env, problems)


def _check(config: HubConfig, origins: Origins, problems: List[str], check_files: bool) -> None:
    tls = config.tls
    if bool(tls.certfile) != bool(tls.keyfile):
        missing = "tls.keyfile" if tls.certfile else "tls.certfile"
        problems.append(f"{origins.where(missing)}: {missing}: "
                        "TLS needs both tls.certfile and tls.keyfile")
    if tls.verify_client and not tls.ca_certs:
        problems.append(f"{origins.where('tls.verify_client')}: tls.verify_client: needs "
                        "tls.ca_certs (the CA that signs client certificates)")
    if check_files:
        for name in ("certfile", "keyfile", "ca_certs"):
            value = getattr(tls, name)
            if value and not Path(value).is_file():
                problems.append(f"{origins.where('tls.' + name)}: tls.{name}: file not found: "
                                f"{value}")
    if config.outbox.backend == "sqlite":
        if not config.outbox.path:
            problems.append(f"{origins.where('outbox.backend')}: outbox.path: the sqlite "
                            "outbox needs a file path (outbox.path = \"hub-outbox.sqlite3\")")
        elif check_files:
            parent = Path(config.outbox.path).expanduser().resolve().parent
            if not parent.is_dir():
                problems.append(f"{origins.where('outbox.path')}: outbox.path: directory "
                                f"does not exist: {parent}")
    if config.cluster.backend == "redis":
        url = config.cluster.redis_url
        if not url:
            problems.append(f"{origins.where('cluster.backend')}: cluster.redis_url: the "
                            "redis cluster backend needs redis_url (redis://host:6379/0)")
        have_redis = importlib.util.find_spec("redis") is not None
        where = f"{origins.where('cluster.redis_url')}: cluster.redis_url"
        for n, one in enumerate((url or "").split(",") if url else []):  # commas: shards
            one = one.strip()
            if not one:
                problems.append(f"{where}: shard {n + 1} is empty (a stray comma?)")
            elif not one.startswith(("redis://", "rediss://", "unix://")):
                problems.append(f"{where}: must start with redis://, rediss:// or unix:// "
                                f"(got \"{safe_url(one)}\")")
            elif have_redis:
                from ..backends.redis_shards import url_problem
                problem = url_problem(one)
                if problem:
                    problems.append(f"{where}: {safe_url(one)}: {problem}")
        if not have_redis:
            problems.append(f"{origins.where('cluster.backend')}: cluster.backend: the redis "
                            "backend needs redis-py: pip install 'maim_message[cluster]'")
        # each node would generate its own: a client's key, an operator's token, would work
        # on one node and be refused by the others
        if not config.keys:
            problems.append(f"{origins.where('cluster.backend')}: keys: a cluster needs its "
                            "API keys configured ([[keys]], keys_file or MAIM_HUB_KEYS): each "
                            "node would generate a different one")
        if not config.admin.configured:
            problems.append(f"{origins.where('cluster.backend')}: admin.token: a cluster "
                            "needs its admin token configured (admin.token, "
                            "admin.token_sha256 or MAIM_HUB_ADMIN_TOKEN): each node would "
                            "generate a different one")
    admin = config.admin
    for name in ("token", "metrics_token"):
        if getattr(admin, name) and getattr(admin, name + "_sha256"):
            problems.append(f"{origins.where('admin.' + name)}: admin.{name}: give "
                            f"admin.{name} or admin.{name}_sha256, not both")
    limits = config.limits
    if limits.ping_interval and limits.ping_timeout == 0:
        problems.append(f"{origins.where('limits.ping_timeout')}: limits.ping_timeout: must "
                        "be > 0 while limits.ping_interval is set")
