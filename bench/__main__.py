"""``python -m bench``: run every scenario against every target, write docs/benchmarks.md."""

import sys

from .run import main

sys.exit(main())
