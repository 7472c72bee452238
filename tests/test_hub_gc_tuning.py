"""The hub's collector settings: applied by the hub's runner to its own process, never by
the library to an application that imports it."""

from __future__ import annotations

import os
import subprocess
import sys

from maim_message.hub import gc_tuning

PROBE = """
import gc, sys
before = gc.get_threshold()
import maim_message, maim_message.server, maim_message.hub.runner  # importing changes nothing
assert gc.get_threshold() == before and gc.get_freeze_count() == 0, gc.get_threshold()
from maim_message.hub.gc_tuning import tune_for_serving
tune_for_serving()
print(gc.get_threshold(), gc.get_freeze_count() > 0)
"""


def test_tuning_spaces_collections_and_freezes_start_up_objects_only_when_called() -> None:
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    expected = (gc_tuning.YOUNG, gc_tuning.MIDDLE, gc_tuning.OLD)
    assert out == f"{expected} True"
    assert gc_tuning.YOUNG > 700  # CPython's default young threshold
