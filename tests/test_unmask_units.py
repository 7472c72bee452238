"""The frame reader hands the unmasker views into its buffer: both unmaskers (the C helper
and the pure-Python fallback) must give the same bytes for views as for bytes."""

from __future__ import annotations

import os

from maim_message.transport.frames import _pure_unmask, unmask


def test_unmaskers_agree_on_bytes_and_views() -> None:
    for n in (0, 1, 3, 4, 5, 125, 126, 600, 65536, 70001):
        data, mask = os.urandom(n), os.urandom(4)
        buf = bytearray(b"hd" + mask + data)
        view = memoryview(buf)
        want = unmask(data, mask)
        assert len(want) == n
        assert _pure_unmask(data, mask) == want
        assert unmask(view[6:], view[2:6]) == want
        assert _pure_unmask(view[6:], view[2:6]) == want
        assert _pure_unmask(want, mask) == data  # masking twice gives the data back
        view.release()
