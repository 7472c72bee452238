"""Command line: ``maim-message serve`` / ``python -m maim_message serve`` runs the hub.

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
from .errors import ServerStartError
from .hub.config import ENV_KEYS, HubConfigError, env_name, load_config

EXIT_OK = 0
EXIT_START_FAILED = 1
EXIT_BAD_CONFIG = 2


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
        epilog=f"Keys format (--keys, {ENV_KEYS}): key1=user1,key2=user2:qq|telegram "
               "(platforms after ':' restrict what the key may declare). "
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
                       help="API keys, replacing the file's: key1=user1,key2=user2")
    serve.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       type=str.upper, help="log level (default INFO)")

    sub.add_parser("keygen", help="print a new random API key")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "keygen":
        from .hub.auth import generate_key

        print(generate_key())
        return EXIT_OK
    if args.command != "serve":
        parser.print_help()
        return EXIT_BAD_CONFIG
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    from .hub.console import print_check, print_problems

    overrides: Dict[str, Any] = {
        "hub.host": args.host, "hub.port": args.port, "hub.path": args.path,
        "hub.log_level": args.log_level, "keys": args.keys,
    }
    try:
        config = load_config(args.config, overrides=overrides)
    except HubConfigError as exc:
        print_problems(exc.problems)
        return EXIT_BAD_CONFIG
    if args.check_config:
        print_check(config)
        return EXIT_OK
    _setup_logging(config.log_level)

    try:
        from .hub.console import print_summary
        from .hub.runner import serve
    except ImportError as exc:  # pragma: no cover - depends on the installation
        print(f"the hub needs its extra dependencies ({exc.name} is missing): "
              "pip install 'maim_message[hub]'", file=sys.stderr)
        return EXIT_START_FAILED

    try:
        return asyncio.run(serve(config, announce=print_summary))
    except (ServerStartError, OSError, ssl.SSLError) as exc:  # port in use, bad cert/key
        logging.getLogger("maim_message.hub").error("cannot start the hub: %s", exc)
        return EXIT_START_FAILED
    except KeyboardInterrupt:  # pragma: no cover - a signal before handlers were installed
        return 130


def _setup_logging(level: str) -> None:
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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
