"""The README's example runs and does what it says (on a free port)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, free_port


def test_readme_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = readme.splitlines()
    assert lines[3].startswith("pip install -e") and "maim_message serve" in lines[3]
    assert lines[4].startswith("bash scripts/test")
    code = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    assert len(code.strip().splitlines()) <= 25
    script = tmp_path / "example.py"
    script.write_text(code.replace("18041", str(free_port())), encoding="utf-8")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=30, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["server got hello from adapter", "client got hello"]
    assert "It prints `server got hello from adapter`, then `client got hello`" in readme
