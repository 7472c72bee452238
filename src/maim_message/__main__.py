"""``python -m maim_message serve``: run the hub (see :mod:`maim_message.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
