"""Command line: ``maim-message serve`` / ``python -m maim_message serve`` runs the hub;
``send`` / ``tail`` / ``ping`` are debugging tools for adapter authors; ``keygen`` makes keys.

This is the application layer: it may configure logging and print (the library never does).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys
from typing import Any, Dict, List, Optional, Sequence

from . import __version__
from .core.redact import Redactor
from .errors import ConfigError, ServerStartError
from .hub.config import ENV_KEYS, HubConfig, HubConfigError, env_name, load_config

EXIT_OK = 0
EXIT_START_FAILED = 1
EXIT_BAD_CONFIG = 2
LOG_FORMATS = ("text", "json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maim-message",
        description="maim_message: WebSocket message hub for chat bots.",
    )
    parser.add_argument("--version", action="version", version=f"maim_message {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command")

    serve = sub.add_parser(
        "serve", help="run the hub",
        description="Run the hub. Settings: embedded defaults < --config file < MAIM_HUB_* "
                    "environment variables < command-line options.",
        epilog=f"Keys format (--keys, {ENV_KEYS}): comma-separated "
               "key=user[>forward_to][:platform1|platform2], e.g. "
               "K1=napcat>maibot:qq,K2=maibot ('>forward_to' sends that key's messages to "
               "that user; platforms after ':' restrict what the key may declare). "
               f"Other variables: {env_name('hub', 'host')}, {env_name('hub', 'port')}, "
               f"{env_name('tls', 'certfile')}, {env_name('outbox', 'backend')}, ... "
               "(MAIM_HUB_<SECTION>_<KEY>; see docs/hub.md).",
    )
    serve.add_argument("-c", "--config", metavar="FILE", help="TOML config file")
    serve.add_argument("--check-config", action="store_true",
                       help="validate the configuration, print a summary and exit "
                            "(0 valid, 2 invalid)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 18040; 0 = any)")
    serve.add_argument("--path", help="WebSocket path (default /ws)")
    serve.add_argument("--keys", metavar="SPEC",
                       help="API keys, replacing the file's: "
                            "key=user[>forward_to][:platform1|platform2],...")
    serve.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       type=str.upper, help="log level (default INFO)")
    serve.add_argument("--log-format", choices=LOG_FORMATS, type=str.lower,
                       help="text (default) or json: one JSON object per line (also "
                            f"{env_name('hub', 'log_format')} or hub.log_format)")

    keygen = sub.add_parser("keygen", help="print a new random API key")
    keygen.add_argument("--hash", action="store_true",
                        help="also print its SHA-256, to store as key_sha256 in the config")
    _client_commands(sub)
    return parser


def _client_commands(sub: Any) -> None:
    def common(p: argparse.ArgumentParser, key_required: bool = True) -> None:
        p.add_argument("url", help="the server's WebSocket URL, e.g. ws://127.0.0.1:18040/ws")
        p.add_argument("--key", "-k", required=key_required, default="",
                       help="API key" + ("" if key_required else " (without: no auth check)"))
        p.add_argument("--platform", "-p", required=key_required, default="default",
                       help="the platform this client declares")
        p.add_argument("--ca-certs", metavar="FILE", help="CA bundle for a wss:// server")
        p.add_argument("--insecure", action="store_true",
                       help="wss:// without certificate verification (testing only)")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")

    send = sub.add_parser("send", help="send one text message and wait for its ack",
                          description="Exit codes: 0 acked, 1 refused or unreachable, "
                                      "3 not acknowledged in time.")
    common(send)
    send.add_argument("text", help="the message text")
    send.add_argument("--to-key", help="the message_dim api_key (default: --key): the "
                                       "receiver a hub routes to")
    send.add_argument("--user-id", default="", help="sender_info.user_info.user_id")

    tail = sub.add_parser("tail", help="print every message and custom message received")
    common(tail)
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument("--count", type=int, default=0, help="exit after N messages")
    tail.add_argument("--duration", type=float, default=0.0, help="exit after S seconds")

    ping = sub.add_parser("ping", help="check handshake and auth, with timings")
    common(ping, key_required=False)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "keygen":
        from .hub.auth import generate_key
        from .hub.settings import key_digest

        key = generate_key()
        print(key)
        if args.hash:
            print(f'key_sha256 = "{key_digest(key).hex()}"')
        return EXIT_OK
    if args.command in ("send", "tail", "ping"):
        return _client_tool(args)
    if args.command != "serve":
        parser.print_help()
        return EXIT_BAD_CONFIG
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    from .hub.console import print_check, print_problems

    overrides: Dict[str, Any] = {
        "hub.host": args.host, "hub.port": args.port, "hub.path": args.path,
        "hub.log_level": args.log_level, "hub.log_format": args.log_format, "keys": args.keys,
    }

    def loader() -> HubConfig:
        return load_config(args.config, overrides=overrides)

    try:
        config = loader()
    except HubConfigError as exc:
        print_problems(exc.problems)
        return EXIT_BAD_CONFIG
    if args.check_config:
        print_check(config)
        return EXIT_OK
    redactor = _setup_logging(config.log_level, config.log_format)

    try:
        from .hub.console import print_summary
        from .hub.runner import serve
    except ImportError as exc:  # pragma: no cover - depends on the installation
        print(f"the hub needs its extra dependencies ({exc.name} is missing): "
              "pip install 'maim_message[hub]'", file=sys.stderr)
        return EXIT_START_FAILED

    def on_reload(hub: Any, result: Dict[str, Any]) -> None:
        logging.getLogger().setLevel(hub.config.log_level)
        for entry in hub.keys.entries:
            redactor.add(entry.key)

    def announce(hub: Any) -> None:
        for secret in (hub.generated_key, hub.generated_admin_token, config.admin.token,
                       config.admin.metrics_token, *(e.key for e in hub.keys.entries)):
            redactor.add(secret)
        print_summary(hub)

    try:
        return asyncio.run(serve(config, announce=announce, loader=loader, on_reload=on_reload))
    except (ServerStartError, ConfigError, OSError, ssl.SSLError) as exc:  # port in use,
        # bad cert/key, what only starting finds (a backend's library not installed)
        logging.getLogger("maim_message.hub").error("cannot start the hub: %s", exc)
        return EXIT_START_FAILED
    except KeyboardInterrupt:  # pragma: no cover - a signal before handlers were installed
        return 130


def _client_tool(args: argparse.Namespace) -> int:
    from .hub import client_tools

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    tls = {"ca_certs": args.ca_certs, "insecure": args.insecure}
    key: str = args.key or ""
    streams = {"out": sys.stdout, "err": sys.stderr}
    try:
        if args.command == "send":
            return asyncio.run(client_tools.send(
                args.url, key, args.platform, args.text, to_key=args.to_key,
                user_id=args.user_id, timeout=args.timeout, **streams, **tls))
        if args.command == "tail":
            return asyncio.run(client_tools.tail(
                args.url, key, args.platform, as_json=args.json, count=args.count,
                duration=args.duration, **streams, **tls))
        return asyncio.run(client_tools.ping(args.url, key or None, args.platform,
                                             timeout=args.timeout, **streams, **tls))
    except KeyboardInterrupt:
        return 130


def _setup_logging(level: str, log_format: str = "text") -> Redactor:
    """Handlers for the hub process; returns the redactor JSON lines go through."""
    redactor = Redactor()
    if log_format == "json":
        from .hub.jsonlog import JsonFormatter

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter(redactor))
        logging.basicConfig(level=level, handlers=[handler], force=True)
        return redactor
    handlers: List[logging.Handler] = []
    fmt = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    if sys.stderr.isatty():
        try:
            from rich.logging import RichHandler

            handlers.append(RichHandler(show_path=False, rich_tracebacks=True))
            fmt = "%(name)s: %(message)s"
        except ImportError:  # pragma: no cover
            pass
    if not handlers:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=level, format=fmt, handlers=handlers, force=True)
    return redactor


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
